"""Making a migration the usual way: `product-shop db revision --autogenerate -m ...` and
`alembic revision --autogenerate -m ...` from the repository root (alembic.ini) write the next
numbered NNNN_slug.py.

Each test works on a copy of the migrations (alembic.ini beside it as in the repository): tests
running at the same time migrate with the real directory, which must never have a second head.
"""

from __future__ import annotations

import ast
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from product_shop.cli import main
from product_shop.db import migrate
from product_shop.db.engine import Database

PROJECT = Path(__file__).resolve().parents[2]
MESSAGE = "Nothing to change"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """alembic.ini and the migrations at their paths in the repository, in a directory of this
    test's own; `product-shop db revision` writes there too."""
    root = tmp_path / "project"
    migrations = root / "src" / "product_shop" / "db" / "migrations"
    shutil.copytree(migrate.MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT / "alembic.ini", root / "alembic.ini")
    monkeypatch.setattr(migrate, "MIGRATIONS", str(migrations))
    return root


def _only_database_url(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Settings from the test alone: this database, no other PRODUCT_SHOP_* variable."""
    for name in list(os.environ):
        if name.startswith("PRODUCT_SHOP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", url)


@pytest.fixture
def at_head(database: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    """The test's database, migrated to head (SQLite and PostgreSQL), as the configured one."""
    _only_database_url(monkeypatch, database.url)
    return database


@pytest.fixture
def database_file(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite file of this test's own, migrated to head, as the configured database."""
    path = tmp_path / "product_shop.sqlite3"
    shutil.copyfile(sqlite_template, path)
    _only_database_url(monkeypatch, f"sqlite:///{path}")
    return path


def _head() -> str:
    head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    assert head is not None
    return head


def _next_after(head: str) -> str:
    return f"{int(head) + 1:04d}"


def _functions(path: Path) -> dict[str, list[ast.stmt]]:
    module = ast.parse(path.read_text())
    return {node.name: node.body for node in module.body if isinstance(node, ast.FunctionDef)}


def _is_empty(body: list[ast.stmt]) -> bool:
    return all(isinstance(statement, ast.Pass) for statement in body)


def _check_new_revision(path: Path, head: str, slug: str) -> None:
    """Named and numbered after the head, and Alembic reads it as the new head."""
    revision = _next_after(head)
    assert path.name == f"{revision}_{slug}.py"
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert script.get_current_head() == revision
    new = script.get_revision(revision)
    assert new is not None
    assert new.down_revision == head
    assert new.path == str(path)


def _alembic(project: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own interpreter, fixed arguments)
        [sys.executable, "-m", "alembic", *argv],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_db_revision_autogenerate_writes_the_next_numbered_empty_migration_when_models_agree(
    project: Path, at_head: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    head = _head()
    before = set(Path(migrate.MIGRATIONS, "versions").glob("*.py"))

    assert main(["db", "revision", "--autogenerate", "-m", MESSAGE]) == 0

    written = set(Path(migrate.MIGRATIONS, "versions").glob("*.py")) - before
    assert len(written) == 1
    path = written.pop()
    assert f"Generating {path} ..." in capsys.readouterr().out
    _check_new_revision(path, head, "nothing_to_change")
    functions = _functions(path)
    assert _is_empty(functions["upgrade"])
    assert _is_empty(functions["downgrade"])
    path.unlink()
    assert _head() == head


def test_db_revision_autogenerate_writes_what_the_database_lacks(
    project: Path, database_file: Path
) -> None:
    with sqlite3.connect(database_file) as connection:
        connection.execute("DROP INDEX ix_orders_patient_created")
    head = _head()

    assert main(["db", "revision", "--autogenerate", "-m", "patient order index"]) == 0

    path = next(Path(migrate.MIGRATIONS, "versions").glob(f"{_next_after(head)}_*.py"))
    _check_new_revision(path, head, "patient_order_index")
    source = path.read_text()
    assert "op.create_index('ix_orders_patient_created'" in source.replace('"', "'")
    assert "op.drop_index('ix_orders_patient_created'" in source.replace('"', "'")
    path.unlink()


def test_db_revision_without_autogenerate_needs_no_database(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _only_database_url(monkeypatch, f"sqlite:///{tmp_path}/missing/db.sqlite3")
    head = _head()

    assert main(["db", "revision", "-m", "Backfill order notes"]) == 0

    path = next(Path(migrate.MIGRATIONS, "versions").glob(f"{_next_after(head)}_*.py"))
    _check_new_revision(path, head, "backfill_order_notes")
    assert _is_empty(_functions(path)["upgrade"])
    assert not (tmp_path / "missing").exists()
    path.unlink()


def test_db_revision_autogenerate_refuses_a_database_behind_the_head(
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _only_database_url(monkeypatch, f"sqlite:///{tmp_path}/empty.sqlite3")
    before = sorted(Path(migrate.MIGRATIONS, "versions").glob("*.py"))

    assert main(["db", "revision", "--autogenerate", "-m", MESSAGE]) == 1

    assert "product-shop db upgrade" in capsys.readouterr().err
    assert sorted(Path(migrate.MIGRATIONS, "versions").glob("*.py")) == before


def test_alembic_revision_autogenerate_from_the_repository_root_numbers_the_file_alike(
    project: Path, database_file: Path
) -> None:
    head = _head()

    result = _alembic(project, "revision", "--autogenerate", "-m", MESSAGE)

    assert result.returncode == 0, result.stderr
    path = (
        project
        / "src/product_shop/db/migrations/versions"
        / f"{_next_after(head)}_nothing_to_change.py"
    )
    assert f"Generating {path}" in result.stdout
    _check_new_revision(path, head, "nothing_to_change")
    functions = _functions(path)
    assert _is_empty(functions["upgrade"])
    assert _is_empty(functions["downgrade"])
    path.unlink()


def test_alembic_revision_without_autogenerate_is_numbered_and_needs_no_database(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _only_database_url(monkeypatch, f"sqlite:///{tmp_path}/missing/db.sqlite3")
    head = _head()

    result = _alembic(project, "revision", "-m", "Backfill order notes")

    assert result.returncode == 0, result.stderr
    path = next(Path(migrate.MIGRATIONS, "versions").glob(f"{_next_after(head)}_*.py"))
    _check_new_revision(path, head, "backfill_order_notes")
    assert not (tmp_path / "missing").exists()
    path.unlink()
