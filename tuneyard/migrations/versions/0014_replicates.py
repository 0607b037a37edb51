"""replicates: folds and seeds of a trial as rows of their own, their scores and aggregates

A study with ``evaluation`` evaluates each trial (a configuration) on several replicates
(cross-validation folds, seeds). Each replicate is a trial row of its own with the trial's
``parent_id`` and its ``replicate`` index, so it runs as a job with its own attempts, lease,
reports and checkpoints; it shares its trial's number, so the number is unique among the
study's trials only (a partial index), and (parent, replicate) among replicates. A trial's
aggregate keeps its spread (``value_std``, ``value_stderr``). ``replicate_scores`` holds each
replicate's score at each resource level of the ladder, ``replicate_levels`` a trial's
aggregate there (the incumbent racing compares with is the best complete one). An
observation keeps its score's variance (``noise``): a trial's aggregate is an estimate, whose
squared standard error the GP takes as that point's noise.

The dashboard's covering index of trials becomes partial on trials (not replicates), which
every study-wide read of it asks for.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_TRIALS = sa.text("parent_id IS NULL")
# The type of ids, as the models declare it: BIGINT, INTEGER on SQLite (its rowid).
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_COVERING = ("study_id", "state", "number", "value", "resource")


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("parent_id", _ID, nullable=True))
        batch.add_column(sa.Column("replicate", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("value_std", sa.Float(), nullable=True))
        batch.add_column(sa.Column("value_stderr", sa.Float(), nullable=True))
        batch.create_foreign_key(
            "fk_trials_parent_id", "trials", ["parent_id"], ["id"], ondelete="CASCADE"
        )
        batch.drop_constraint("uq_trials_study_number", type_="unique")
    op.create_index(
        "uq_trials_study_number",
        "trials",
        ["study_id", "number"],
        unique=True,
        postgresql_where=_TRIALS,
        sqlite_where=_TRIALS,
    )
    op.create_index("uq_trials_parent_replicate", "trials", ["parent_id", "replicate"], unique=True)
    op.drop_index("ix_trials_study_state_number_value", table_name="trials")
    op.create_index(
        "ix_trials_study_state_number_value",
        "trials",
        list(_COVERING),
        postgresql_where=_TRIALS,
        sqlite_where=_TRIALS,
    )
    with op.batch_alter_table("observations") as batch:
        batch.add_column(sa.Column("noise", sa.Float(), nullable=False, server_default="0"))
    op.create_table(
        "replicate_scores",
        sa.Column(
            "parent_id",
            _ID,
            sa.ForeignKey("trials.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("resource", sa.Float(), primary_key=True),
        sa.Column("replicate", sa.Integer(), primary_key=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "replicate_levels",
        sa.Column(
            "parent_id",
            _ID,
            sa.ForeignKey("trials.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("resource", sa.Float(), primary_key=True),
        sa.Column(
            "study_id",
            _ID,
            sa.ForeignKey("studies.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("std", sa.Float(), nullable=False),
        sa.Column("stderr", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
    )
    op.create_index(
        "ix_replicate_levels_incumbent",
        "replicate_levels",
        ["study_id", "resource", "complete", "score"],
    )


def downgrade() -> None:
    op.drop_index("ix_replicate_levels_incumbent", table_name="replicate_levels")
    op.drop_table("replicate_levels")
    op.drop_table("replicate_scores")
    with op.batch_alter_table("observations") as batch:
        batch.drop_column("noise")
    op.drop_index("ix_trials_study_state_number_value", table_name="trials")
    op.create_index("ix_trials_study_state_number_value", "trials", list(_COVERING))
    op.drop_index("uq_trials_parent_replicate", table_name="trials")
    op.drop_index("uq_trials_study_number", table_name="trials")
    # Replicates share their trial's number: they go before the number is unique again.
    op.execute("DELETE FROM trials WHERE parent_id IS NOT NULL")
    with op.batch_alter_table("trials") as batch:
        batch.create_unique_constraint("uq_trials_study_number", ["study_id", "number"])
        batch.drop_constraint("fk_trials_parent_id", type_="foreignkey")
        batch.drop_column("value_stderr")
        batch.drop_column("value_std")
        batch.drop_column("replicate")
        batch.drop_column("parent_id")
