"""Deployment documents: what a snapshot becomes, and the status a core reports (pure).

The shapes are the contract's (``hedgerow.contract.deployment``, documented in
``docs/architecture.md``, "Cloud ⇄ core"): the document is the exact JSON text the Ed25519
signature covers; ``parse_status_report`` turns a core's ``deployment-status`` message into
checked values. Contract errors become ``InvalidInput`` here, naming the field.
"""

from __future__ import annotations

import datetime as dt
import secrets

from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.storage.repository import Snapshot
from hedgerow.contract.deployment import (
    MAX_DETAIL,
    DeployedFunction,
    DeploymentDocument,
    DeploymentNotification,
    Route,
    StatusReport,
)
from hedgerow.contract.errors import ContractError

__all__ = [
    "MAX_DETAIL",
    "StatusReport",
    "build_document",
    "new_deployment_id",
    "notification",
    "parse_status_report",
]


def new_deployment_id() -> str:
    return "d-" + secrets.token_hex(8)


def build_document(snapshot: Snapshot, deployment_id: str, created_at: dt.datetime) -> str:
    functions = []
    for version in snapshot.functions:
        try:
            functions.append(DeployedFunction.from_json(version.to_document()))
        except ContractError as exc:  # stored before the contract's limits applied
            raise InvalidInput(
                f"function {version.name!r} version {version.version} breaks a limit the "
                f"core enforces ({exc}): update the function, then deploy again",
                field=exc.field,
            ) from exc
    document = DeploymentDocument(
        deployment_id=deployment_id,
        group=snapshot.group.name,
        core=snapshot.core,
        created_at=created_at.isoformat(),
        things=tuple(snapshot.things),
        functions=tuple(functions),
        subscriptions=tuple(Route(s.source, s.topic, s.target) for s in snapshot.subscriptions),
        open_broker=bool(snapshot.group.settings.get("open_broker", False)),
    )
    return document.to_json()


def notification(deployment_id: str) -> bytes:
    """The payload of ``$hedgerow/cores/{core}/deployments``."""
    return DeploymentNotification(deployment_id).to_json()


def parse_status_report(payload: bytes) -> StatusReport:
    try:
        return StatusReport.from_json(payload)
    except ContractError as exc:
        raise InvalidInput(f"deployment status: {exc}", field=exc.field) from exc
