"""The audit log reaches Audit & Compliance (spec §8, §15.2 rule 4): every entry, in log order,
with hashes an outside party can check; a receiver that is down holds the feed's cursor and
gets everything once it is back; a run sent twice is absorbed; a gap in the log's positions is
waited for, then passed as a rolled-back transaction."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from product_shop.audit.log import GENESIS_HASH, AuditActor, AuditLog
from product_shop.audit.tables import AuditEntry
from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.core.clock import FrozenClock, SystemClock
from product_shop.core.signing import demo_destination_secret
from product_shop.db.engine import Database
from product_shop.events.delivery import PendingEvent
from product_shop.events.tables import FeedCursor
from product_shop.integrations.event_webhooks import WebhookSink
from product_shop.jobs.audit_feed import AuditFeed
from tests.conftest import World
from tests.integration.checkout_support import Shop
from tests.integration.fulfilment_support import place_order

AC = "audit_compliance"


@pytest.fixture
def settings(settings: Settings, receivers_url: str) -> Settings:
    return settings.model_copy(update={"event_sinks": {}, "receivers_base_url": receivers_url})


def _received_entries(receivers_url: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    answer = httpx.get(f"{receivers_url}/_simulator/{AC}/received").json()
    entries = [entry for run in answer["events"] for entry in run["data"]["entries"]]
    return entries, answer


def _canonical(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _positions(database: Database) -> list[int]:
    with database.reading() as session:
        return list(session.scalars(select(AuditEntry.position).order_by(AuditEntry.position)))


def _cursor(database: Database) -> FeedCursor:
    with database.reading() as session:
        found = session.get(FeedCursor, AC)
        assert found is not None
        session.expunge(found)
        return found


def test_every_audit_entry_reaches_audit_and_compliance_in_order_with_hashes_that_chain(
    client: TestClient, world: World, context: AppContext, shop: Shop, receivers_url: str
) -> None:
    place_order(client, world.patient_a, [(shop.toothbrush, 1), (shop.voucher, 1)])
    client.get("/v1/orders", headers=world.admin_a.headers)  # reads are audited too

    assert context.audit_feed.run_once() == len(_positions(context.database))

    entries, _ = _received_entries(receivers_url)
    assert [e["position"] for e in entries] == _positions(context.database)  # all, in order
    # An outside party's check, with nothing but sha256: each stream's chain holds.
    heads: dict[tuple[str, str], tuple[int, str]] = {}
    for entry in entries:
        stream = (entry["stream_type"], entry["stream_id"])
        seq, prev = heads.get(stream, (0, GENESIS_HASH))
        assert (entry["stream_seq"], entry["prev_hash"]) == (seq + 1, prev)
        document = {
            k: v for k, v in entry.items() if k not in ("position", "prev_hash", "entry_hash")
        }
        digest = hashlib.sha256((prev + _canonical(document)).encode()).hexdigest()
        assert digest == entry["entry_hash"]
        heads[stream] = (entry["stream_seq"], entry["entry_hash"])
    assert context.audit_feed.run_once() == 0  # nothing new, nothing sent again
    status = client.get("/v1/event-deliveries", headers=world.operator.headers).json()
    audit = next(d for d in status["destinations"] if d["destination"] == AC)
    assert (audit["sink"], audit["pending"]) == ("webhook", 0)


def test_a_receiver_that_is_down_holds_the_cursor_and_gets_everything_when_back(
    context: AppContext, database: Database, receivers_url: str, world: World
) -> None:
    _entries(database, 3)
    clock = FrozenClock(context.clock.now())
    feed = AuditFeed(database, _webhook(receivers_url), clock)
    httpx.post(f"{receivers_url}/_simulator/{AC}/faults", json={"mode": "down"})

    assert feed.run_once() == 0
    stuck = _cursor(database)
    assert (stuck.position, stuck.attempts) == (0, 1)
    assert "503" in (stuck.last_error or "")
    assert feed.run_once() == 0  # waiting for its retry

    httpx.delete(f"{receivers_url}/_simulator/{AC}/faults")
    clock.advance(timedelta(minutes=1))
    assert feed.run_once() == 3
    assert [e["position"] for e in _received_entries(receivers_url)[0]] == _positions(database)
    assert (_cursor(database).position, _cursor(database).attempts) == (3, 0)


def test_a_run_sent_again_after_a_crash_is_absorbed_by_the_receiver(
    context: AppContext, database: Database, receivers_url: str
) -> None:
    _entries(database, 2)
    clock = FrozenClock(context.clock.now())
    webhook = _webhook(receivers_url)

    class Killed(BaseException):
        """The worker dies after sending, before recording."""

    def sends_then_dies(event: PendingEvent) -> object:
        webhook(event)
        raise Killed

    with pytest.raises(Killed):
        AuditFeed(database, sends_then_dies, clock).run_once()
    assert AuditFeed(database, webhook, clock).run_once() == 0  # leased to the dead worker
    clock.advance(timedelta(minutes=2))
    assert AuditFeed(database, webhook, clock).run_once() == 2

    entries, answer = _received_entries(receivers_url)
    assert [e["position"] for e in entries] == [1, 2]  # recorded once
    assert answer["duplicates"] == 1


def test_a_gap_in_the_log_is_waited_for_then_passed_as_rolled_back(
    context: AppContext, database: Database
) -> None:
    """Position 3 is missing: a transaction still open (its entry will come) or rolled back."""
    _entries(database, 2)
    _entries(database, 1, position=4)
    clock = FrozenClock(context.clock.now())
    sent: list[list[int]] = []

    def sink(event: PendingEvent) -> None:
        sent.append([e["position"] for e in event.data["entries"]])

    feed = AuditFeed(database, sink, clock, gap_timeout=timedelta(minutes=5))
    assert feed.run_once() == 2
    clock.advance(timedelta(minutes=4))
    assert feed.run_once() == 0  # still waiting for 3
    _entries(database, 1, position=3)  # the open transaction commits
    assert feed.run_once() == 2
    assert sent == [[1, 2], [3, 4]]

    _entries(database, 1, position=6)  # 5 never comes
    assert feed.run_once() == 0
    clock.advance(timedelta(minutes=5, seconds=1))
    assert feed.run_once() == 1
    assert sent[-1] == [6]


def _webhook(receivers_url: str) -> WebhookSink:
    return WebhookSink(f"{receivers_url}/{AC}", demo_destination_secret(AC), clock=SystemClock())


def _entries(database: Database, count: int, *, position: int | None = None) -> None:
    """`count` audit entries of a new stream, at `position` onwards when given."""
    log = AuditLog(SystemClock())
    stream = str(uuid.uuid4())
    actor = AuditActor("tester", "staff", "Tess")
    with database.unit_of_work() as session:
        rows = [
            log.row(
                session,
                stream_type="test",
                stream_id=stream,
                action="test.done",
                actor=actor,
                after={"n": n},
                new_stream=n == 0,
            )
            for n in range(count)
        ]
        if position is not None:
            for offset, row in enumerate(rows):
                row["position"] = position + offset
        session.execute(insert(AuditEntry), rows)
