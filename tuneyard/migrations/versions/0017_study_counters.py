"""study_counters: a study's slot count and usage move off its row

A job's end (a pause, a completion, a stop) frees a slot and adds the attempt's time to the
study's usage. On the study's row those changes waited for its row lock, which every ``next``
of the study holds; in a row of their own, changed by increments applied as the transaction
commits, they do not. The values move as they are.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "study_counters",
        sa.Column(
            "study_id",
            _ID,
            sa.ForeignKey("studies.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("active", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("gpu_seconds", sa.Float(), nullable=False, server_default="0"),
        sa.Column("worker_seconds", sa.Float(), nullable=False, server_default="0"),
    )
    op.execute(
        "INSERT INTO study_counters (study_id, active, gpu_seconds, worker_seconds) "
        "SELECT id, active, gpu_seconds, worker_seconds FROM studies"
    )
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("active")
        batch.drop_column("gpu_seconds")
        batch.drop_column("worker_seconds")


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("active", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("gpu_seconds", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("worker_seconds", sa.Float(), nullable=False, server_default="0")
        )
    for column in ("active", "gpu_seconds", "worker_seconds"):
        op.execute(
            f"UPDATE studies SET {column} = COALESCE((SELECT c.{column} FROM study_counters c "
            "WHERE c.study_id = studies.id), 0)"
        )
    op.drop_table("study_counters")
