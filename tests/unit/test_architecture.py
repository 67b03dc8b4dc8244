"""ARCHITECTURE.md: dependencies point one way. These read the source, so they fail the moment
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
    if _rel(path).startswith("web/") or _rel(path) == "cli.py":
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


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_services_never_commit(path: Path) -> None:
    """The request (or job) owns the transaction; services only add rows."""
    allowed = {"db/engine.py", "web/deps.py", "demo/runtime.py"}
    if _rel(path) in allowed:
        return
    assert ".commit()" not in path.read_text(), f"{_rel(path)} commits"
