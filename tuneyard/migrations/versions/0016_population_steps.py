"""population_steps: population-based training's record, one row per member and boundary

A pbt or pb2 study's member pauses at every interval boundary; the row written then holds the
score it reached there, the checkpoint it saved (what a member that clones it resumes from),
the parameters it trained with over the interval that ended there, and the step's outcome:
kept, or exploited (the donor, the donor's score, the parameters from here on, the donor's
schedule up to the clone, and why). A trial's rows are its parameter history per interval and
its lineage; the study's latest rows per member are the population a step ranks against,
read through (study_id, resource).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# The type of ids, as the models declare it: BIGINT, INTEGER on SQLite (its rowid).
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "population_steps",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("study_id", _ID, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("trial_id", _ID, sa.ForeignKey("trials.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("resource", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("score_from", sa.Float(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("new_params", sa.JSON(), nullable=False),
        sa.Column("donor_id", _ID, nullable=True),
        sa.Column("donor_number", sa.Integer(), nullable=True),
        sa.Column("donor_score", sa.Float(), nullable=True),
        sa.Column("inherited", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("trial_id", "resource", name="uq_population_steps_trial_resource"),
    )
    op.create_index(
        "ix_population_steps_study_resource", "population_steps", ["study_id", "resource"]
    )


def downgrade() -> None:
    op.drop_index("ix_population_steps_study_resource", table_name="population_steps")
    op.drop_table("population_steps")
