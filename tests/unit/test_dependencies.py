"""The runtime lock is what src/ needs: every package src/ imports is in requirements.lock (a
production install has nothing else), every runtime dependency in pyproject.toml is used, and
requirements-dev.lock holds the runtime pins unchanged."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
SRC = PROJECT / "src" / "product_shop"
# Runtime dependencies that src/ uses without importing them, and why.
USED_WITHOUT_IMPORT = {
    "uvloop": "uvicorn's event loop when installed",
    "httptools": "uvicorn's HTTP parser when installed",
    "fastapi-offline": "web/docs.py serves its Swagger UI files (importlib.resources)",
    "jinja2": "the staff portal's templates, through fastapi.templating (web/portal/render.py)",
    "python-multipart": "Starlette's form parsing: the staff portal's form posts",
}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked(lock: str) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes) from a `uv pip compile --generate-hashes` file."""
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    for block in re.split(r"\n(?=\S)", (PROJECT / lock).read_text()):
        pin = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        if pin:
            hashes = frozenset(re.findall(r"--hash=(sha256:[0-9a-f]+)", block))
            pins[_normalize(pin.group(1))] = (pin.group(2), hashes)
    return pins


def _imported_top_level_names() -> set[str]:
    names: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names - set(sys.stdlib_module_names) - {"product_shop", "__future__"}


def _imported_distributions() -> dict[str, set[str]]:
    """distribution -> the names src/ imports from it."""
    installed = packages_distributions()
    found: dict[str, set[str]] = {}
    for name in _imported_top_level_names():
        assert name in installed, f"src/ imports {name!r}, which no installed package provides"
        for distribution in installed[name]:
            found.setdefault(_normalize(distribution), set()).add(name)
    return found


def _runtime_dependencies() -> set[str]:
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    names = (re.match(r"[A-Za-z0-9._-]+", each) for each in project["dependencies"])
    return {_normalize(name.group(0)) for name in names if name}


def test_every_package_src_imports_is_in_the_runtime_lock() -> None:
    runtime = _locked("requirements.lock")
    missing = {
        distribution: names
        for distribution, names in _imported_distributions().items()
        if distribution not in runtime
    }
    assert missing == {}, "src/ imports these, which only a development install has"


def test_every_runtime_dependency_is_imported_by_src_or_says_why_not() -> None:
    imported = set(_imported_distributions())
    unused = _runtime_dependencies() - imported - set(USED_WITHOUT_IMPORT)
    assert unused == set(), "runtime dependencies nothing in src/ imports: remove them"


def test_the_dev_lock_holds_the_runtime_pins_and_hashes_unchanged() -> None:
    runtime = _locked("requirements.lock")
    development = _locked("requirements-dev.lock")
    assert runtime, "requirements.lock pins nothing"
    assert {name: development.get(name) for name in runtime} == runtime
    assert set(development) > set(runtime)
