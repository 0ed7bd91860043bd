"""secrets at rest: sealed group CA keys, stream tickets

Group CA private keys move from ``key_pem`` (clear PEM) to ``key_sealed`` (envelope
encryption under a key-encryption key kept outside the database). The migration only
makes room: it cannot see the KEK, so the cloud seals the existing clear keys on its
first start (``hedgerow.cloud.group_ca_keys.seal_clear_keys``) and empties ``key_pem``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("group_cas", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_sealed", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("kek_id", sa.String(length=64), nullable=True))
        batch_op.alter_column("key_pem", existing_type=sa.Text(), nullable=True)
    op.create_table(
        "stream_tickets",
        sa.Column("ticket_sha256", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("ticket_sha256"),
    )
    with op.batch_alter_table("stream_tickets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stream_tickets_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    # sealed keys cannot be put back in clear here (no KEK): after a downgrade, rotate the
    # group CAs (`hedgerow cloud group rotate-ca`) so each group has a CA the old code can use
    with op.batch_alter_table("stream_tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stream_tickets_expires_at"))
    op.drop_table("stream_tickets")
    with op.batch_alter_table("group_cas", schema=None) as batch_op:
        batch_op.drop_column("kek_id")
        batch_op.drop_column("key_sealed")
