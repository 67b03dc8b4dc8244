"""The session a unit of work hands out (see `db.engine.Database`)."""

from __future__ import annotations

from sqlalchemy.orm import Session, SessionTransaction


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
