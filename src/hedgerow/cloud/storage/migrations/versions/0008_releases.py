"""releases of Hedgerow for over-the-air updates of cores

A release is the wheels of one Hedgerow version (the release's own and the dependencies a
gateway without internet needs), each an artifact by sha256, and the manifest the cloud's
deployment key signed. A group names the release its cores run in its settings
(``core_version``, JSON: no column).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("version", sa.String(length=64), primary_key=True),
        sa.Column("wheels", sa.JSON(), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("releases")
