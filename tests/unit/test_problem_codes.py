"""docs/problems.md lists every problem `code` the service can answer with (issue 9 item 4).

The codes are read from the source with `ast`: string literals passed as `code=...`, class
attributes named `code` (the error tree), `"code": "..."` in dict literals (the last-resort 500)
and the framework's HTTP error codes. An f-string code (`f"checkout_{status}"`) is a pattern: the
document must list the concrete codes it makes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from product_shop.web.problems import (
    HTTP_ERROR_CODES,
    HTTP_ERROR_FALLBACK,
    PROBLEM_TYPE_BASE,
    problem_response,
)

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "product_shop"
DOC = ROOT / "docs" / "problems.md"
# The payment simulators stand in for another company's API: their codes are not ours.
NOT_THE_SERVICE = ("simulators",)


def _literals(node: ast.expr) -> list[str]:
    """The codes an expression can evaluate to: literals, both arms of `a if c else b`, and the
    operands of `a or b`; an f-string becomes a regular expression. Anything else (a variable, a
    subscript) names no code."""
    if isinstance(node, ast.Constant):
        return [node.value] if isinstance(node.value, str) else []
    if isinstance(node, ast.IfExp):
        return _literals(node.body) + _literals(node.orelse)
    if isinstance(node, ast.BoolOp):
        return [code for value in node.values for code in _literals(value)]
    if isinstance(node, ast.JoinedStr):
        parts = [
            re.escape(part.value) if isinstance(part, ast.Constant) else "[a-z_]+"
            for part in node.values
        ]
        return ["re:" + "".join(parts)]
    return []


def _codes_in(tree: ast.AST) -> set[str]:
    codes: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "code":
                    codes.update(_literals(keyword.value))
        elif isinstance(node, ast.ClassDef):
            for statement in node.body:
                if isinstance(statement, ast.Assign):
                    named = any(
                        isinstance(t, ast.Name) and t.id == "code" for t in statement.targets
                    )
                    value: ast.expr | None = statement.value
                elif isinstance(statement, ast.AnnAssign):
                    named = isinstance(statement.target, ast.Name) and statement.target.id == "code"
                    value = statement.value
                else:
                    continue
                if named and value is not None:
                    codes.update(_literals(value))
        elif isinstance(node, ast.Dict):
            for key, item in zip(node.keys, node.values, strict=True):
                names_code = isinstance(key, ast.Constant) and key.value == "code"
                if names_code and isinstance(item, ast.Constant) and isinstance(item.value, str):
                    codes.add(item.value)
    return codes


def codes_used_in_source() -> set[str]:
    codes: set[str] = set()
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] in NOT_THE_SERVICE:
            continue
        codes |= _codes_in(ast.parse(path.read_text(), filename=str(path)))
    codes |= {code for code, _title in HTTP_ERROR_CODES.values()}
    codes.add(HTTP_ERROR_FALLBACK[0])
    return codes


def documented_codes() -> dict[str, int | str]:
    """`code` -> status, from the tables' rows: | `code` | status | meaning |."""
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (\d{3}|any) \|", DOC.read_text(), re.MULTILINE)
    documented: dict[str, int | str] = {}
    for code, status in rows:
        assert code not in documented, f"{code} is listed twice in docs/problems.md"
        documented[code] = int(status) if status.isdigit() else status
    return documented


def test_the_source_reader_finds_codes_of_every_kind() -> None:
    """So the check below cannot pass by finding nothing."""
    used = codes_used_in_source()
    assert {
        "idempotency_key_required",  # code="..." keyword
        "payment_failed",  # class attribute
        "conflict",  # class attribute of the error tree
        "internal_error",  # dict literal (the last-resort 500)
        "concurrent_change",  # web/problems.py's database errors
        "database_busy",
        "method_not_allowed",  # the framework's HTTP errors
        r"re:checkout_[a-z_]+",  # an f-string
    } <= used
    assert "code" not in used  # a subscript such as r["code"] names no code


def test_every_problem_code_used_in_src_is_documented() -> None:
    documented = set(documented_codes())
    missing: list[str] = []
    for code in sorted(codes_used_in_source()):
        if code.startswith("re:"):
            pattern = re.compile(code.removeprefix("re:"))
            if not any(pattern.fullmatch(name) for name in documented):
                missing.append(f"codes matching {pattern.pattern}")
        elif code not in documented:
            missing.append(code)
    assert not missing, f"add to docs/problems.md: {missing}"


def test_every_documented_code_is_still_used() -> None:
    used = codes_used_in_source()
    patterns = [re.compile(code.removeprefix("re:")) for code in used if code.startswith("re:")]
    stale = [
        code
        for code in documented_codes()
        if code not in used and not any(p.fullmatch(code) for p in patterns)
    ]
    assert not stale, f"docs/problems.md lists codes nothing uses: {stale}"


def test_problem_types_are_relative_uris_naming_the_code() -> None:
    response = problem_response(None, status=409, code="conflict", title="Conflict", detail="x")
    assert PROBLEM_TYPE_BASE == "/problems/"
    assert b'"type":"/problems/conflict"' in response.body
    assert "`/problems/<code>`" in DOC.read_text()
