"""Counting only what committed.

A counter moved inside a unit of work that then rolls back (a lost race that `Database.run`
repeats, a constraint refusing the change, a crash before the COMMIT) would count something that
never happened. So a service counts on the session it was given: `count_on_commit` keeps the
increment in the session until its transaction commits, and drops it when the transaction rolls
back. It works for the ORM and for `db.fast.Statements` alike (the queued writes go out in the
session's own commit). A savepoint's commit or rollback (`begin_nested`) is not the unit of
work's: increments wait for the outermost transaction.
"""

from __future__ import annotations

from prometheus_client import Counter
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

_PENDING = "product_shop.insights.pending"


def count_on_commit(session: Session, counter: Counter, amount: float = 1.0, **labels: str) -> None:
    """Add `amount` to `counter` (with `labels`) once `session`'s transaction commits."""
    pending: list[tuple[Counter, dict[str, str], float]] = session.info.setdefault(_PENDING, [])
    pending.append((counter, labels, amount))


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if _PENDING not in session.info or session.in_nested_transaction():
        return
    for counter, labels, amount in session.info.pop(_PENDING):
        counter.labels(**labels).inc(amount)


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    """The outermost transaction ended without committing (after a commit nothing is left)."""
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


__all__ = ["count_on_commit"]
