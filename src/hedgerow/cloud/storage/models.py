"""SQLAlchemy 2 tables of the cloud (the Alembic migrations create exactly these)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def _utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class GroupRow(Base):
    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ca_rotation_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)
    #: ``{"site": "berlin"}``: what a rollout selects groups by
    labels: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    #: ``{"core": LEVEL | None, "functions": {NAME: LEVEL}}``: set from the cloud, sent to
    #: the group's core retained (``hedgerow.contract.logs.LogLevels``), no deployment
    log_levels: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class GroupCARow(Base):
    __tablename__ = "group_cas"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64))
    cert_pem: Mapped[str] = mapped_column(Text)
    #: only in databases from before 0002, until the first start seals it (then NULL)
    key_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the CA's private key, envelope-encrypted (``hedgerow.cloud.envelope``)
    key_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    kek_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    not_after: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (UniqueConstraint("group_id", "generation", name="uq_group_cas_generation"),)


class CoreRow(Base):
    __tablename__ = "cores"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), unique=True)
    endpoints: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)
    last_seen: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ThingRow(Base):
    __tablename__ = "things"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    attributes: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)


class GroupThingRow(Base):
    __tablename__ = "group_things"
    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    thing_id: Mapped[int] = mapped_column(
        ForeignKey("things.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class CertificateRow(Base):
    __tablename__ = "certificates"
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(128), index=True)
    serial: Mapped[str] = mapped_column(String(64))
    pem: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    not_after: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
    revoke_reason: Mapped[str] = mapped_column(Text, default="")


class ArtifactRow(Base):
    __tablename__ = "artifacts"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)


class ReleaseRow(Base):
    """A Hedgerow release cores can be updated to: its wheels (artifacts by sha256) and
    the manifest the cloud's deployment key signed."""

    __tablename__ = "releases"
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    wheels: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    manifest: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)


class FunctionRow(Base):
    __tablename__ = "functions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    latest_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)
    __table_args__ = (UniqueConstraint("group_id", "name", name="uq_functions_group_name"),)


class FunctionVersionRow(Base):
    __tablename__ = "function_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    function_id: Mapped[int] = mapped_column(ForeignKey("functions.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifact_sha256: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"))
    artifact_size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)
    __table_args__ = (UniqueConstraint("function_id", "version", name="uq_function_versions"),)


class SubscriptionRow(Base):
    __tablename__ = "subscriptions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(160))
    topic: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(String(160))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)


class DeploymentRow(Base):
    __tablename__ = "deployments"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    core: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    document: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    #: the earlier deployment a redeployment repeats (None for new and reset)
    restores: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: unfinished by then, the deployment is failed (None: before 0006, or exported)
    deadline_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RolloutRow(Base):
    """A staged rollout: ``plan`` is the whole state of ``hedgerow.cloud.rollout_plan``."""

    __tablename__ = "rollouts"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: bumped by every write, which is a compare-and-set on it
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: the cloud process driving it, until when (several ``serve`` on one database)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class DeploymentEventRow(Base):
    __tablename__ = "deployment_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        UniqueConstraint("deployment_id", "status", name="uq_deployment_events_status"),
    )


class MessageRow(Base):
    """Telemetry. On PostgreSQL (migration 0011) the table is partitioned by day on ``ts``
    and its primary key is ``(id, ts)``; ``id`` stays unique (one sequence)."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    core: Mapped[str] = mapped_column(String(128))
    ts: Mapped[float] = mapped_column(Float)
    __table_args__ = (Index("ix_messages_ts", "ts"), Index("ix_messages_topic", "topic"))


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)


class StreamTicketRow(Base):
    """A single-use ticket for the live stream (only its SHA-256 is stored)."""

    __tablename__ = "stream_tickets"
    ticket_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class SecretRow(Base):
    """A group's secret (its value lives in ``secret_versions``, sealed)."""

    __tablename__ = "secrets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)
    __table_args__ = (UniqueConstraint("group_id", "name", name="uq_secrets_group_name"),)


class SecretVersionRow(Base):
    """One version: the value as an envelope blob under the KEK named by ``kek_id``."""

    __tablename__ = "secret_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_id: Mapped[int] = mapped_column(ForeignKey("secrets.id", ondelete="CASCADE"), index=True)
    version_id: Mapped[str] = mapped_column(String(36), unique=True)
    stages: Mapped[list[str]] = mapped_column(JSON)
    binary: Mapped[bool] = mapped_column(Boolean, default=False)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    kek_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)


