"""group labels, staged rollouts, deployment deadlines

Groups carry labels (``{"site": "berlin"}``) a rollout selects by; a rollout's whole
state (its waves, each target's deployments and verdicts) is one JSON document driven by
the cloud's rollout job, so it survives a restart; every deployment has a deadline after
which, unfinished, it is failed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 17:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("labels", sa.JSON(), nullable=True))
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_rollouts_state", "rollouts", ["state"])


def downgrade() -> None:
    op.drop_index("ix_rollouts_state", table_name="rollouts")
    op.drop_table("rollouts")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("deadline_at")
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.drop_column("labels")
