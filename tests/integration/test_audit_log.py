"""The audit log is append-only in the database, provably intact, and exportable (issue 14, spec
§8 "immutable, tamper-evident, and exportable"): triggers refuse UPDATE and DELETE (and TRUNCATE
on PostgreSQL); the service role may only read and append; `audit verify` finds one changed
byte in any hashed field, a deleted entry, a reordered pair, a stream removed or cut short, and
names the entry; an export checks out with nothing but hashlib, and fails after one edit."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Table, delete, select, text, update
from sqlalchemy.exc import DBAPIError, ProgrammingError

from product_shop.audit.checkpoints import CHECKPOINT_STREAM
from product_shop.audit.export import export_lines
from product_shop.audit.log import AuditActor
from product_shop.audit.tables import AuditCheckpoint, AuditEntry
from product_shop.audit.verify import Verification, verify
from product_shop.cli import main
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.events.routing import Destination, Routing
from product_shop.events.tables import OutboxEvent
from product_shop.events.types import ORDER_CREATED, PAYMENT_RECEIPT
from tests.conftest import World, as_owner
from tests.integration.checkout_support import Shop, paid_checkout

ACTOR = AuditActor(actor_id="staff-1", role="practice_admin", name="Alice Admin")
PRACTICE = uuid.UUID("7d8e1a52-9c4b-4a43-8f0e-4b8a2d1c9e01")
HASHED = (
    "entry_id",
    "stream_type",
    "stream_id",
    "stream_seq",
    "recorded_at",
    "actor_id",
    "actor_role",
    "actor_name",
    "action",
    "practice_id",
    "before",
    "after",
)


@pytest.fixture
def log(context: AppContext) -> dict[str, str]:
    """Three streams: a product (3 entries), two orders (3 and 2), then a checkpoint."""
    streams = {
        "product": str(uuid.uuid4()),
        "order": str(uuid.uuid4()),
        "order2": str(uuid.uuid4()),
    }
    with context.database.unit_of_work() as session:
        for stream_type, key, count in (
            ("product", "product", 3),
            ("order", "order", 3),
            ("order", "order2", 2),
        ):
            for n in range(count):
                context.audit.record(
                    session,
                    stream_type=stream_type,
                    stream_id=streams[key],
                    action=f"{stream_type}.step_{n + 1}",
                    actor=ACTOR,
                    practice_id=PRACTICE,
                    before={"status": f"s{n}"},
                    after={"status": f"s{n + 1}", "amount_minor": 1000 + n},
                )
    assert context.audit_checkpoint.run_once() is not None
    return streams


def _check(context: AppContext) -> Verification:
    with context.database.engine.connect() as connection:
        return verify(connection)


def _entry(database: Database, stream_id: str, seq: int) -> AuditEntry:
    with database.reading() as session:
        found = session.scalars(
            select(AuditEntry).where(
                AuditEntry.stream_id == stream_id, AuditEntry.stream_seq == seq
            )
        ).one()
        session.expunge(found)
        return found


def _past_the_triggers(database: Database, *statements: Any) -> None:
    """What someone with the owner's rights could do: on PostgreSQL, as a superuser with the
    triggers off for the session (`session_replication_role`); on SQLite, with them dropped."""
    with as_owner(database) as connection:
        if database.dialect == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            for table in ("audit_entries", "audit_checkpoints", "audit_checkpoint_heads"):
                for operation in ("update", "delete"):
                    connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{operation}"))
        for statement in statements:
            connection.execute(statement)


# ---- append-only --------------------------------------------------------------------------


def test_an_intact_log_verifies(context: AppContext, log: dict[str, str]) -> None:
    result = _check(context)
    assert result.intact, result.problems
    assert (result.streams, result.checkpoints) == (4, 1)  # three, and the checkpoints' own
    assert result.entries == 3 + 3 + 2 + 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entries SET actor_id = 'someone-else'",
        "DELETE FROM audit_entries",
        "UPDATE audit_checkpoints SET root = 'x'",
        "DELETE FROM audit_checkpoints",
        "DELETE FROM audit_checkpoint_heads",
    ],
)
def test_the_database_refuses_to_change_or_delete_audit_rows(
    context: AppContext, log: dict[str, str], statement: str
) -> None:
    with pytest.raises(DBAPIError, match="append-only"), as_owner(context.database) as c:
        c.execute(text(statement))
    assert _check(context).intact


@pytest.mark.postgres_only
def test_postgresql_refuses_truncate_even_to_the_owner(
    context: AppContext, log: dict[str, str], engine_name: str
) -> None:
    with pytest.raises(DBAPIError, match="append-only"), as_owner(context.database) as c:
        c.execute(text("TRUNCATE audit_entries CASCADE"))


@pytest.fixture
def service_role(engine_name: str, request: pytest.FixtureRequest) -> str:
    """The role the app runs as on PostgreSQL, granted as `product-shop db grant` does
    (tests/conftest.py `pg_service_role`)."""
    if engine_name != "postgresql":
        pytest.skip("PostgreSQL-only behaviour")
    role: str = request.getfixturevalue("pg_service_role")
    return role


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entries SET actor_id = 'someone-else'",
        "DELETE FROM audit_entries",
        "TRUNCATE audit_entries",
        "UPDATE audit_checkpoints SET root = 'x'",
        "TRUNCATE audit_checkpoint_heads",
    ],
)
def test_the_service_role_may_not_change_delete_or_truncate_the_audit_log(
    context: AppContext, log: dict[str, str], service_role: str, statement: str
) -> None:
    with context.database.engine.begin() as connection:
        assert connection.execute(text("SELECT current_user")).scalar_one() == service_role
        with pytest.raises(ProgrammingError, match="permission denied"):
            connection.execute(text(statement))


@pytest.mark.postgres_only
def test_the_service_role_writes_the_log_and_the_modules_tables(
    context: AppContext, log: dict[str, str], service_role: str
) -> None:
    """What the service does as that role: append entries (the chain read first), write and
    change other tables."""
    with context.database.unit_of_work() as session:
        assert session.execute(text("SELECT current_user")).scalar_one() == service_role
        context.audit.record(
            session, stream_type="order", stream_id=log["order"], action="order.read", actor=ACTOR
        )
        session.execute(text("UPDATE outbox_events SET attempts = attempts"))
        session.execute(text("DELETE FROM idempotency_keys WHERE false"))
    assert _entry(context.database, log["order"], 4).action == "order.read"


# ---- audit verify -------------------------------------------------------------------------


def _changed(field: str, value: Any) -> Any:
    """The value with one byte (one character, one digit, one microsecond) changed."""
    if field == "stream_seq":
        return value + 1
    if field == "recorded_at":
        return value + timedelta(microseconds=1)
    if isinstance(value, uuid.UUID):
        text_value = str(value)
        return uuid.UUID(text_value[:-1] + ("0" if text_value[-1] != "0" else "1"))
    if isinstance(value, dict):
        return {**value, "status": value["status"] + "x"}
    assert isinstance(value, str)
    return value[:-1] + ("x" if value[-1] != "x" else "y")


@pytest.mark.parametrize("field", [*HASHED, "prev_hash", "entry_hash"])
def test_one_changed_byte_in_any_field_is_found_and_its_entry_named(
    context: AppContext, log: dict[str, str], field: str
) -> None:
    # The last entry of a stream for its sequence (a middle one's +1 would collide); else
    # the middle one.
    seq = 3 if field == "stream_seq" else 2
    entry = _entry(context.database, log["order"], seq)
    _past_the_triggers(
        context.database,
        update(AuditEntry)
        .where(AuditEntry.position == entry.position)
        .values({field: _changed(field, getattr(entry, field))}),
    )

    result = _check(context)
    assert not result.intact
    named = [p for p in result.problems if p.position == entry.position]
    assert named, result.problems
    assert str(named[0]).startswith("stream order/") or field in ("stream_type", "stream_id")


def test_a_deleted_entry_is_found(context: AppContext, log: dict[str, str]) -> None:
    gone = _entry(context.database, log["order"], 2)
    _past_the_triggers(
        context.database, delete(AuditEntry).where(AuditEntry.position == gone.position)
    )
    first = _check(context).problems[0]
    assert (first.stream_id, first.stream_seq) == (log["order"], 3)
    assert "an entry is missing" in first.what


def test_a_reordered_pair_is_found(context: AppContext, log: dict[str, str]) -> None:
    """Entries 2 and 3 of a stream swap places (their sequence numbers)."""
    second, third = (_entry(context.database, log["order"], n) for n in (2, 3))
    table = cast(Table, AuditEntry.__table__)
    _past_the_triggers(
        context.database,
        update(table).where(table.c.position == second.position).values(stream_seq=-2),
        update(table).where(table.c.position == third.position).values(stream_seq=2),
        update(table).where(table.c.position == second.position).values(stream_seq=3),
    )
    first = _check(context).problems[0]
    assert (first.stream_id, first.stream_seq, first.position) == (
        log["order"],
        2,
        third.position,
    )


def test_a_reordered_pair_of_positions_is_found(context: AppContext, log: dict[str, str]) -> None:
    """The log's storage order: two entries of a stream swap positions."""
    first_entry, second = (_entry(context.database, log["order"], n) for n in (1, 2))
    table = cast(Table, AuditEntry.__table__)
    _past_the_triggers(
        context.database,
        update(table).where(table.c.position == first_entry.position).values(position=-1),
        update(table)
        .where(table.c.position == second.position)
        .values(position=first_entry.position),
        update(table).where(table.c.position == -1).values(position=second.position),
    )
    problem = _check(context).problems[0]
    assert (problem.stream_id, problem.stream_seq) == (log["order"], 2)
    assert "position" in problem.what


