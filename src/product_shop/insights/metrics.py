"""The module's Prometheus metrics (spec §16 Observability (a)-(e), plus the service's own health).

Every figure is a counter or a histogram the code moves where the thing happens; what the
database already knows (the outbox backlog, parked deliveries) is read when `/metrics` is
scraped instead. Labels carry codes and names of things, never personal data (no patient, order
or practice ids, no names, no amounts as labels).

Several API workers: `product-shop serve` points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory
before any worker starts, so each process writes its own files and `/metrics` sums them
(prometheus-client's multi-process mode). With no such directory (tests, one process) the
default registry is used.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator

import prometheus_client
from prometheus_client import REGISTRY, CollectorRegistry, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# The metric classes are used qualified, so that this module's names are the metrics
# themselves (`tests/unit/test_prometheus_rules.py` reads them).

NAMESPACE = "product_shop"

# (d) The checkout funnel: one count per stage a checkout reaches, so drop-off per step is a
# ratio of two series. Stages: created, payment_started, captured, completed, failed, expired.
CHECKOUT_STAGES = prometheus_client.Counter(
    "checkout_stage",
    "Checkouts reaching each stage of the funnel (created, payment_started, captured, "
    "completed, failed, expired).",
    ["stage"],
    namespace=NAMESPACE,
)

# (a) Order creation and payment capture, success and failure with the failure's reason.
ORDERS_CREATED = prometheus_client.Counter(
    "orders_created",
    "Orders created (each from a confirmed capture or points settlement), by how it was paid.",
    ["paid_by"],
    namespace=NAMESPACE,
)
PAYMENT_CAPTURES = prometheus_client.Counter(
    "payment_captures",
    "Payment capture outcomes confirmed by Integrated Payments, with the failure's reason code.",
    ["outcome", "reason"],
    namespace=NAMESPACE,
)

# (b) Fulfilment exceptions by type.
FULFILMENT_EXCEPTIONS = prometheus_client.Counter(
    "fulfilment_exceptions",
    "Order lines entering a fulfilment exception, by reason.",
    ["reason"],
    namespace=NAMESPACE,
)

# (c) Refund volume, amount and reason-code distribution.
REFUNDS = prometheus_client.Counter(
    "refunds",
    "Refunds settled, by outcome (succeeded, failed) and reason code.",
    ["outcome", "reason_code"],
    namespace=NAMESPACE,
)
REFUNDED_MINOR_UNITS = prometheus_client.Counter(
    "refunded_minor_units",
    "Money refunded (succeeded refunds), in minor units, by currency and reason code.",
    ["currency", "reason_code"],
    namespace=NAMESPACE,
)

# (e) Rewards Manager redemptions and reversals.
REDEMPTIONS = prometheus_client.Counter(
    "redemptions",
    "Rewards Manager points redemptions by outcome (confirmed, failed).",
    ["outcome"],
    namespace=NAMESPACE,
)
REDEMPTION_REVERSALS = prometheus_client.Counter(
    "redemption_reversals",
    "Redemption reversals by outcome (requested, made, failed).",
    ["outcome"],
    namespace=NAMESPACE,
)

# The service itself.
REQUEST_SECONDS = prometheus_client.Histogram(
    "http_request_duration_seconds",
    "API request latency by route template, method and status class.",
    ["method", "route", "status"],
    namespace=NAMESPACE,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
JOB_RUNS = prometheus_client.Counter(
    "job_runs",
    "Background job runs by job and outcome (ok, failed, skipped: another worker had it).",
    ["job", "outcome"],
    namespace=NAMESPACE,
)
JOB_SECONDS = prometheus_client.Histogram(
    "job_duration_seconds",
    "Background job run time by job.",
    ["job"],
    namespace=NAMESPACE,
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0),
)
JOB_LAST_SUCCESS = prometheus_client.Gauge(
    "job_last_success_timestamp_seconds",
    "When each job last ran to its end (Unix time).",
    ["job"],
    namespace=NAMESPACE,
    multiprocess_mode="max",
)
JOB_ITEMS = prometheus_client.Counter(
    "job_items",
    "Things a job changed (checkouts expired, captures reconciled, keys purged, orders erased).",
    ["job"],
    namespace=NAMESPACE,
)

# Other modules' APIs (`integrations/json_http.py`): each call's outcome (success: a 2xx answer;
# refused: a definite 4xx; failure: no usable answer, after the retries), and when each
# integration last succeeded and failed (Unix time; the latest across worker processes).
INTEGRATION_CALLS = prometheus_client.Counter(
    "integration_calls",
    "Calls to other modules' APIs by integration and outcome (success, refused, failure).",
    ["integration", "outcome"],
    namespace=NAMESPACE,
)
INTEGRATION_LAST = prometheus_client.Gauge(
    "integration_last_timestamp_seconds",
    "When each integration last answered a call (outcome success) or failed to (failure), "
    "as Unix time.",
    ["integration", "outcome"],
    namespace=NAMESPACE,
    multiprocess_mode="max",
)


def multiprocess() -> bool:
    """Whether this process writes its samples to `PROMETHEUS_MULTIPROC_DIR` (prometheus-client
    decides once, when `prometheus_client.values` is first imported)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class WorkersCollector(MultiProcessCollector):
    """Every worker's samples from `PROMETHEUS_MULTIPROC_DIR`, leaving out a file a worker is
    still creating. prometheus-client creates a worker's file empty and then sizes it; read in
    between (a worker starting, or replaced after a crash, during a scrape), the file fails the
    whole scrape with `struct.error`. An empty file holds no sample yet, so nothing is lost."""

    def collect(self) -> Iterator[Metric]:
        files = [f for f in glob.glob(os.path.join(self._path, "*.db")) if _sized(f)]
        return iter(self.merge(files, accumulate=True))  # type: ignore[no-untyped-call]


def _sized(path: str) -> bool:
    """The file holds at least its header (the 8 bytes that say how much of it is used)."""
    try:
        return os.path.getsize(path) >= 8
    except FileNotFoundError:  # a dead worker's live gauge, removed since the glob
        return False


def metrics_registry(*collectors: Collector) -> CollectorRegistry:
    """What `/metrics` serves: every worker's samples summed (multi-process mode) or this
    process's, plus `collectors` (read at scrape time). A fresh registry per call."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess():
        WorkersCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(REGISTRY)  # this process's own samples
    for collector in collectors:
        registry.register(collector)
    return registry


def integration_status() -> dict[str, dict[str, float | None]]:
    """Each integration's last success and last failure (Unix time, None: not since the
    service started), as `/metrics` shows them: {integration: {"last_success": ...,
    "last_failure": ...}}."""
    name = f"{NAMESPACE}_integration_last_timestamp_seconds"
    status: dict[str, dict[str, float | None]] = {}
    for family in _families(metrics_registry(), name):
        for sample in family.samples:
            integration = sample.labels.get("integration")
            outcome = sample.labels.get("outcome")
            if integration is None or outcome not in ("success", "failure"):
                continue
            entry = status.setdefault(integration, {"last_success": None, "last_failure": None})
            key = f"last_{outcome}"
            if sample.value > 0 and (entry[key] is None or sample.value > (entry[key] or 0.0)):
                entry[key] = sample.value
    return status


def _families(registry: CollectorRegistry, name: str) -> Iterator[Metric]:
    return (family for family in registry.collect() if family.name == name)
