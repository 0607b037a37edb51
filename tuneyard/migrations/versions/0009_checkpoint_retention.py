"""checkpoint retention: when the sweep looks at a trial's checkpoints, and the models by value

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_MODELS = "state = 'completed' AND checkpoint IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("sweep_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_trials_sweep_at", "trials", ["sweep_at"], unique=False)
    op.create_index(
        "ix_trials_study_models",
        "trials",
        ["study_id", "value", "id"],
        unique=False,
        postgresql_where=sa.text(_MODELS),
        sqlite_where=sa.text(_MODELS),
    )
    # Checkpoints of trials that ended before this revision are looked at once.
    op.execute(
        "UPDATE trials SET sweep_at = ended_at "
        "WHERE checkpoint IS NOT NULL AND state IN ('stopped', 'failed', 'completed')"
    )


def downgrade() -> None:
    op.drop_index("ix_trials_study_models", table_name="trials")
    op.drop_index("ix_trials_sweep_at", table_name="trials")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("sweep_at")
