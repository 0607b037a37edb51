"""notes and tags on studies and trials; the indexes of the dashboard's timeline

A study's tags are rows of ``study_tags`` (the study list filters by tag through its index); a
trial's are a JSON list on the trial. The timeline of a time window reads the attempts that
started in it (``ix_attempts_started``) and those that ended in it or run still
(``ix_attempts_ended``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))
    op.create_table(
        "study_tags",
        sa.Column("study_id", sa.BigInteger(), nullable=False),
        sa.Column("tag", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
            name=op.f("fk_study_tags_study_id_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("study_id", "tag", name=op.f("pk_study_tags")),
    )
    op.create_index("ix_study_tags_tag_study", "study_tags", ["tag", "study_id"], unique=False)
    op.create_index("ix_attempts_started", "attempts", ["started_at", "id"], unique=False)
    op.create_index("ix_attempts_ended", "attempts", ["ended_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_attempts_ended", table_name="attempts")
    op.drop_index("ix_attempts_started", table_name="attempts")
    op.drop_index("ix_study_tags_tag_study", table_name="study_tags")
    op.drop_table("study_tags")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("tags")
        batch.drop_column("note")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("note")