class ShadowRow(Base):
    """The cloud's copy of a synced thing shadow (``hedgerow.contract.shadow.CloudShadow``)."""

    __tablename__ = "shadows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    thing_id: Mapped[int] = mapped_column(ForeignKey("things.id", ondelete="CASCADE"), unique=True)
    desired: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reported: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=0)
    #: the version at which the cloud itself last changed desired (the conflict rule)
    desired_version: Mapped[int] = mapped_column(Integer, default=0)
    #: per core: the last ``seq`` of its updates the cloud processed
    core_seqs: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)


class DashboardRow(Base):
    """A saved dashboard of a group: named charts of telemetry topics (console)."""

    __tablename__ = "dashboards"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    charts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)
    __table_args__ = (UniqueConstraint("group_id", "name", name="uq_dashboards_group_name"),)


class SupportBundleRow(Base):
    """A support bundle asked of a core, and once it uploaded it, the bundle."""

    __tablename__ = "support_bundles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(80), unique=True)
    core_id: Mapped[int] = mapped_column(ForeignKey("cores.id", ondelete="CASCADE"), index=True)
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)
    received_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: the request waits for an offline core until then (NULL: rows from before 0010)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ClaimTemplateRow(Base):
    """How a claimed device is registered: its kind, group and name patterns, attributes."""

    __tablename__ = "claim_templates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    group_pattern: Mapped[str] = mapped_column(String(160))
    name_pattern: Mapped[str] = mapped_column(String(160))
    attributes: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    #: the next ``{seq}``
    next_seq: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)


class ClaimRow(Base):
    """A claim credential: its certificate (the key went to the operator, never stored)."""

    __tablename__ = "claims"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    template_id: Mapped[int] = mapped_column(
        ForeignKey("claim_templates.id", ondelete="CASCADE"), index=True
    )
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    cert_pem: Mapped[str] = mapped_column(Text)
    max_uses: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)


class ClaimUseRow(Base):
    """One attempt to provision with a claim, admitted or refused (the audit)."""

    __tablename__ = "claim_uses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    claim_id: Mapped[str] = mapped_column(ForeignKey("claims.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    serial: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    peer: Mapped[str] = mapped_column(String(128), default="")


class DeviceCARow(Base):
    """A device CA the operator registered: certificates it signed are admitted just in
    time through the template (``hedgerow cloud ca register``)."""

    __tablename__ = "device_cas"
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(Text)
    cert_pem: Mapped[str] = mapped_column(Text)
    template_id: Mapped[int] = mapped_column(
        ForeignKey("claim_templates.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ExternalCertificateRow(Base):
    """A device certificate the cloud did not issue, registered by the operator
    (``thing create --cert``): the core trusts it as its own anchor."""

    __tablename__ = "external_certificates"
    fingerprint: Mapped[str] = mapped_column(
        ForeignKey("certificates.fingerprint", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)


class LogRow(Base):
    """One log record a core sent (its own, or a function's: ``source``)."""

    __tablename__ = "logs"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    group: Mapped[str] = mapped_column(String(128))
    core: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(160))  # "core" or "function:NAME"
    level: Mapped[int] = mapped_column(Integer)
    ts: Mapped[float] = mapped_column(Float)
    logger: Mapped[str] = mapped_column(String(256))
    message: Mapped[str] = mapped_column(Text)
    __table_args__ = (
        Index("ix_logs_group_id", "group", "id"),
        Index("ix_logs_ts", "ts"),
    )


class AlertRuleRow(Base):
    __tablename__ = "alert_rules"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    #: the rule's numbers (seconds, a rate, a fraction, days), as the kind reads them
    threshold: Mapped[float] = mapped_column(Float)
    group: Mapped[str | None] = mapped_column(String(128), nullable=True)  # None: every group
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)


class AlertWebhookRow(Base):
    __tablename__ = "alert_webhooks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    url: Mapped[str] = mapped_column(Text)
    #: the HMAC-SHA256 key the X-Hedgerow-Signature header is made with
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)


class AlertEventRow(Base):
    """An alert that fired (and, once it cleared, when)."""

    __tablename__ = "alert_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(256))  # core, or core/function
    group: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    fired_at: Mapped[float] = mapped_column(Float, index=True)
    resolved_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: webhook deliveries: name → "delivered" | "failed: reason"
    deliveries: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TelemetryExportRow(Base):
    """One export target's cursor: the last message id it acknowledged, and its record."""

    __tablename__ = "telemetry_exports"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: None: the target was added while no message was stored
    cursor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    exported: Mapped[int] = mapped_column(BigInteger, default=0)
    lost: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(BigInteger, default=0)
    #: failures since the last success (the retry schedule's attempt)
    failing: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    last_success_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utc)
