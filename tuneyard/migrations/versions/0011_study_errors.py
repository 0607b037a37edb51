"""study errors: the last error a study's trials failed with and its streak, for fail fast

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("last_error_type", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("last_error_trial_id", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("error_streak", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("error_streak")
        batch.drop_column("last_error_trial_id")
        batch.drop_column("last_error_type")
        batch.drop_column("last_error")
