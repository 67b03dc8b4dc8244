"""Who owns a transaction (docs/architecture.md): the request or the job opens a unit of work;
services add rows to the session they are given and never begin, commit, roll back or close it.

At run time the session a unit of work hands out refuses all four (`UnitOfWorkSession`), so a
service that breaks the rule fails in every test that reaches it, and nothing it did is kept.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from product_shop.catalogue.service import CatalogueService
from product_shop.catalogue.tables import Product
from product_shop.db.engine import Database, TransactionRuleViolation
from product_shop.events.tables import OutboxEvent
from tests.conftest import World
from tests.integration.conftest import count_rows
from tests.integration.fast_support import event_row

ENDINGS: dict[str, Callable[[Session], Any]] = {
    "commit": lambda session: session.commit(),
    "rollback": lambda session: session.rollback(),
    "begin": lambda session: session.begin(),
    "close": lambda session: session.close(),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_unit_of_work_session_refuses_to_be_ended_by_anyone_else(
    database: Database, ending: str
) -> None:
    def breach() -> None:
        with database.unit_of_work() as session:
            session.add(OutboxEvent(**event_row(aggregate_id="written")))
            session.flush()
            ENDINGS[ending](session)

    with pytest.raises(TransactionRuleViolation):
        breach()
    assert count_rows(database, OutboxEvent) == 0  # the unit of work rolled it all back


def test_a_savepoint_inside_the_unit_of_work_is_allowed(database: Database) -> None:
    with database.unit_of_work() as session, session.begin_nested():
        session.add(OutboxEvent(**event_row(aggregate_id="nested")))
    assert count_rows(database, OutboxEvent) == 1


def test_a_service_that_commits_breaks_the_request_and_keeps_nothing(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Breaking the rule on purpose: the catalogue service commits its own change."""
    real_create = CatalogueService.create_product

    def create_and_commit(self: CatalogueService, session: Session, *args: Any) -> Any:
        created = real_create(self, session, *args)
        session.commit()  # the breach
        return created

    monkeypatch.setattr(CatalogueService, "create_product", create_and_commit)

    response = client.post(
        "/v1/products",
        headers={**world.catalogue_admin.headers, "Idempotency-Key": str(uuid.uuid4())},
        json={"name": "X", "category": "Y", "fulfilment_type": "Digital", "cost_price_minor": 0},
    )

    assert response.status_code == 500
    assert count_rows(database, Product) == 0
    assert count_rows(database, OutboxEvent) == 0


def test_database_run_retries_a_deadlock_then_gives_up(database: Database) -> None:
    from sqlalchemy.exc import OperationalError

    class Deadlock(Exception):
        sqlstate = "40P01"

    calls: list[int] = []

    def work(session: Session) -> str:
        calls.append(1)
        session.add(OutboxEvent(**event_row(aggregate_id=f"try-{len(calls)}")))
        if len(calls) < 3:
            raise OperationalError("UPDATE ...", {}, Deadlock())
        return "done"

    assert database.run(work) == "done"
    assert len(calls) == 3
    assert count_rows(database, OutboxEvent) == 1  # only the attempt that succeeded

    calls.clear()

    def always(session: Session) -> str:
        calls.append(1)
        raise OperationalError("UPDATE ...", {}, Deadlock())

    with pytest.raises(OperationalError):
        database.run(always, attempts=2)
    assert len(calls) == 2


def test_database_run_does_not_retry_other_errors(database: Database) -> None:
    calls: list[int] = []

    def work(session: Session) -> None:
        calls.append(1)
        raise ValueError("a bug, not a race")

    with pytest.raises(ValueError, match="a bug"):
        database.run(work)
    assert calls == [1]


def test_a_locking_read_serialises_read_modify_write_on_either_engine(
    database: Database, make_product: Callable[..., uuid.UUID]
) -> None:
    """`SELECT ... FOR UPDATE` then a write, in two units of work at once, loses neither write:
    PostgreSQL's row lock, SQLite's write lock taken by the locking read (db/session.py)."""
    product_id = make_product(name="Counter")
    with database.reading() as session:
        product = session.get(Product, product_id)
        assert product is not None
        start = product.version
    both_read = threading.Barrier(2, timeout=10)

    def bump() -> None:
        with database.unit_of_work() as session:
            row = session.get(Product, product_id, with_for_update=True)
            assert row is not None
            seen = row.version
            with contextlib.suppress(threading.BrokenBarrierError):
                # The second locking read waits for the first unit of work: the barrier breaks.
                both_read.wait(timeout=0.5)
            row.version = seen + 1

    threads = [threading.Thread(target=bump) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    with database.reading() as session:
        product = session.get(Product, product_id)
        assert product is not None
        assert product.version == start + 2
