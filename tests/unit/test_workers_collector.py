"""/metrics in multi-process mode reads every worker's file; a file a worker is still creating
(empty for a moment) must not fail the scrape."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

from product_shop.insights.metrics import WorkersCollector


def _worker_file(directory: Path, pid: int, value: float) -> None:
    """A worker's counter file, as prometheus-client writes it."""
    key = json.dumps(
        ["product_shop_orders_created", "product_shop_orders_created_total", {}, "Orders."]
    )
    written = MmapedDict(str(directory / f"counter_{pid}.db"))
    written.write_value(key, value, 0.0)
    written.close()


def _total(collector: MultiProcessCollector) -> float:
    return sum(
        sample.value
        for metric in collector.collect()
        for sample in metric.samples
        if sample.name == "product_shop_orders_created_total"
    )


def test_a_file_a_worker_is_still_creating_is_left_out_and_the_rest_summed(
    tmp_path: Path,
) -> None:
    _worker_file(tmp_path, 101, 3)
    _worker_file(tmp_path, 102, 4)
    (tmp_path / "counter_103.db").touch()  # created, not sized yet

    assert _total(WorkersCollector(None, path=str(tmp_path))) == 7  # type: ignore[no-untyped-call]
    # What prometheus-client's own collector does with it: the whole scrape fails.
    with pytest.raises(struct.error):
        _total(MultiProcessCollector(None, path=str(tmp_path)))  # type: ignore[no-untyped-call]