def test_a_removed_stream_is_found_through_the_checkpoint(
    context: AppContext, log: dict[str, str]
) -> None:
    _past_the_triggers(
        context.database,
        delete(AuditEntry).where(AuditEntry.stream_id == log["order2"]),
    )
    result = _check(context)
    assert not result.intact
    (problem,) = result.problems
    assert (problem.stream_id, problem.stream_seq, problem.checkpoint) == (log["order2"], 2, 1)
    assert "removed or cut short" in problem.what
    # A later checkpoint does not take the loss in as the new truth.
    assert context.audit_checkpoint.run_once(force=True) is not None
    assert [p.stream_id for p in _check(context).problems] == [log["order2"]]


def test_a_stream_cut_short_is_found_through_the_checkpoint(
    context: AppContext, log: dict[str, str]
) -> None:
    last = _entry(context.database, log["product"], 3)
    _past_the_triggers(
        context.database, delete(AuditEntry).where(AuditEntry.position == last.position)
    )
    (problem,) = _check(context).problems
    assert (problem.stream_id, problem.stream_seq) == (log["product"], 3)


def test_a_changed_checkpoint_is_found(context: AppContext, log: dict[str, str]) -> None:
    _past_the_triggers(context.database, update(AuditCheckpoint).values(root="0" * 64))
    problems = [str(p) for p in _check(context).problems]
    assert any(p.startswith("checkpoint 1") and "hash does not match" in p for p in problems)
    assert any("Merkle root" in p for p in problems)


