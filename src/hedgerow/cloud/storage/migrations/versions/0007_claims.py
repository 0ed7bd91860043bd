"""provisioning by claim and registered device CAs

Claim templates (kind, group and name patterns), claims (certificate, uses, expiry,
revocation), every use of a claim (the audit), and the device CAs whose certificates are
admitted just in time, and the device certificates registered as they are.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 17:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claim_templates",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=128), nullable=False, unique=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("group_pattern", sa.String(length=160), nullable=False),
        sa.Column("name_pattern", sa.String(length=160), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "claims",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column(
            "template_id",
            sa.Integer(),
            sa.ForeignKey("claim_templates.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("fingerprint", sa.String(length=64), nullable=False, unique=True),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_claims_template_id", "claims", ["template_id"])
    op.create_table(
        "claim_uses",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "claim_id",
            sa.String(length=64),
            sa.ForeignKey("claims.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("peer", sa.String(length=128), nullable=False),
    )
    op.create_index("ix_claim_uses_claim_id", "claim_uses", ["claim_id"])
    op.create_table(
        "device_cas",
        sa.Column("fingerprint", sa.String(length=64), primary_key=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column(
            "template_id",
            sa.Integer(),
            sa.ForeignKey("claim_templates.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_device_cas_template_id", "device_cas", ["template_id"])
    op.create_table(
        "external_certificates",
        sa.Column(
            "fingerprint",
            sa.String(length=64),
            sa.ForeignKey("certificates.fingerprint", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("external_certificates")
    op.drop_index("ix_device_cas_template_id", table_name="device_cas")
    op.drop_table("device_cas")
    op.drop_index("ix_claim_uses_claim_id", table_name="claim_uses")
    op.drop_table("claim_uses")
    op.drop_index("ix_claims_template_id", table_name="claims")
    op.drop_table("claims")
    op.drop_table("claim_templates")
