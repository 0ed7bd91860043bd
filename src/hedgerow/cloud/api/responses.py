"""Response models: the envelopes the API answers with (entities are in ``to_json``
form), serialized by ``respond`` and described in the OpenAPI document."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from hedgerow.cloud.api.parsing import UNSET, Unset, described

Entity = dict[str, Any]


def respond(model: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    """``model`` as JSON (fields left ``UNSET`` are left out)."""
    body = {
        f.name: getattr(model, f.name)
        for f in dataclasses.fields(model)
        if getattr(model, f.name) is not UNSET
    }
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass(frozen=True)
class Items:
    """A list: its items and how many there are."""

    items: list[Entity]
    count: int


@dataclass(frozen=True)
class Health:
    status: str
    version: str


@dataclass(frozen=True)
class Deleted:
    deleted: str | int = described("the name (or id) of what was deleted")


@dataclass(frozen=True)
class Detached:
    detached: str = described("the thing's name")


@dataclass(frozen=True)
class Revoked:
    revoked: list[str] = described("the fingerprints revoked")


@dataclass(frozen=True)
class GroupCAs:
    """The group's CAs, current first."""

    items: list[Entity]


@dataclass(frozen=True)
class ThingCreated:
    """A thing with its certificate; ``private_key`` is null when the device sent a CSR."""

    thing: Entity
    certificate: str
    private_key: str | None
    root_ca: str


@dataclass(frozen=True)
class CoreCreated:
    """A core and its provisioning bundle (base64 of ``bundle_name``, a tar.gz)."""

    core: Entity
    bundle: str
    bundle_name: str


@dataclass(frozen=True)
class ArtifactStored:
    sha256: str
    size: int


@dataclass(frozen=True)
class Published:
    topic: str
    bytes: int


@dataclass(frozen=True)
class StreamTicket:
    """A single-use ticket: open ``url`` (the live stream) once, within ``expires_in`` s."""

    ticket: str
    purpose: str
    expires_in: float
    url: str


@dataclass(frozen=True)
class FleetApplied:
    groups: list[str]
    functions: int
    subscriptions: int
    deployments: list[Entity] | Unset = described("when deploy was asked", default=UNSET)
