"""What an operator gets when the environment is wrong (a setting, the database, a file, a
port): one line naming it and exit status 2, never a traceback, and nothing half-written."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from product_shop.cli import main
from product_shop.config import ConfigurationError, Settings


@pytest.fixture(autouse=True)
def _logging_to_an_open_stream() -> Iterator[None]:
    """Another test in this process may have left the root logger writing to an output capture
    pytest has closed since (a 'Logging error' report on stderr, not this command's): warnings
    go to the current stderr for the test's length."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = [logging.StreamHandler()]
    root.setLevel(logging.WARNING)
    yield
    root.handlers, root.level = saved, level


@pytest.fixture(autouse=True)
def _no_product_shop_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PRODUCT_SHOP_"):
            monkeypatch.delenv(name)


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("product-shop: ")
    return lines[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PRODUCT_SHOP_RELAY_INTERVAL_SECONDS", "-1"),  # spun at full CPU, ignored SIGTERM
        ("PRODUCT_SHOP_CHECKOUT_TTL_MINUTES", "-10"),
        ("PRODUCT_SHOP_JWT_LEEWAY_SECONDS", "-100"),
        ("PRODUCT_SHOP_PAYMENTS_TIMEOUT_SECONDS", "-1"),
        ("PRODUCT_SHOP_LOG_LEVEL", "LOUD"),
        ("PRODUCT_SHOP_DB_POOL_SIZE", "abc"),
        ("PRODUCT_SHOP_ENVIRONMENT", "bogus"),
        ("PRODUCT_SHOP_EVENT_SINKS", '{"finance": {"kind": "carrier-pigeon"}}'),
        ("PRODUCT_SHOP_EVENT_SINKS", '{"finance": {"url": "not a url"}}'),
        ("PRODUCT_SHOP_EVENT_SINKS", "{bad json"),
    ],
)
def test_a_setting_out_of_bounds_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    line = _refused(capsys, "jobs", "list")

    assert "settings" in line


def test_the_log_level_is_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCT_SHOP_LOG_LEVEL", "warning")
    assert Settings().log_level == "WARNING"


def test_a_jwt_public_key_that_is_not_one_is_refused_at_start(tmp_path: Path) -> None:
    junk = tmp_path / "key.pem"
    junk.write_text("not a key")
    for settings in (
        Settings(jwt_public_key="garbage"),
        Settings(jwt_public_key_file=junk),
        Settings(jwt_public_key_file=tmp_path / "missing.pem"),
    ):
        with pytest.raises(ConfigurationError, match=r"JWT public key|cannot be read"):
            settings.check()


def test_an_unreachable_or_malformed_database_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for url in ("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", "notaurl", "bogus://x"):
        monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", url)
        assert "database" in _refused(capsys, "db", "current")


def test_an_audit_export_that_fails_leaves_the_previous_file_as_it_was(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kept = tmp_path / "audit.jsonl"
    kept.write_text("precious\n")
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/x")

    capsys.readouterr()
    status = main(["audit", "export", "--since", "2026-01-01T00:00:00Z", "--output", str(kept)])

    assert status == 2
    assert kept.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl"]


def test_upgrading_to_an_older_revision_says_nothing_changed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", f"sqlite:///{tmp_path / 'x.sqlite3'}")
    assert main(["db", "upgrade"]) == 0

    line = _refused(capsys, "db", "upgrade", "0010")

    assert "nothing was changed" in line
    assert "0999" in _refused(capsys, "db", "upgrade", "0999")  # a revision this code lacks


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "70000"],
        ["serve", "--port", "-1"],
        ["serve", "--grace", "-5"],
        ["relay", "--interval", "-1"],
        ["simulate", "payments", "--port", "99999"],
    ],
)
def test_a_port_or_a_duration_out_of_range_is_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
