"""The database drops the app's pooled connections (a restart, a failover, an idle timeout).

There is no pool pre-ping (db/engine.py): the first request that uses a dead pooled connection
fails, SQLAlchemy then invalidates the whole pool, and that request is answered 503
problem+json `database_unavailable`. The request after it reconnects and succeeds, so one
request fails however many pooled connections died.

PostgreSQL only. Only the backends of this worker's own pool are terminated: other test
workers share the server.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from product_shop.context import AppContext
from product_shop.web.problems import PROBLEM_MEDIA_TYPE
from tests.conftest import World

pytestmark = pytest.mark.postgres_only

POOLED = 4  # connections put in the pool before the database drops them


@pytest.fixture
def engine(context: AppContext, engine_name: str) -> Iterator[Engine]:
    """The app's engine; its pool is replaced afterwards so no dead connection outlives us."""
    assert engine_name == "postgresql"
    engine = context.database.engine
    yield engine
    engine.dispose()  # the engine is shared by this worker's later tests


def _fill_pool(engine: Engine, count: int) -> None:
    """Hold `count` connections at once, then give them back: the pool keeps them all."""
    held = [engine.connect() for _ in range(count)]
    for connection in held:
        connection.exec_driver_sql("SELECT 1")
    for connection in held:
        connection.close()


def _pooled_backend_pids(engine: Engine) -> list[int]:
    """The server-side pid of every connection idle in the pool, each returned to the pool."""
    pool = engine.pool
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    idle = pool.checkedin()  # type: ignore[attr-defined]
    held = [engine.raw_connection() for _ in range(idle)]
    try:
        pids = [connection.driver_connection.info.backend_pid for connection in held]  # type: ignore[union-attr]
    finally:
        for connection in held:
            connection.close()
    assert pool.checkedin() == idle  # type: ignore[attr-defined]  # no new connection was made
    return pids


def _admin_conninfo(engine: Engine) -> str:
    url = make_url(engine.url.render_as_string(hide_password=False))
    return url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)


def _terminate(engine: Engine, pids: list[int]) -> None:
    """Terminate exactly these backends, from a connection of our own, and wait until gone."""
    with psycopg.connect(_admin_conninfo(engine), autocommit=True, connect_timeout=5) as admin:
        own = admin.info.backend_pid
        assert own not in pids
        terminated = admin.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids]
        ).fetchall()
        assert sorted(terminated) == sorted((pid, True) for pid in pids)
        deadline = time.monotonic() + 10
        while True:
            alive = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
            ).fetchone()
            if alive == (0,):
                return
            assert time.monotonic() < deadline, f"backends {pids} did not go away"
            time.sleep(0.05)


def test_after_the_database_drops_pooled_connections_one_request_gets_503_and_the_next_succeeds(
    client: TestClient,
    engine: Engine,
    world: World,
    make_product: Callable[..., uuid.UUID],
    offer: Callable[..., None],
) -> None:
    product = make_product(name="TePe Interdental Brushes")
    offer(world.admin_a, product, 599)
    headers = world.patient_a.headers

    before = client.get("/v1/catalogue", headers=headers)
    assert before.status_code == 200, before.text
    assert [item["product_id"] for item in before.json()["items"]] == [str(product)]

    _fill_pool(engine, POOLED)
    pids = _pooled_backend_pids(engine)
    assert len(pids) >= POOLED
    assert len(set(pids)) == len(pids)
    _terminate(engine, pids)

    failed = client.get("/v1/catalogue", headers=headers)
    assert failed.status_code == 503, failed.text
    assert failed.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert failed.headers["retry-after"] == "5"
    problem = failed.json()
    assert problem["code"] == "database_unavailable"
    assert problem["status"] == 503
    assert problem["instance"] == "/v1/catalogue"
    assert problem["type"] == "/problems/database_unavailable"  # docs/problems.md
    assert "terminating" not in failed.text  # no driver message leaks to the caller

    # The failure invalidated the whole pool: the other dead connections are not handed out,
    # so every later request succeeds (FIFO pool: a dead one would come next otherwise).
    for _ in range(POOLED + 1):
        after = client.get("/v1/catalogue", headers=headers)
        assert after.status_code == 200, after.text
        assert after.json() == before.json()

    survivors = set(_pooled_backend_pids(engine))
    assert survivors
    assert not survivors & set(pids)  # fresh backends only
