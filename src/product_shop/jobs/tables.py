"""What the background jobs remember between runs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from product_shop.db.base import Base, UTCDateTime

LAST_ERROR_LENGTH = 200


class JobRun(Base):
    """One row per job (`jobs/runner.py`): when it last started, succeeded and failed, why it
    last failed (the error's kind only, never a message that could carry personal data), and
    how many runs and failures it has had. A run skipped because another worker had the job is
    not a run here (it is counted in the `job_runs` metric as skipped)."""

    __tablename__ = "job_runs"

    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(LAST_ERROR_LENGTH))
    runs: Mapped[int] = mapped_column(Integer, server_default="0")
    failures: Mapped[int] = mapped_column(Integer, server_default="0")
