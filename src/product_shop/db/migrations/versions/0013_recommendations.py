"""recommendations: a named clinician recommends catalogue products to a patient of the practice
(spec §4.1); the product's price and availability are read from the catalogue when shown. A
checkout line may name the recommendation it came from (the conversion, spec §10.4).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from product_shop.db.base import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recommendations",
        sa.Column("recommendation_id", sa.Uuid(), nullable=False),
        sa.Column("practice_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("recommended_by", sa.String(length=64), nullable=False),
        sa.Column("recommended_by_name", sa.Text(), nullable=True),
        sa.Column("recommended_by_role", sa.String(length=32), nullable=False),
        sa.Column("appointment_id", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("withdrawn_at", UTCDateTime(), nullable=True),
        sa.Column("withdrawn_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'withdrawn')", name=op.f("ck_recommendations_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.product_id"],
            name=op.f("fk_recommendations_product_id_products"),
        ),
        sa.PrimaryKeyConstraint("recommendation_id", name=op.f("pk_recommendations")),
    )
    with op.batch_alter_table("recommendations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_recommendations_patient", ["practice_id", "patient_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_recommendations_practice", ["practice_id", "created_at"], unique=False
        )
    with op.batch_alter_table("checkout_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recommendation_id", sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_checkout_lines_recommendation_id_recommendations"),
            "recommendations",
            ["recommendation_id"],
            ["recommendation_id"],
        )
        batch_op.create_index(
            "ix_checkout_lines_recommendation",
            ["recommendation_id"],
            unique=False,
            postgresql_where=sa.text("recommendation_id IS NOT NULL"),
            sqlite_where=sa.text("recommendation_id IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("checkout_lines", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_checkout_lines_recommendation",
            postgresql_where=sa.text("recommendation_id IS NOT NULL"),
            sqlite_where=sa.text("recommendation_id IS NOT NULL"),
        )
        batch_op.drop_constraint(
            batch_op.f("fk_checkout_lines_recommendation_id_recommendations"), type_="foreignkey"
        )
        batch_op.drop_column("recommendation_id")
    with op.batch_alter_table("recommendations", schema=None) as batch_op:
        batch_op.drop_index("ix_recommendations_practice")
        batch_op.drop_index("ix_recommendations_patient")
    op.drop_table("recommendations")
