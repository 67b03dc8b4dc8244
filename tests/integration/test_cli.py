"""The `product-shop` command, called in-process: demo tokens and database migrations."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from product_shop.access.actor import Role
from product_shop.access.tokens import TokenVerifier
from product_shop.cli import main
from product_shop.core.errors import InvalidToken
from product_shop.db.migrate import head_revision
from product_shop.demo.data import USERS
from product_shop.demo.runtime import demo_settings


@pytest.fixture(autouse=True)
def _no_product_shop_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test alone, not from the caller's PRODUCT_SHOP_* variables."""
    for name in list(os.environ):
        if name.startswith("PRODUCT_SHOP_"):
            monkeypatch.delenv(name)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    out: str = capsys.readouterr().out
    return out


def _demo_users(
    capsys: pytest.CaptureFixture[str], data_dir: Path, *flags: str
) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = json.loads(
        _run(capsys, "demo-users", "--json", *flags, "--data-dir", str(data_dir))
    )
    return users


def _db_current(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    lines = _run(capsys, "db", "current").strip().splitlines()
    report: dict[str, Any] = json.loads(lines[-1])
    return report


# ---- demo-users ------------------------------------------------------------------------------


def test_demo_users_lists_every_seeded_user_with_their_practice(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    listed = _demo_users(capsys, tmp_path)

    assert [user["handle"] for user in listed] == [user.handle for user in USERS]
    for user, entry in zip(USERS, listed, strict=True):
        assert set(entry) == {
            "handle",
            "name",
            "role",
            "practice_id",
            "practice_name",
            "patient_id",
            "token",
        }
        assert entry["name"] == user.name
        assert entry["role"] == user.role
        if user.practice is None:
            assert entry["practice_id"] is None
            assert entry["practice_name"] is None
        else:
            assert entry["practice_id"] == str(user.practice.practice_id)
            assert entry["practice_name"] == user.practice.name


def test_every_demo_token_verifies_against_the_data_dirs_key_as_its_user(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    listed = _demo_users(capsys, tmp_path)
    verifier = TokenVerifier.from_settings(demo_settings(tmp_path))

    for user, entry in zip(USERS, listed, strict=True):
        actor = verifier.verify(entry["token"])
        assert actor.actor_id == user.subject, user.handle
        assert actor.role is Role(user.role), user.handle
        assert actor.name == user.name, user.handle
        expected_practice = user.practice.practice_id if user.practice else None
        assert actor.practice_id == expected_practice, user.handle


def test_demo_users_tokens_carry_mfa_only_when_asked_with_the_mfa_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plain = _demo_users(capsys, tmp_path)
    with_mfa = _demo_users(capsys, tmp_path, "--mfa")
    verifier = TokenVerifier.from_settings(demo_settings(tmp_path))

    assert [verifier.verify(entry["token"]).mfa for entry in plain] == [False] * len(USERS)
    assert [verifier.verify(entry["token"]).mfa for entry in with_mfa] == [True] * len(USERS)


def test_demo_patients_have_a_patient_id_equal_to_their_token_subject_and_others_none(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    listed = _demo_users(capsys, tmp_path)
    verifier = TokenVerifier.from_settings(demo_settings(tmp_path))

    patients = [entry for entry in listed if entry["role"] == "patient"]
    assert len(patients) == 10
    for entry in patients:
        actor = verifier.verify(entry["token"])
        assert entry["patient_id"] == actor.actor_id
        assert actor.patient_id == uuid.UUID(entry["patient_id"])
    assert [entry["patient_id"] for entry in listed if entry["role"] != "patient"] == [None] * (
        len(USERS) - 10
    )


def test_demo_tokens_from_one_data_dir_are_refused_with_another_data_dirs_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    token = _demo_users(capsys, tmp_path / "a")[0]["token"]
    _demo_users(capsys, tmp_path / "b")
    verifier_b = TokenVerifier.from_settings(demo_settings(tmp_path / "b"))

    with pytest.raises(InvalidToken, match="not valid"):
        verifier_b.verify(token)


# ---- db upgrade / db current -----------------------------------------------------------------


def test_db_current_reports_no_revision_for_an_unmigrated_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", f"sqlite:///{tmp_path / 'x.sqlite3'}")

    report = _db_current(capsys)

    assert report == {"current": None, "head": head_revision()}


def test_db_upgrade_migrates_the_configured_database_to_the_head_db_current_reports(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", f"sqlite:///{tmp_path / 'x.sqlite3'}")

    upgraded = _run(capsys, "db", "upgrade")
    report = _db_current(capsys)

    assert upgraded.strip().splitlines()[-1] == "migrated to head"
    assert head_revision() is not None
    assert report == {"current": head_revision(), "head": head_revision()}


def test_db_upgrade_creates_the_sqlite_files_missing_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "not" / "yet" / "x.sqlite3"
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", f"sqlite:///{path}")

    _run(capsys, "db", "upgrade")

    assert path.is_file()
    assert _db_current(capsys)["current"] == head_revision()
