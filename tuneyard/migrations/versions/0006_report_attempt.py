"""reports carry the attempt that stored them

A later attempt's report of a step replaces an earlier attempt's, so a report's attempt is
stored with it. Reports already stored are counted as their trial's current attempt's: a
worker of that attempt that repeats one of them still gets the stored answer.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"))
    op.execute(
        "UPDATE reports SET attempt = (SELECT CASE WHEN trials.attempts > 0 "
        "THEN trials.attempts ELSE 1 END FROM trials WHERE trials.id = reports.trial_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("attempt")
