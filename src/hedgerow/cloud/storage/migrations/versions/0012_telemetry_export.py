"""telemetry export: one cursor per export target

``telemetry_exports`` holds, per target named in ``[[telemetry.export]]``, the id of the
last message the target acknowledged (advanced only after its acknowledgement, compare
and set), how many messages it got, how many ids were skipped as lost (deleted by
retention before it got them), and its failures.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 23:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telemetry_exports",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=True),
        sa.Column("exported", sa.BigInteger(), nullable=False),
        sa.Column("lost", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("failing", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("telemetry_exports")
