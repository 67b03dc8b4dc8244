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
from product_shop.demo.runtime import default_data_dir, demo_settings, prepare

PROJECT = Path(__file__).resolve().parents[2]


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


def _prepared(data_dir: Path) -> Path:
    """A demo data directory as `product-shop demo` leaves it: key, migrated and seeded."""
    prepare(data_dir).close()
    return data_dir


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    return _prepared(tmp_path / "demo")


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
    capsys: pytest.CaptureFixture[str], demo_dir: Path
) -> None:
    listed = _demo_users(capsys, demo_dir)

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
    capsys: pytest.CaptureFixture[str], demo_dir: Path
) -> None:
    listed = _demo_users(capsys, demo_dir)
    verifier = TokenVerifier.from_settings(demo_settings(demo_dir))

    for user, entry in zip(USERS, listed, strict=True):
        actor = verifier.verify(entry["token"])
        assert actor.actor_id == user.subject, user.handle
        assert actor.role is Role(user.role), user.handle
        assert actor.name == user.name, user.handle
        expected_practice = user.practice.practice_id if user.practice else None
        assert actor.practice_id == expected_practice, user.handle


def test_demo_users_tokens_carry_mfa_only_when_asked_with_the_mfa_flag(
    capsys: pytest.CaptureFixture[str], demo_dir: Path
) -> None:
    plain = _demo_users(capsys, demo_dir)
    with_mfa = _demo_users(capsys, demo_dir, "--mfa")
    verifier = TokenVerifier.from_settings(demo_settings(demo_dir))

    assert [verifier.verify(entry["token"]).mfa for entry in plain] == [False] * len(USERS)
    assert [verifier.verify(entry["token"]).mfa for entry in with_mfa] == [True] * len(USERS)


def test_demo_patients_have_a_patient_id_equal_to_their_token_subject_and_others_none(
    capsys: pytest.CaptureFixture[str], demo_dir: Path
) -> None:
    listed = _demo_users(capsys, demo_dir)
    verifier = TokenVerifier.from_settings(demo_settings(demo_dir))

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
    token = _demo_users(capsys, _prepared(tmp_path / "a"))[0]["token"]
    _demo_users(capsys, _prepared(tmp_path / "b"))
    verifier_b = TokenVerifier.from_settings(demo_settings(tmp_path / "b"))

    with pytest.raises(InvalidToken, match="not valid"):
        verifier_b.verify(token)


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing a script could mistake for tokens
    err: str = captured.err
    return err


def test_demo_users_run_from_another_directory_uses_the_demos_directory_not_a_new_key(
    capsys: pytest.CaptureFixture[str],
    demo_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("PRODUCT_SHOP_DATA_DIR", str(demo_dir))

    listed = json.loads(_run(capsys, "demo-users", "--json"))

    verifier = TokenVerifier.from_settings(demo_settings(demo_dir))
    assert verifier.verify(listed[0]["token"]).actor_id == USERS[0].subject
    assert list(elsewhere.iterdir()) == []  # no var/ (and no key) made where it was run


def test_without_a_data_dir_demo_and_demo_users_both_use_the_projects_var_from_anywhere(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` serves from the project's var/; so do `demo` and `demo-users` without
    --data-dir, wherever they are run from, and demo-users never makes a key there."""
    monkeypatch.chdir(tmp_path)
    key = PROJECT / "var" / "demo-idp" / "signing-key.pem"
    had_key = key.is_file()

    assert default_data_dir() == PROJECT / "var"
    makefile = (PROJECT / "Makefile").read_text().splitlines()
    make_demo = next(line for line in makefile if "product-shop demo " in line)
    # make runs it in PROJECT: the same var/, whether it names it or leaves the default.
    assert "--data-dir" not in make_demo or "--data-dir var" in make_demo
    assert main(["demo-users", "--json"]) in (0, 1)  # 1 when no demo was ever started here

    assert key.is_file() == had_key
    assert list(tmp_path.iterdir()) == []


def test_demo_users_on_a_directory_without_a_demo_fails_clearly_and_makes_no_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "no-demo-here"

    message = _refused(capsys, "demo-users", "--json", "--data-dir", str(empty))

    assert f"no demo in {empty}" in message
    assert "no demo identity key" in message
    assert "no demo database" in message
    assert "product-shop demo --data-dir" in message
    assert not empty.exists()


def test_demo_users_refuses_a_directory_with_a_key_but_no_demo_database(
    capsys: pytest.CaptureFixture[str], demo_dir: Path, tmp_path: Path
) -> None:
    for name in ("product_shop.sqlite3", "product_shop.sqlite3-wal", "product_shop.sqlite3-shm"):
        (demo_dir / name).unlink(missing_ok=True)

    message = _refused(capsys, "demo-users", "--json", "--data-dir", str(demo_dir))

    assert "no demo database" in message
    assert "no demo identity key" not in message


def test_a_relative_data_dir_names_the_directory_under_the_current_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _prepared(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)

    listed = _demo_users(capsys, Path("mine"))

    verifier = TokenVerifier.from_settings(demo_settings(tmp_path / "mine"))
    assert verifier.verify(listed[0]["token"]).actor_id == USERS[0].subject


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


# ---- refunds settle ----------------------------------------------------------------------------


def test_refunds_settle_reads_the_configured_database_and_reports_what_it_settled(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key_pair: Any,
) -> None:
    # given a migrated database with no refund left pending
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", f"sqlite:///{tmp_path / 'x.sqlite3'}")
    monkeypatch.setenv("PRODUCT_SHOP_JWT_PUBLIC_KEY", key_pair.public_pem)
    _run(capsys, "db", "upgrade")

    # when the operator settles pending refunds, then nothing needed settling
    assert _run(capsys, "refunds", "settle").strip().splitlines()[-1] == "settled 0 refunds"


# ---- simulate suppliers ----------------------------------------------------------------------


def test_simulate_suppliers_serves_the_network_with_the_given_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastapi import FastAPI

    from product_shop.core.signing import new_secret

    served: dict[str, Any] = {}

    def run(app: FastAPI, **options: Any) -> None:  # instead of serving for ever
        served.update(app=app, **options)

    monkeypatch.setattr("product_shop.cli_simulators.uvicorn.run", run)
    secret = new_secret()
    argv = ["simulate", "suppliers", "--port", "9123", "--webhook-secret", secret]
    argv += ["--callback-url", "http://127.0.0.1:8000/v1/webhooks/suppliers"]
    argv += ["--api-key", "k-1", "--dispatch-after", "1", "--deliver-after", "5"]

    assert main(argv) == 0

    assert (served["host"], served["port"]) == ("127.0.0.1", 9123)
    config = served["app"].state.sim.config
    assert (config.api_key, config.webhook_secret) == ("k-1", secret)
    assert config.callback_url == "http://127.0.0.1:8000/v1/webhooks/suppliers"
    assert config.auto_advance is True
    assert (
        config.dispatch_after_seconds,
        config.in_transit_after_seconds,
        config.deliver_after_seconds,
    ) == (1.0, 3.0, 5.0)


def test_simulate_suppliers_refuses_a_webhook_secret_in_another_format(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "product_shop.cli_simulators.uvicorn.run", lambda *a, **k: pytest.fail("served")
    )

    assert main(["simulate", "suppliers", "--webhook-secret", "plain-text"]) == 2

    assert "webhook secret must be" in capsys.readouterr().err
