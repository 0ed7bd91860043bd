"""log levels set from the cloud, support bundle requests that wait for their core

A group's log levels (``{"core": LEVEL | null, "functions": {NAME: LEVEL}}``) are kept with
the group and sent to its core, retained, without a deployment; a support bundle request
waits for an offline core until ``expires_at`` (rows from before: counted from
``requested_at`` with the default wait).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 20:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("log_levels", sa.JSON(), nullable=True))
    with op.batch_alter_table("support_bundles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("support_bundles", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.drop_column("log_levels")
