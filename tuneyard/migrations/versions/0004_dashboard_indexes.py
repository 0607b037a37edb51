"""dashboard indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The dashboard's version stamp of a study: max(updated_at) of its trials, one index probe.
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index("ix_trials_study_updated", ["study_id", "updated_at"], unique=False)
        # History buckets, counts by state and the resource trained, from the index alone.
        batch_op.create_index(
            "ix_trials_study_state_number_value",
            ["study_id", "state", "number", "value", "resource"],
            unique=False,
        )
    # A worker's busy fraction: its attempts of the last hour, one index range per worker.
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_attempts_worker_started", ["worker", "started_at", "ended_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_attempts_worker_started")
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index("ix_trials_study_state_number_value")
        batch_op.drop_index("ix_trials_study_updated")
