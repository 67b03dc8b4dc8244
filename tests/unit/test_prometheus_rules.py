"""The alert and recording rules (deploy/prometheus) and docs/operations.md's PromQL (issue 16):
`promtool check rules` accepts them, `promtool test rules` shows each alert firing on the series
that should fire it and quiet on those that should not, and every metric they name is one the
service exposes (a renamed metric turns this red instead of silencing an alert)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "product-shop.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "product-shop.rules.test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
METRIC = re.compile(r"\bproduct_shop_[a-z_]+\b")
GROUP = re.compile(r"^\s*- name: (\S+)$", re.MULTILINE)  # rule groups, not metrics
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: `make tools` installs it (Debian package prometheus)")
        pytest.skip("promtool is not installed here (`make tools`)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - promtool with our own files
        [_promtool(), *args], capture_output=True, text=True, timeout=60, cwd=RULES.parent
    )


def test_promtool_accepts_the_rules() -> None:
    result = _run("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_on_its_series_and_stays_quiet_otherwise() -> None:
    result = _run("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_alert_fails_its_unit_test(tmp_path: Path) -> None:
    # The unit tests are not vacuous: raising a threshold makes them fail.
    broken = RULES.read_text().replace(") > 0.25", ") > 0.75")
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    result = subprocess.run(  # noqa: S603 - promtool with our own files
        [_promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0


def _documented_queries() -> list[str]:
    """Every PromQL expression in docs/operations.md's promql blocks: a line at the margin
    starts one, an indented line continues it."""
    queries: list[str] = []
    for block in re.findall(r"```promql\n(.*?)```", OPERATIONS.read_text(), re.DOTALL):
        for line in block.splitlines():
            if not line.strip():
                continue
            if line.startswith(" ") and queries:
                queries[-1] += " " + line.strip()
            else:
                queries.append(line.strip())
    return queries


def test_every_query_in_the_operations_page_parses(tmp_path: Path) -> None:
    queries = _documented_queries()
    assert len(queries) >= 15
    rules = "groups:\n  - name: documented\n    rules:\n" + "".join(
        f"      - record: documented:query_{n}\n        expr: {json.dumps(query)}\n"
        for n, query in enumerate(queries)
    )
    (tmp_path / "documented.yml").write_text(rules)
    result = subprocess.run(  # noqa: S603 - promtool with our own files
        [_promtool(), "check", "rules", "documented.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _exposed() -> set[str]:
    """Every metric family the service exposes: the counters and histograms of
    `insights.metrics` and the database collector's gauges."""
    from product_shop.insights import collector, metrics

    names: set[str] = set()
    for value in vars(metrics).values():
        describe = getattr(value, "describe", None)
        if callable(describe):
            names.update(family.name for family in describe())
    names.update(family.name for family in collector.describe_families())
    return names


def _base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


@pytest.mark.parametrize("source", [RULES, OPERATIONS], ids=lambda path: path.name)
def test_every_metric_named_is_exposed(source: Path) -> None:
    exposed = _exposed()
    text = source.read_text()
    groups = set(GROUP.findall(text))
    named = {_base(name) for name in METRIC.findall(text) if name not in groups}
    assert named, f"{source.name} names no metric"
    unknown = sorted(name for name in named if name not in exposed)
    assert not unknown, f"{source.name} names metrics the service does not expose: {unknown}"
