"""Row-level security's side of the application (docs/security.md, "Row-level security").

PostgreSQL's policies (migration 0018) decide which rows of a patient- or practice-bound table a
transaction may see or write from three settings of its connection:

- `product_shop.scope`: `system` (jobs, the relay, webhooks from other modules, service roles
  that work across practices), `practice` (a practice's staff and its AI engine), `patient`
  (one patient of one practice), or anything else, which sees nothing;
- `product_shop.practice_id` and `product_shop.patient_id`: whose rows.

This module holds the scope of the code running now (a context variable) and sets those three
settings at the start of every transaction on a PostgreSQL engine (`install`). Outside a request
the scope is `SYSTEM`: jobs, the relay and CLI commands work across practices. A request starts
as `NOBODY` (web/middleware.py) and becomes the caller's scope once their token is verified
(web/deps.py); webhook routes take `SYSTEM` explicitly. A route that forgot to say whose it is
therefore reads nothing, rather than everything.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Engine, event

ScopeKind = Literal["system", "practice", "patient", "nobody"]


@dataclass(frozen=True, slots=True)
class TenantScope:
    kind: ScopeKind
    practice_id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None

    def settings(self) -> tuple[str, str, str]:
        """The three connection settings, as text ('' for none)."""
        return (
            self.kind,
            str(self.practice_id) if self.practice_id else "",
            str(self.patient_id) if self.patient_id else "",
        )


SYSTEM = TenantScope("system")
NOBODY = TenantScope("nobody")


def practice_scope(practice_id: uuid.UUID) -> TenantScope:
    return TenantScope("practice", practice_id=practice_id)


def patient_scope(practice_id: uuid.UUID, patient_id: uuid.UUID) -> TenantScope:
    return TenantScope("patient", practice_id=practice_id, patient_id=patient_id)


_current: ContextVar[TenantScope] = ContextVar("product_shop_tenant_scope", default=SYSTEM)


def current_scope() -> TenantScope:
    return _current.get()


def enter(scope: TenantScope) -> None:
    """Make `scope` the scope of the rest of the current context (a request's task): the
    transactions it begins from now on see only that scope's rows."""
    _current.set(scope)


@contextmanager
def scoped(scope: TenantScope) -> Iterator[None]:
    """`scope` for the block, the previous one after it."""
    token = _current.set(scope)
    try:
        yield
    finally:
        _current.reset(token)


# Sent just before a transaction's first statement (never a round trip of its own when that
# statement is pipelined: db/fast.py sends it in the same pipeline): LOCAL values in a
# transaction (they end with it), session-level ones on an autocommit connection (the
# database's reads without a transaction, where LOCAL would end with that one statement). Every
# transaction sets them again before its first statement, so a pooled connection never carries
# one caller's scope into another's work.
SET_SCOPE = (
    "SELECT set_config('product_shop.scope', %(kind)s, %(local)s),"
    " set_config('product_shop.practice_id', %(practice)s, %(local)s),"
    " set_config('product_shop.patient_id', %(patient)s, %(local)s)"
)
_PENDING = "product_shop.tenant_scope_pending"


def take_pending(connection: Connection) -> dict[str, object] | None:
    """The scope parameters the connection's transaction has yet to send (None: sent, or not
    PostgreSQL). Whoever takes them sends `SET_SCOPE` with them before anything else."""
    found: tuple[str, str, str] | None = connection.info.pop(_PENDING, None)
    if found is None:
        return None
    raw = connection.connection.dbapi_connection
    kind, practice, patient = found
    local = not getattr(raw, "autocommit", False)
    return {"kind": kind, "practice": practice, "patient": patient, "local": local}


def install(engine: Engine, *, fixed: TenantScope | None = None) -> None:
    """Set the current scope on every transaction `engine` begins (PostgreSQL only). With
    `fixed`, every connection of the engine holds that scope for its whole life instead, set
    once when it connects: for a pool only system work uses (the relay's), where a statement
    per transaction would buy nothing."""
    if engine.dialect.name != "postgresql":
        return
    if fixed is not None:
        kind, practice, patient = fixed.settings()
        scope = {"kind": kind, "practice": practice, "patient": patient, "local": False}

        @event.listens_for(engine, "connect")
        def _hold_scope(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(SET_SCOPE, scope)
            finally:
                cursor.close()
            dbapi_connection.commit()

        return

    @event.listens_for(engine, "begin")
    def _remember_scope(connection: Connection) -> None:
        connection.info[_PENDING] = _current.get().settings()

    @event.listens_for(engine, "before_cursor_execute")
    def _send_scope(
        connection: Connection,
        cursor: Any,
        _statement: str,
        _parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        pending = take_pending(connection)
        if pending is not None:  # on the statement's own cursor, just before it
            cursor.execute(SET_SCOPE, pending)

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _forget_scope(connection: Connection) -> None:
        if not connection.invalidated:  # an invalidated one is discarded with its info
            connection.info.pop(_PENDING, None)
