"""The architecture contracts in pyproject.toml ([tool.importlinter], run by `make test`) hold on
the real tree, and are not decoration: adding a forbidden import to the AI package (ARCHITECTURE.md
invariant 10, "AI never acts"; spec §7) in a copy of the source makes `lint-imports` fail and name
the broken contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "product_shop"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
AI_CONTRACT = "AI never acts"
LOCAL_ENGINE = Path("product_shop") / "recommendations" / "ai" / "local.py"


def _lint_imports(config: Path, *, cwd: Path, pythonpath: Path | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run(  # noqa: S603 (our own venv's console script, fixed arguments)
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(config)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def copied_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package (no caches) and of pyproject.toml, outside the repository."""
    base = tmp_path_factory.mktemp("import-contracts")
    shutil.copytree(
        SRC, base / "src" / "product_shop", ignore=shutil.ignore_patterns("__pycache__")
    )
    (base / "work").mkdir()
    shutil.copyfile(ROOT / "pyproject.toml", base / "work" / "pyproject.toml")
    return base


def _with_added_line(copied: Path, tmp_path: Path, line: str) -> Path:
    """A fresh copy of the copied tree with `line` appended to the local engine."""
    tree = tmp_path / "src"
    shutil.copytree(copied / "src", tree)
    module = tree / LOCAL_ENGINE
    module.write_text(module.read_text() + f"\n{line}\n")
    return tree


def test_lint_imports_is_installed() -> None:
    assert LINT_IMPORTS.exists(), LINT_IMPORTS


def test_the_contracts_hold_on_the_real_tree() -> None:
    code, output = _lint_imports(ROOT / "pyproject.toml", cwd=ROOT)

    assert code == 0, output
    assert AI_CONTRACT in output
    assert "KEPT" in output
    assert "BROKEN" not in output


def test_the_unchanged_copy_passes(copied_tree: Path) -> None:
    """The copy is checked, not the installed package: the baseline for the cases below."""
    work = copied_tree / "work"
    code, output = _lint_imports(work / "pyproject.toml", cwd=work, pythonpath=copied_tree / "src")

    assert code == 0, output
    assert "Contracts: 2 kept, 0 broken." in output


@pytest.mark.parametrize(
    ("line", "forbidden"),
    [
        ("import product_shop.orders.tables  # noqa", "product_shop.orders"),
        ("from product_shop.refunds import service  # noqa", "product_shop.refunds"),
        ("from product_shop.checkout import service as checkout  # noqa", "product_shop.checkout"),
        ("import product_shop.fulfilment.service  # noqa", "product_shop.fulfilment"),
        ("import product_shop.integrations.payments  # noqa", "product_shop.integrations.payments"),
    ],
    ids=["orders", "refunds", "checkout", "fulfilment", "payments"],
)
def test_a_forbidden_import_in_the_ai_package_breaks_the_contract(
    copied_tree: Path, tmp_path: Path, line: str, forbidden: str
) -> None:
    tree = _with_added_line(copied_tree, tmp_path, line)
    work = copied_tree / "work"

    code, output = _lint_imports(work / "pyproject.toml", cwd=work, pythonpath=tree)

    assert code != 0, output
    assert "BROKEN" in output, output
    assert AI_CONTRACT in output
    assert "1 kept, 1 broken" in output, output
    assert "product_shop.recommendations.ai.local" in output, output
    assert forbidden in output, output
