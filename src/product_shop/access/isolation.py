"""The service layer's tenant checks, in one place: "is this row the caller's practice's (or
the patient's own)?" as a Python test on a loaded row (`same`) or as a SQL condition on a query
(`scoped`).

They are the first wall; PostgreSQL's row-level security is the second (docs/security.md). To
show that the second holds alone, a test may switch the first off with `checks_disabled()`:
every check then passes, and only the database stands between a caller and another tenant's
rows. Nothing but that test ever calls it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import ColumnElement, true

_lock = threading.Lock()
_disabled = False


def enforced() -> bool:
    return not _disabled


def same(row_value: Any, caller_value: Any) -> bool:
    """Whether a loaded row's practice (or patient) is the caller's."""
    return _disabled or row_value == caller_value


def scoped(column: Any, caller_value: Any) -> ColumnElement[bool]:
    """A query's condition: the column is the caller's practice (or patient)."""
    if _disabled:
        return true()
    condition: ColumnElement[bool] = column == caller_value
    return condition


@contextmanager
def checks_disabled() -> Iterator[None]:
    """Tests only: every service-layer tenant check passes inside the block (process-wide, so
    the app's threads see it too)."""
    global _disabled
    with _lock:
        _disabled = True
        try:
            yield
        finally:
            _disabled = False
