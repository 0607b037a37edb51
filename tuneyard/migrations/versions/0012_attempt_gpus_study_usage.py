"""attempts record their GPUs and wall time; studies count the GPU and worker time used

An attempt stores the GPUs its worker ran it on and, when it ends, its wall time; a study
keeps the sums over its ended attempts (GPU-seconds, worker-seconds) as counters. Attempts
that ended before this revision get their wall time from their start and end, and their
studies' counters the sum of it (as CPU time: which GPUs they used was not recorded).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("gpus", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("gpu_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("wall_seconds", sa.Float(), nullable=True))
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("gpu_seconds", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("worker_seconds", sa.Float(), nullable=False, server_default="0")
        )
    if op.get_bind().dialect.name == "postgresql":
        span = "GREATEST(0, EXTRACT(EPOCH FROM (ended_at - started_at)))"
    else:
        span = "MAX(0, (julianday(ended_at) - julianday(started_at)) * 86400.0)"
    op.execute(f"UPDATE attempts SET wall_seconds = {span} WHERE ended_at IS NOT NULL")
    op.execute(
        "UPDATE studies SET worker_seconds = COALESCE((SELECT SUM(attempts.wall_seconds) "
        "FROM attempts JOIN trials ON trials.id = attempts.trial_id "
        "WHERE trials.study_id = studies.id), 0)"
    )


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("worker_seconds")
        batch.drop_column("gpu_seconds")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("wall_seconds")
        batch.drop_column("gpu_count")
        batch.drop_column("gpus")
