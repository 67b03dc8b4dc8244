"""docs/architecture.md: dependencies point one way. These read the source, so they fail the moment
someone adds a forbidden import."""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "product_shop"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _rel(path: Path) -> str:
    return str(path.relative_to(SRC))


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_no_package_imports_web(path: Path) -> None:
    if _rel(path).startswith("web/") or _rel(path) in ("cli.py", "cli_demo.py"):
        return
    offending = {name for name in _imports(path) if name.startswith("product_shop.web")}
    assert not offending, f"{_rel(path)} imports {offending}"


@pytest.mark.parametrize("path", [p for p in _modules() if p.name == "model.py"], ids=_rel)
def test_domain_models_import_no_framework_and_no_session(path: Path) -> None:
    forbidden = (
        "fastapi",
        "starlette",
        "sqlalchemy",
        "httpx",
        "product_shop.web",
        "product_shop.db",
    )
    offending = {name for name in _imports(path) if name.startswith(forbidden)}
    assert not offending, f"{_rel(path)} imports {offending}"


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_services_raise_domain_errors_not_http_exceptions(path: Path) -> None:
    if _rel(path).startswith("web/"):
        return
    text = path.read_text()
    web_http_exception = re.search(
        r"from (fastapi|starlette)[\w.]* import [^\n]*HTTPException"
        r"|(fastapi|starlette)\.[\w.]*HTTPException",
        text,
    )
    assert web_http_exception is None, f"{_rel(path)} uses the web framework's HTTPException"


# Who may open a unit of work (docs/architecture.md, "Who owns a transaction"): the request
# (web/), jobs (the outbox relay, CLI commands), the wiring and the demo set-up, and db/ itself.
UNIT_OF_WORK_OWNERS = (
    "web/",
    "db/",
    "cli.py",
    "cli_events.py",
    "cli_audit.py",
    "cli_keys.py",  # key rotation: a batch per unit of work
    "events/relay",  # relay.py, relay_record.py, relay_thread.py
    "jobs/",
    "demo/",
    "context.py",
)


def _owns_units_of_work(path: Path) -> bool:
    return _rel(path).startswith(UNIT_OF_WORK_OWNERS)


def _handles_sessions(path: Path) -> bool:
    return any(name.startswith("sqlalchemy") for name in _imports(path))


def _used_names(path: Path) -> set[str]:
    """Attribute and function names the module calls (`x.commit()` gives "commit")."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
            elif isinstance(node.func, ast.Name):
                names.add(node.func.id)
    return names


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_services_never_open_a_unit_of_work(path: Path) -> None:
    """A service cannot reach the Database (so cannot open a unit of work or a read session):
    it gets the caller's session."""
    if _owns_units_of_work(path):
        return
    offending = {name for name in _imports(path) if name == "product_shop.db.engine"}
    assert not offending, f"{_rel(path)} imports the Database: services get a session"
    if _handles_sessions(path):
        calls = _used_names(path) & {"unit_of_work", "reading", "run", "commit_queued"}
        assert not calls, f"{_rel(path)} opens or ends units of work: {calls}"


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_services_never_end_a_transaction(path: Path) -> None:
    """Services add rows and flush; beginning, committing and rolling back are the unit of
    work's (at run time the session refuses them too: db.engine.UnitOfWorkSession)."""
    if _owns_units_of_work(path) or not _handles_sessions(path):
        return
    calls = _used_names(path) & {"commit", "rollback", "begin", "close"}
    assert not calls, f"{_rel(path)} ends or begins a transaction: {calls}"


REPO = SRC.parents[1]
# Documents that live outside the repository; code must not send a reader to them.
OUTSIDE_DOCUMENTS = re.compile(r"ARCHITECTURE\.md|STYLE\.md|(?i:shared/|seeds/)")


def _source_files() -> list[Path]:
    return sorted(
        path
        for path in (REPO / "src").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )


def test_src_refers_to_no_document_outside_the_repository() -> None:
    """Everything a reader of src/ is sent to is in the repository (docs/architecture.md)."""
    offending = []
    for path in _source_files():
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            found = OUTSIDE_DOCUMENTS.search(line)
            if found:
                where = path.relative_to(REPO)
                offending.append(f"{where}:{number} refers to {found.group()!r}")
    assert not offending, "\n".join(offending)


REPOSITORY_PATH = re.compile(r"`((?:src|tests|docs|bench)/[^`\s]*)`")


def test_paths_named_in_the_architecture_document_exist() -> None:
    """Every repository path in backticks in docs/architecture.md exists; a `file::test` also
    names a test function that the file defines."""
    document = (REPO / "docs" / "architecture.md").read_text()
    named = REPOSITORY_PATH.findall(document)
    assert named, "docs/architecture.md names no repository path"
    missing = []
    for reference in sorted(set(named)):
        file_part, _, test = reference.partition("::")
        path = REPO / file_part
        if not path.exists():
            missing.append(f"{reference}: no such path")
            continue
        test = test.split("[", 1)[0]
        if test and not re.search(
            rf"^\s*(?:async )?def {re.escape(test)}\(", path.read_text(), re.M
        ):
            missing.append(f"{reference}: no such test in {file_part}")
    assert not missing, "\n".join(missing)


# Spec §3.3, §5.3: no system-initiated refund. The one call that moves money back is the
# payments port's `refund`, made only by the refund settlement, which sends refunds reserved by
# `RefundService.reserve_*` (a named staff member with fresh MFA; `initiated_by` NOT NULL).
REFUND_CALLERS = {"jobs/refund_settlement.py"}


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_only_the_refund_settlement_asks_integrated_payments_for_a_refund(path: Path) -> None:
    if _rel(path).startswith(("integrations/", "simulators/")):
        return  # the port, its adapter and the simulator that serves it
    if "refund" in _used_names(path):
        assert _rel(path) in REFUND_CALLERS, f"{_rel(path)} calls a refund"
