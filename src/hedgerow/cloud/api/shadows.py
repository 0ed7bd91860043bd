"""``/api/v1/things/{thing}/shadow``: the cloud's copy of a thing's shadow (shadow sync).

The body of an update is the AWS shadow request: ``{"state": {"desired": {..},
"reported": {..}}, "version": N, "clientToken": ".."}`` — sections merged key by key, a
``null`` value deletes a key, a ``null`` section clears it; with ``version``, a shadow at
another version is a 409. The cores syncing the thing hear the change at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud.api.edge import ApiContext, Operation, path_param
from hedgerow.cloud.api.parsing import checked, described
from hedgerow.cloud.api.responses import respond
from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.services import ShadowChange
from hedgerow.contract.errors import ContractError
from hedgerow.contract.shadow import SECTIONS, CloudShadow, check_section

SHADOW = "/api/v1/things/{thing}/shadow"


def shadow_state(value: object) -> dict[str, Any]:
    """``{"desired": object | null, "reported": object | null}``, at least one of them."""
    if not isinstance(value, Mapping) or not value:
        raise InvalidInput(
            'state must be an object with "desired" and/or "reported"', field="state"
        )
    unknown = set(value) - set(SECTIONS)
    if unknown:
        raise InvalidInput(
            f"state has an unknown section {sorted(unknown)[0]!r}: use desired or reported",
            field="state",
        )
    for section in SECTIONS:
        if value.get(section) is not None:
            try:
                check_section(value[section], section)
            except ContractError as exc:
                raise InvalidInput(f"state.{exc}", field=f"state.{section}") from exc
    return dict(value)


def version_number(value: object) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise InvalidInput("version must be a non-negative integer", field="version")
    return value


@dataclass(frozen=True)
class UpdateShadow:
    """An AWS-style shadow update."""

    state: dict[str, Any] = checked(
        shadow_state, doc="desired and/or reported: merged; null deletes a key or a section"
    )
    version: int | None = checked(
        version_number, default=None, doc="the version you read (409 if it moved)"
    )
    client_token: str | None = described(
        "echoed to the core (and its devices)", default=None, aliases=("clientToken",)
    )

    def change(self) -> ShadowChange:
        desired = self.state.get("desired")
        reported = self.state.get("reported")
        return ShadowChange(
            desired=desired,
            reported=reported,
            clear_desired="desired" in self.state and desired is None,
            clear_reported="reported" in self.state and reported is None,
            version=self.version,
            client_token=self.client_token,
        )


@dataclass(frozen=True)
class ShadowView:
    thing: str
    version: int = described("grows by one with every accepted change")
    state: dict[str, Any] = described("desired, reported and delta (desired keys not reported)")
    synced_by: list[str] = described("the cores that sync this shadow (the group setting)")

    @classmethod
    def of(cls, shadow: CloudShadow, cores: list[str]) -> ShadowView:
        document = shadow.document()
        return cls(shadow.thing, shadow.version, document["state"], cores)


async def get_shadow(ctx: ApiContext, request: Request) -> Response:
    thing = path_param(request, "thing")
    shadow = await ctx.services.shadows.get(thing)
    return respond(ShadowView.of(shadow, await ctx.services.shadows.synced_by(thing)))


async def update_shadow(ctx: ApiContext, request: Request, body: UpdateShadow) -> Response:
    thing = path_param(request, "thing")
    shadow = await ctx.services.shadows.update(thing, body.change())
    return respond(ShadowView.of(shadow, await ctx.services.shadows.synced_by(thing)))


OPERATIONS = [
    Operation("GET", SHADOW, "Show a thing's shadow (the cloud's copy)", get_shadow,
              response=ShadowView),
    Operation("PATCH", SHADOW, "Update a thing's shadow (reaches the cores that sync it)",
              update_shadow, body=UpdateShadow, response=ShadowView),
]  # fmt: skip
