"""Shadow sync between a core and the cloud: the messages, the document rules, the merge rule.

A thing whose name is in its group's ``sync_shadows`` setting (deployed with the group,
like V1's ``syncShadow``) has two copies of its shadow: the core's local one (what devices
and functions read and write on ``$aws/things/NAME/shadow/...``) and the cloud's (what the
API, the CLI and the console read and write). Each copy keeps its own ``version``.

Messages (QoS 1, ``"schema": 1``)::

    core → cloud  $hedgerow/cores/{core}/shadow-update   ShadowUpdate
    cloud → core  $hedgerow/cores/{core}/shadow          ShadowState

The core sends a ``ShadowUpdate`` through its durable spool after every local change of a
synced shadow (``desired`` and/or ``reported``: the whole section as it now is), and one
without sections for every synced thing after each connect (a request for the cloud's
copy). Each carries ``seq`` (the core's counter for that thing) and ``base_version`` (the
cloud version the core had applied when the change was made). The cloud answers every
update, and announces every change made in the cloud, with a ``ShadowState``: the cloud's
whole document, its version and the last ``seq`` it has processed from that core.

The merge rule (``merge_core_update``), which makes both copies converge:

- **reported: the device wins.** The core's ``reported`` replaces the cloud's.
- **desired: the cloud wins.** The core's ``desired`` is taken only if the core had seen
  the cloud's latest desired change (``base_version >= desired_version``, the cloud version
  at which the cloud itself last changed desired); otherwise it is rejected as a conflict
  (the AWS ``409 Version conflict``) and the cloud's desired stands.
- The cloud's version grows by one for every accepted change (as an AWS shadow's does).
- On the core, a ``ShadowState`` older than the version the core already applied is
  ignored; otherwise the cloud's desired becomes the local desired (devices get
  ``update/delta`` as for any update), and the cloud's reported becomes the local reported
  only when ``seq`` says the cloud has every local change (else the core's newer reported
  is still on its way up, and wins when it arrives).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from . import _wire
from .errors import InvalidMessage

#: The version of the shadow messages this release writes and reads.
SCHEMA: Final = 1
#: Largest shadow document (the AWS limit for a classic shadow's state).
MAX_DOCUMENT_BYTES: Final = 8 * 1024
#: Deepest nesting of ``desired`` or ``reported``.
MAX_DEPTH: Final = 6
SECTIONS: Final = ("desired", "reported")

Json = dict[str, Any]


def merge_state(target: Mapping[str, Any], patch: Mapping[str, Any]) -> Json:
    """``target`` with ``patch`` merged in, AWS style: objects merge key by key, a ``null``
    value deletes the key, an object left empty disappears. Neither input is changed."""
    out: Json = copy.deepcopy(dict(target))
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            current = out.get(key)
            merged = merge_state(current if isinstance(current, Mapping) else {}, value)
            if merged:
                out[key] = merged
            else:
                out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    return out


def delta(desired: Mapping[str, Any], reported: Mapping[str, Any]) -> Json:
    """The desired keys whose values differ from reported (recursively)."""
    out: Json = {}
    for key, want in desired.items():
        have = reported.get(key)
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            sub = delta(want, have)
            if sub:
                out[key] = sub
        elif want != have:
            out[key] = copy.deepcopy(want)
    return out


def patch_between(old: Mapping[str, Any], new: Mapping[str, Any]) -> Json:
    """The merge patch that turns ``old`` into ``new`` (``null`` for removed keys);
    empty when they are equal."""
    out: Json = {}
    for key in old.keys() - new.keys():
        out[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = patch_between(before, value)
            if sub:
                out[key] = sub
        elif value != before:
            out[key] = copy.deepcopy(value)
    return out


def depth(value: Any, level: int = 0) -> int:
    if isinstance(value, Mapping):
        return max([depth(v, level + 1) for v in value.values()], default=level + 1)
    return level


def check_section(value: object, field: str) -> Json:
    """A ``desired`` or ``reported`` object: JSON object, at most ``MAX_DEPTH`` deep."""
    if not isinstance(value, Mapping):
        raise InvalidMessage(field, "must be an object")
    if depth(value) > MAX_DEPTH:
        raise InvalidMessage(field, f"nested deeper than {MAX_DEPTH} levels")
    return dict(value)


def _optional_section(data: Mapping[str, Any], key: str) -> Json | None:
    value = data.get(key)
    return None if value is None else check_section(value, key)


@dataclass(frozen=True, slots=True)
class ShadowUpdate:
    """core → cloud on ``$hedgerow/cores/{core}/shadow-update``: a local change (the whole
    changed sections), or with neither section, a request for the cloud's copy."""

    thing: str
    seq: int
    base_version: int = 0
    desired: Json | None = None
    reported: Json | None = None
    schema: int = SCHEMA

    @classmethod
    def from_json(cls, payload: str | bytes) -> ShadowUpdate:
        data = _wire.load_object(payload, "shadow update")
        schema = _wire.check_schema(data, SCHEMA)
        return cls(
            thing=_wire.text(data, "thing"),
            seq=_wire.integer(data, "seq"),
            base_version=_wire.integer(data, "base_version"),
            desired=_optional_section(data, "desired"),
            reported=_optional_section(data, "reported"),
            schema=schema,
        )

    def to_json(self) -> bytes:
        body: Json = {
            "schema": self.schema,
            "thing": self.thing,
            "seq": self.seq,
            "base_version": self.base_version,
        }
        if self.desired is not None:
            body["desired"] = self.desired
        if self.reported is not None:
            body["reported"] = self.reported
        return _wire.dumps(body).encode()


