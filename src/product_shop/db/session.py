"""The session a unit of work hands out (see `db.engine.Database`)."""

from __future__ import annotations

from sqlalchemy import event, text
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction


class TransactionRuleViolation(RuntimeError):
    """Something other than the unit of work tried to begin, commit, roll back or close its
    transaction (docs/architecture.md, "Who owns a transaction")."""


class UnitOfWorkSession(Session):
    """The session a unit of work hands out. Services add rows and may flush; only the unit of
    work that opened it ends its transaction: `commit`, `rollback`, `begin` and `close` called
    by anyone else raise `TransactionRuleViolation`, so a breach fails loudly in every test that
    reaches it instead of splitting one change into two transactions."""

    def commit(self) -> None:
        raise TransactionRuleViolation("services never commit: the unit of work does")

    def rollback(self) -> None:
        raise TransactionRuleViolation("services never roll back: the unit of work does")

    def begin(self, nested: bool = False) -> SessionTransaction:
        if nested:  # a SAVEPOINT inside the unit of work's transaction is fine
            return super().begin(nested=True)
        raise TransactionRuleViolation("services never begin a transaction: the unit of work does")

    def close(self) -> None:
        raise TransactionRuleViolation("services never close the session: the unit of work does")

    # The owner's side, used by `Database` only.
    def _owner_commit(self) -> None:
        super().commit()

    def _owner_rollback(self) -> None:
        super().rollback()

    def _owner_close(self) -> None:
        super().close()


@event.listens_for(UnitOfWorkSession, "do_orm_execute")
def _sqlite_row_locks(state: ORMExecuteState) -> None:
    """SQLite has no row locks and Python's sqlite3 opens a transaction only at the first write,
    so a `SELECT ... FOR UPDATE` there would lock nothing, and a read-modify-write could lose a
    concurrent writer's change. There, a locking read takes the database's write lock instead
    (`BEGIN IMMEDIATE`), held to the end of the unit of work: what PostgreSQL's row lock
    serialises, SQLite serialises too. A claim that skips locked rows (the relay's) does not:
    it must not hold up every writer while it calls other modules."""
    if not state.is_select:
        return
    lock = getattr(state.statement, "_for_update_arg", None)
    if lock is None or lock.skip_locked:
        return
    take_write_lock(state.session)


def take_write_lock(session: Session) -> None:
    """On SQLite, start the session's transaction holding the database's write lock (`BEGIN
    IMMEDIATE`), unless it has started already; nothing on PostgreSQL (its row locks do this).
    The relay calls it before recording what its deliveries mean, so that those writes never
    meet a snapshot gone stale while it waited for other modules."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    raw = connection.connection.dbapi_connection
    if raw is not None and not raw.in_transaction:
        raw.execute("BEGIN IMMEDIATE")


def try_schema_lock(session: Session, name: str) -> bool:
    """PostgreSQL: try to take a transaction-level advisory lock named `name` in the current
    schema (released at commit or rollback); True when taken. Advisory locks are per database,
    so the key pairs the name with the schema: deployments (or test workers) sharing a
    database in separate schemas do not block one another."""
    taken = session.execute(
        text("SELECT pg_try_advisory_xact_lock(hashtext(:name), hashtext(current_schema()))"),
        {"name": name},
    ).scalar_one()
    return bool(taken)
