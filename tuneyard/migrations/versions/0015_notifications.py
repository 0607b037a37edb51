"""notifications: a study's webhook events, an outbox the dispatcher posts from

A study with ``notifications`` keeps the secret its posts are signed with
(``webhook_secret``) and the best value its completed trials have had (``notified_best``), so
a new best is told from the study's row. ``notifications`` holds each event to post, with
the URL to post it to: written in the transaction where it happened, posted after it, its
attempts, the next one's time and its last error kept. The due rows are read through
(delivered_at, next_attempt_at).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# The type of ids, as the models declare it: BIGINT, INTEGER on SQLite (its rowid).
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.String(64), nullable=True))
        batch.add_column(sa.Column("notified_best", sa.Float(), nullable=True))
    op.create_table(
        "notifications",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "study_id",
            _ID,
            sa.ForeignKey("studies.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index("ix_notifications_due", "notifications", ["delivered_at", "next_attempt_at"])
    op.create_index("ix_notifications_study_id", "notifications", ["study_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_notifications_study_id", table_name="notifications")
    op.drop_index("ix_notifications_due", table_name="notifications")
    op.drop_table("notifications")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("notified_best")
        batch.drop_column("webhook_secret")
