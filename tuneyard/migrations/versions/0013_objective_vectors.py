"""several objectives and constraints: vectors on trials, rung entries and observations

A study with several objectives (or with constraints) records, next to the first objective's
value that ``value``/``score`` keep holding: on a trial, every objective's latest value and
its total constraint violation with the reason it is infeasible; on a rung entry and an
observation, the minimised objective vector and the total violation. Rows of single-objective
studies leave them empty (NULL, violation 0).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("values", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("violation", sa.Float(), nullable=True))
        batch.add_column(sa.Column("infeasible", sa.Text(), nullable=True))
    for table in ("rung_entries", "observations"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("scores", sa.JSON(), nullable=True))
            batch.add_column(sa.Column("violation", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in ("observations", "rung_entries"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("violation")
            batch.drop_column("scores")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("infeasible")
        batch.drop_column("violation")
        batch.drop_column("values")
