"""study code: the digest of the code archive a study carries

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("code_digest", sa.String(length=64), nullable=True))
    op.create_index("ix_studies_code_digest", "studies", ["code_digest"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_studies_code_digest", table_name="studies")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("code_digest")
