"""AI suggestions behind a staff approval gate (spec §7, §11.1): appointment context from
Appointment Manager's webhook, and the engine's pending suggestions that a named clinician or
staff member approves (a recommendation attributed to them) or rejects.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from product_shop.db.base import JSONDoc, UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "appointment_contexts",
        sa.Column("appointment_context_id", sa.Uuid(), nullable=False),
        sa.Column("practice_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("appointment_id", sa.String(length=64), nullable=False),
        sa.Column("clinician_id", sa.String(length=64), nullable=False),
        sa.Column("clinician_name", sa.Text(), nullable=True),
        sa.Column("treatment_codes", JSONDoc, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("message_id", sa.String(length=120), nullable=False),
        sa.Column("suggestions_status", sa.String(length=16), nullable=False),
        sa.CheckConstraint(
            "suggestions_status IN ('suggested', 'none', 'engine_failed', 'off')",
            name=op.f("ck_appointment_contexts_suggestions_status_known"),
        ),
        sa.PrimaryKeyConstraint("appointment_context_id", name=op.f("pk_appointment_contexts")),
        sa.UniqueConstraint("practice_id", "appointment_id", name="uq_appointment_contexts_appt"),
    )
    with op.batch_alter_table("appointment_contexts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_appointment_contexts_patient",
            ["practice_id", "patient_id", "ended_at"],
            unique=False,
        )

    op.create_table(
        "ai_suggestions",
        sa.Column("suggestion_id", sa.Uuid(), nullable=False),
        sa.Column("practice_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("appointment_context_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("engine", sa.String(length=64), nullable=False),
        sa.Column("engine_version", sa.String(length=32), nullable=False),
        sa.Column("inputs", JSONDoc, nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_by_name", sa.Text(), nullable=True),
        sa.Column("decided_by_role", sa.String(length=32), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("recommendation_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "(status = 'approved') = (recommendation_id IS NOT NULL)",
            name=op.f("ck_ai_suggestions_approved_recommends"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'expired')",
            name=op.f("ck_ai_suggestions_status_known"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'expired') OR (decided_by IS NOT NULL AND decided_at IS NOT "
            "NULL)",
            name=op.f("ck_ai_suggestions_decision_named"),
        ),
        sa.CheckConstraint("score BETWEEN 0 AND 1000", name=op.f("ck_ai_suggestions_score_range")),
        sa.ForeignKeyConstraint(
            ["appointment_context_id"],
            ["appointment_contexts.appointment_context_id"],
            name=op.f("fk_ai_suggestions_appointment_context_id_appointment_contexts"),
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.product_id"],
            name=op.f("fk_ai_suggestions_product_id_products"),
        ),
        sa.ForeignKeyConstraint(
            ["recommendation_id"],
            ["recommendations.recommendation_id"],
            name=op.f("fk_ai_suggestions_recommendation_id_recommendations"),
        ),
        sa.PrimaryKeyConstraint("suggestion_id", name=op.f("pk_ai_suggestions")),
        sa.UniqueConstraint(
            "appointment_context_id", "product_id", name="uq_ai_suggestions_context_product"
        ),
    )
    with op.batch_alter_table("ai_suggestions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ai_suggestions_practice", ["practice_id", "status", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("ai_suggestions", schema=None) as batch_op:
        batch_op.drop_index("ix_ai_suggestions_practice")

    op.drop_table("ai_suggestions")
    with op.batch_alter_table("appointment_contexts", schema=None) as batch_op:
        batch_op.drop_index("ix_appointment_contexts_patient")

    op.drop_table("appointment_contexts")