def test_a_checkpoint_is_taken_only_when_a_stream_moved_and_is_in_the_log_itself(
    context: AppContext, log: dict[str, str]
) -> None:
    assert context.audit_checkpoint.run_once() is None  # nothing moved
    with context.database.unit_of_work() as session:
        context.audit.record(
            session, stream_type="order", stream_id=log["order"], action="order.read", actor=ACTOR
        )
    second = context.audit_checkpoint.run_once()
    assert second is not None
    assert second.checkpoint_id == 2
    with context.database.reading() as session:
        entries = session.scalars(
            select(AuditEntry.after)
            .where(AuditEntry.stream_type == CHECKPOINT_STREAM[0])
            .order_by(AuditEntry.stream_seq)
        ).all()
    assert [e["checkpoint"] for e in entries if e] == [1, 2]
    assert entries[1] is not None
    assert entries[1]["root"] == second.root
    assert _check(context).intact


def test_audit_verify_exits_0_when_intact_and_1_naming_the_entry(
    context: AppContext,
    log: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = context.database.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", url)
    assert main(["audit", "verify", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("intact: 9 entries in 4 streams, 1 checkpoints")

    entry = _entry(context.database, log["product"], 2)
    _past_the_triggers(
        context.database,
        update(AuditEntry).where(AuditEntry.position == entry.position).values(actor_id="x"),
    )
    assert main(["audit", "verify", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("NOT INTACT")
    assert f"stream product/{log['product']}, entry 2, position {entry.position}" in out


# ---- export, checked by an outside party ------------------------------------------------------


def _independent_check(lines: list[dict[str, Any]]) -> list[str]:
    """Audit & Compliance's side: nothing from Product Shop's code, only hashlib and json, as
    docs/audit.md describes. Returns what does not check out."""

    def canonical(document: dict[str, Any]) -> str:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def sha256(value: bytes) -> bytes:
        return hashlib.sha256(value).digest()

    def mth(leaves: list[bytes]) -> bytes:
        if not leaves:
            return sha256(b"")
        if len(leaves) == 1:
            return sha256(b"\x00" + leaves[0])
        k = 1
        while k * 2 < len(leaves):
            k *= 2
        return sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))

    wrong: list[str] = []
    last_of_stream: dict[tuple[str, str], dict[str, Any]] = {}
    prev_checkpoint: dict[str, Any] | None = None
    for line in lines:
        if line["type"] == "entry":
            document = {k: line[k] for k in HASHED}
            digest = hashlib.sha256((line["prev_hash"] + canonical(document)).encode()).hexdigest()
            if digest != line["entry_hash"]:
                wrong.append(f"entry {line['position']}: hash")
            before = last_of_stream.get((line["stream_type"], line["stream_id"]))
            if before is not None and (
                line["stream_seq"] != before["stream_seq"] + 1
                or line["prev_hash"] != before["entry_hash"]
            ):
                wrong.append(f"entry {line['position']}: link")
            last_of_stream[(line["stream_type"], line["stream_id"])] = line
        else:
            document = {
                k: line[k] for k in ("checkpoint", "created_at", "streams", "entries", "root")
            }
            digest = hashlib.sha256((line["prev_hash"] + canonical(document)).encode()).hexdigest()
            if digest != line["checkpoint_hash"]:
                wrong.append(f"checkpoint {line['checkpoint']}: hash")
            if (
                prev_checkpoint is not None
                and line["prev_hash"] != prev_checkpoint["checkpoint_hash"]
            ):
                wrong.append(f"checkpoint {line['checkpoint']}: link")
            if "heads" in line:
                leaves = [canonical(head).encode() for head in line["heads"]]
                if mth(leaves).hex() != line["root"] or len(leaves) != line["streams"]:
                    wrong.append(f"checkpoint {line['checkpoint']}: root")
            prev_checkpoint = line
    return wrong


@pytest.fixture
def exported(context: AppContext, log: dict[str, str]) -> list[dict[str, Any]]:
    since = context.clock.now() - timedelta(days=1)
    with context.database.reading() as session:
        lines = list(export_lines(session, since))
    return [json.loads(json.dumps(line, default=str)) for line in lines]


def test_an_export_checks_out_with_plain_hashlib(exported: list[dict[str, Any]]) -> None:
    kinds = [line["type"] for line in exported]
    assert kinds == ["entry"] * 9 + ["checkpoint"]
    assert len(exported[-1]["heads"]) == 3
    assert _independent_check(exported) == []


@pytest.mark.parametrize(
    ("index", "field", "value"),
    [
        (4, "actor_id", "someone-else"),
        (4, "after", {"status": "s9"}),
        (9, "root", "0" * 64),
    ],
)
def test_an_export_fails_the_check_after_one_edit(
    exported: list[dict[str, Any]], index: int, field: str, value: object
) -> None:
    exported[index][field] = value
    assert _independent_check(exported) != []


def test_an_export_with_an_entry_left_out_fails_the_check(exported: list[dict[str, Any]]) -> None:
    order_entries = [n for n, line in enumerate(exported) if line.get("stream_type") == "order"]
    del exported[order_entries[1]]
    assert _independent_check(exported) != []


def test_audit_export_writes_json_lines(
    context: AppContext,
    log: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    url = context.database.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", url)
    since = (context.clock.now() - timedelta(hours=1)).isoformat()
    out = tmp_path / "audit.jsonl"
    assert (
        main(["audit", "export", "--since", since, "--format", "jsonl", "--output", str(out)]) == 0
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 10
    assert _independent_check(lines) == []


def test_the_export_api_is_for_audit_and_compliance_only(
    client: TestClient,
    context: AppContext,
    log: dict[str, str],
    world: World,
    make_token: Callable[..., str],
) -> None:
    since = (context.clock.now() - timedelta(hours=1)).isoformat()
    token = make_token(role="service", subject="audit-compliance", practice_id=None, name="A&C")
    response = client.get(
        "/v1/audit/export",
        params={"since": since},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert _independent_check(lines) == []
    assert [line["type"] for line in lines].count("checkpoint") == 1
    # The export is itself on record.
    with context.database.reading() as session:
        recorded = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "audit.exported")
        ).one()
    assert (recorded.actor_id, recorded.actor_role) == ("audit-compliance", "service")

    for who in (world.admin_a, world.operator, world.service, world.finance_a):
        denied = client.get("/v1/audit/export", params={"since": since}, headers=who.headers)
        assert denied.status_code == 403, who.actor.role
        assert denied.headers["content-type"] == "application/problem+json"
    naive = client.get(
        "/v1/audit/export",
        params={"since": "2026-01-01T00:00:00"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert naive.status_code == 422


# ---- spec §8: every Communication Hub event emitted -----------------------------------------


def test_every_communication_hub_event_emitted_is_in_the_audit_log(
    client: TestClient, world: World, shop: Shop, context: AppContext
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1), (shop.toothbrush, 1)])
    client.post(f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers)
    context.relay.route()
    context.relay.route()  # nothing new: nothing written twice

    with context.database.reading() as session:
        events = session.execute(select(OutboxEvent.event_id, OutboxEvent.event_type)).all()
        entries = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.stream_type == "communication_hub")
            .order_by(AuditEntry.stream_seq)
        ).all()
    routing = Routing()
    to_hub = {
        str(e.event_id): e.event_type
        for e in events
        if Destination.COMMUNICATION_HUB in routing.destinations(e.event_type)
    }
    assert {ORDER_CREATED.name, PAYMENT_RECEIPT.name} <= set(to_hub.values())
    assert len(to_hub) < len(events)  # the order reference and the rest are not the Hub's
    recorded = {e.after["event_id"]: e.after["event_type"] for e in entries if e.after}
    assert recorded == to_hub
    assert {e.action for e in entries} == {"communication_hub.event_emitted"}
    assert {(e.actor_id, e.actor_role) for e in entries} == {("product-shop", "service")}
    assert [e.stream_seq for e in entries] == list(range(1, len(entries) + 1))
    with context.database.engine.connect() as connection:
        assert verify(connection).intact


@pytest.mark.postgres_only
def test_one_checkpointer_at_a_time_in_a_schema_and_other_schemas_never_wait(
    context: AppContext, log: dict[str, str]
) -> None:
    """The checkpointer's advisory lock is per schema: a second worker on the same schema skips
    its run while the first holds it; a deployment (or test worker) in another schema of the
    same database is not held back by it."""
    from sqlalchemy.orm import Session

    from product_shop.db.session import try_schema_lock

    with Session(context.database.engine) as holder:
        assert try_schema_lock(holder, "product_shop.audit_checkpoint")
        assert context.audit_checkpoint.run_once(force=True) is None  # held: this run skips
        with Session(context.database.engine) as elsewhere:
            elsewhere.execute(text("SET LOCAL search_path TO public"))
            assert try_schema_lock(elsewhere, "product_shop.audit_checkpoint")
            elsewhere.rollback()
        holder.rollback()
    assert context.audit_checkpoint.run_once(force=True) is not None  # released