@dataclass(frozen=True, slots=True)
class ShadowState:
    """cloud → core on ``$hedgerow/cores/{core}/shadow``: the cloud's copy of one thing's
    shadow, and ``seq``, the last update of this core the cloud has processed.
    ``rejected`` names the sections of that update the cloud refused (``["desired"]`` on
    a conflict); ``client_token`` is the API caller's ``clientToken``, when it gave one."""

    thing: str
    version: int
    desired: Json = field(default_factory=dict)
    reported: Json = field(default_factory=dict)
    seq: int = 0
    rejected: tuple[str, ...] = ()
    client_token: str | None = None
    schema: int = SCHEMA

    @classmethod
    def from_json(cls, payload: str | bytes) -> ShadowState:
        data = _wire.load_object(payload, "shadow state")
        schema = _wire.check_schema(data, SCHEMA)
        token = data.get("client_token")
        if token is not None and not isinstance(token, str):
            raise InvalidMessage("client_token", "must be a string")
        rejected = _wire.strings(data, "rejected")
        unknown = set(rejected) - set(SECTIONS)
        if unknown:
            raise InvalidMessage("rejected", f"unknown sections {sorted(unknown)}")
        return cls(
            thing=_wire.text(data, "thing"),
            version=_wire.integer(data, "version"),
            desired=check_section(data.get("desired", {}), "desired"),
            reported=check_section(data.get("reported", {}), "reported"),
            seq=_wire.integer(data, "seq"),
            rejected=rejected,
            client_token=token,
            schema=schema,
        )

    def to_json(self) -> bytes:
        body: Json = {
            "schema": self.schema,
            "thing": self.thing,
            "version": self.version,
            "desired": self.desired,
            "reported": self.reported,
            "seq": self.seq,
        }
        if self.rejected:
            body["rejected"] = list(self.rejected)
        if self.client_token is not None:
            body["client_token"] = self.client_token
        return _wire.dumps(body).encode()


@dataclass(frozen=True, slots=True)
class CloudShadow:
    """The cloud's copy of one shadow: its sections, ``version`` (grows by one per accepted
    change), ``desired_version`` (the version at which the cloud itself last changed
    desired) and, per core, the last ``seq`` processed from it."""

    thing: str
    desired: Json = field(default_factory=dict)
    reported: Json = field(default_factory=dict)
    version: int = 0
    desired_version: int = 0
    core_seqs: Mapping[str, int] = field(default_factory=dict)

    def document(self) -> Json:
        """The AWS-shaped document: ``state.desired``, ``state.reported``, ``state.delta``."""
        state: Json = {"desired": copy.deepcopy(self.desired)}
        state["reported"] = copy.deepcopy(self.reported)
        d = delta(self.desired, self.reported)
        if d:
            state["delta"] = d
        return {"state": state, "version": self.version}

    def state_for(
        self, core: str, rejected: tuple[str, ...] = (), client_token: str | None = None
    ) -> ShadowState:
        return ShadowState(
            self.thing,
            self.version,
            copy.deepcopy(self.desired),
            copy.deepcopy(self.reported),
            self.core_seqs.get(core, 0),
            rejected,
            client_token,
        )


@dataclass(frozen=True, slots=True)
class MergeOutcome:
    shadow: CloudShadow
    changed: bool
    rejected: tuple[str, ...] = ()


def merge_core_update(current: CloudShadow, core: str, update: ShadowUpdate) -> MergeOutcome:
    """The cloud's copy after ``update`` from ``core``, by the rule in this module's
    docstring (reported: device wins; desired: cloud wins unless the core had seen it)."""
    shadow = current
    changed = False
    rejected: tuple[str, ...] = ()
    if update.reported is not None and update.reported != shadow.reported:
        shadow = replace(shadow, reported=copy.deepcopy(update.reported))
        changed = True
    if update.desired is not None:
        if update.base_version < shadow.desired_version:
            rejected = ("desired",)
        elif update.desired != shadow.desired:
            shadow = replace(shadow, desired=copy.deepcopy(update.desired))
            changed = True
    if changed:
        shadow = replace(shadow, version=shadow.version + 1)
    seqs = dict(shadow.core_seqs)
    seqs[core] = update.seq  # the spool delivers in order: the last one processed
    return MergeOutcome(replace(shadow, core_seqs=seqs), changed, rejected)


def merge_cloud_update(
    current: CloudShadow,
    desired: Mapping[str, Any] | None,
    reported: Mapping[str, Any] | None,
    *,
    clear_desired: bool = False,
    clear_reported: bool = False,
) -> CloudShadow:
    """The cloud's copy after an update made in the cloud (API, CLI, console): each given
    section merged AWS style; a change to desired moves ``desired_version`` (a core's
    concurrent desired change is then a conflict, and the cloud's wins)."""
    new_desired = {} if clear_desired else dict(current.desired)
    if desired is not None:
        new_desired = merge_state(new_desired, desired)
    new_reported = {} if clear_reported else dict(current.reported)
    if reported is not None:
        new_reported = merge_state(new_reported, reported)
    desired_changed = new_desired != current.desired
    if not desired_changed and new_reported == current.reported:
        return current
    version = current.version + 1
    return replace(
        current,
        desired=new_desired,
        reported=new_reported,
        version=version,
        desired_version=version if desired_changed else current.desired_version,
    )
