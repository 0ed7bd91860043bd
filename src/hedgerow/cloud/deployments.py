"""Deployment documents: what a snapshot becomes, and the status a core reports (pure).

The document is the exact JSON text the Ed25519 signature covers (see
``docs/architecture.md``, "Cloud ⇄ core"); ``parse_status_report`` turns a core's
``deployment-status`` message into checked values.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hedgerow.cloud.domain import DeploymentStatus
from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.storage.repository import Snapshot
from hedgerow.connectors import ConnectorConfigError, ConnectorSpec, validate

MAX_DETAIL = 4096


def new_deployment_id() -> str:
    return "d-" + secrets.token_hex(8)


def connector_entries(frozen: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A snapshot's connectors as the document carries them, validated again: one stored by
    an older release that no longer passes fails the deployment, naming it and the field."""
    entries = []
    for entry in sorted(frozen, key=lambda e: str(e.get("name"))):
        spec = ConnectorSpec.from_json(entry)
        try:
            validate(spec.kind, spec.name, spec.config)
        except ConnectorConfigError as exc:
            raise InvalidInput(
                f"connector {spec.name!r}: {exc} (fix it with hedgerow cloud connector update)",
                field=f"connectors.{spec.name}.{exc.field}",
            ) from exc
        entries.append(spec.to_json())
    return entries


def build_document(
    snapshot: Snapshot,
    deployment_id: str,
    created_at: dt.datetime,
    sealed_secrets: Sequence[Mapping[str, Any]] = (),
) -> str:
    """``sealed_secrets``: the versions the functions declare, each sealed to the core's key."""
    document: dict[str, Any] = {
        "deployment_id": deployment_id,
        "group": snapshot.group.name,
        "core": snapshot.core,
        "created_at": created_at.isoformat(),
        "things": list(snapshot.things),
        "functions": [f.to_document() for f in snapshot.functions],
        "subscriptions": [
            {"source": s.source, "topic": s.topic, "target": s.target}
            for s in snapshot.subscriptions
        ],
        "settings": {"open_broker": bool(snapshot.group.settings.get("open_broker", False))},
    }
    connectors = connector_entries(snapshot.connectors)
    if connectors:
        document["connectors"] = connectors
    if sealed_secrets:
        document["secrets"] = [dict(entry) for entry in sealed_secrets]
    return json.dumps(document, separators=(",", ":"))


@dataclass(frozen=True)
class StatusReport:
    deployment_id: str
    status: DeploymentStatus
    detail: str


def parse_status_report(payload: bytes) -> StatusReport:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"deployment status is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput("deployment status must be a JSON object")
    deployment_id = data.get("deployment_id")
    if not isinstance(deployment_id, str) or not deployment_id:
        raise InvalidInput("deployment status lacks deployment_id")
    try:
        status = DeploymentStatus(str(data.get("status")))
    except ValueError as exc:
        allowed = ", ".join(s.value for s in DeploymentStatus)
        raise InvalidInput(
            f"unknown deployment status {data.get('status')!r}: use {allowed}"
        ) from exc
    detail = data.get("detail") or ""
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    return StatusReport(deployment_id, status, detail[:MAX_DETAIL])
