"""The local shadow service: per-thing shadow documents with the AWS IoT shadow semantics.

Devices reach it over MQTT (the core routes ``$aws/things/+/shadow/#`` here and publishes
the replies :meth:`ShadowService.handle` returns); functions reach it directly
(``get``/``update``/``delete``) or, for Greengrass V1 functions, through ``greengrasssdk``.

A document is ``{"state": {"desired": {..}, "reported": {..}}, "metadata": {..},
"version": N, "timestamp": epoch-seconds}``. An update merges each section (a ``null``
value deletes a key, ``"desired": null`` clears the section), bumps the version, and
yields ``update/accepted``, ``update/documents`` and, when desired and reported differ,
``update/delta``. A request carrying ``version`` that is not the current one is rejected
with 409. The document logic is pure; the only I/O is an optional JSON file rewritten
atomically after each change.

Sync with the cloud's copy (things in the deployment's ``sync_shadows``) is
``core/shadow_sync.py``: it watches every accepted change (``watch``) and applies the
cloud's changes through ``apply_synced`` (an update like any other — merged, versioned,
with delta — that the watcher is not told about, so it does not go back up).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hedgerow.contract.shadow import MAX_DEPTH, MAX_DOCUMENT_BYTES, delta
from hedgerow.contract.shadow import depth as _depth

log = logging.getLogger(__name__)

OPERATIONS: Final = ("get", "update", "delete")
_TOPIC: Final = re.compile(r"^\$aws/things/([^/#+]+)/shadow/(get|update|delete)$")

Json = dict[str, Any]


class ShadowError(Exception):
    """Root of the shadow service's errors."""


class ShadowRejected(ShadowError):
    """A request was rejected; ``code`` is the AWS-style HTTP status code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class _Shadow:
    desired: Json = field(default_factory=dict)
    reported: Json = field(default_factory=dict)
    meta_desired: Json = field(default_factory=dict)
    meta_reported: Json = field(default_factory=dict)
    version: int = 0
    exists: bool = False

    def state(self) -> Json:
        state: Json = {}
        if self.desired:
            state["desired"] = copy.deepcopy(self.desired)
        if self.reported:
            state["reported"] = copy.deepcopy(self.reported)
        return state

    def metadata(self) -> Json:
        meta: Json = {}
        if self.meta_desired:
            meta["desired"] = copy.deepcopy(self.meta_desired)
        if self.meta_reported:
            meta["reported"] = copy.deepcopy(self.meta_reported)
        return meta


@dataclass(frozen=True)
class ShadowReply:
    """The outcome of one request: accepted or not, the reply document and every message."""

    accepted: bool
    document: Json
    messages: list[tuple[str, bytes]]


def parse_topic(topic: str) -> tuple[str, str] | None:
    """``$aws/things/<thing>/shadow/<op>`` -> (thing, op), or None for other topics."""
    match = _TOPIC.match(topic)
    return (match.group(1), match.group(2)) if match else None


def shadow_topic(thing: str, operation: str, suffix: str | None = None) -> str:
    base = f"$aws/things/{thing}/shadow/{operation}"
    return f"{base}/{suffix}" if suffix else base


def _merge(target: Json, meta: Json, patch: Json, now: int) -> None:
    """Merge ``patch`` into ``target`` (None deletes) and stamp ``meta`` per leaf."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
            meta.pop(key, None)
        elif isinstance(value, dict):
            sub = target.get(key)
            if not isinstance(sub, dict):
                sub = target[key] = {}
            sub_meta = meta.get(key)
            if not isinstance(sub_meta, dict) or "timestamp" in sub_meta:
                sub_meta = meta[key] = {}
            _merge(sub, sub_meta, value, now)
            if not sub:
                target.pop(key, None)
                meta.pop(key, None)
        else:
            target[key] = copy.deepcopy(value)
            meta[key] = {"timestamp": now}


def _stamp(patch: Json, now: int) -> Json:
    out: Json = {}
    for key, value in patch.items():
        out[key] = _stamp(value, now) if isinstance(value, dict) else {"timestamp": now}
    return out


def _metadata_for(meta: Json, keys: Json) -> Json:
    out: Json = {}
    for key, value in keys.items():
        m = meta.get(key)
        if isinstance(value, dict) and isinstance(m, dict) and "timestamp" not in m:
            out[key] = _metadata_for(m, value)
        elif m is not None:
            out[key] = m
    return out


class ShadowService:
    """Shadow documents of every thing on this core (optionally persisted to a file)."""

    def __init__(self, store_path: Path | None = None, *, clock: Callable[[], float] = time.time):
        self._store_path = store_path
        self._clock = clock
        self._shadows: dict[str, _Shadow] = {}
        self._watchers: list[Callable[[str, frozenset[str]], None]] = []
        self._quiet = False
        if store_path is not None and store_path.exists():
            self._load(store_path)

    # -- functions' API ----------------------------------------------------------------

    def get(self, thing: str) -> Json | None:
        """The thing's document with ``state.delta``, or None if it has no shadow."""
        shadow = self._shadows.get(thing)
        if shadow is None or not shadow.exists:
            return None
        return self._document(shadow, with_delta=True)

    def update(self, thing: str, doc: Json) -> Json:
        """Apply an update request document; returns the accepted reply (raises ShadowRejected)."""
        reply = self.request(thing, "update", json.dumps(doc).encode())
        if not reply.accepted:
            raise ShadowRejected(int(reply.document["code"]), str(reply.document["message"]))
        return reply.document

    def delete(self, thing: str) -> Json:
        reply = self.request(thing, "delete", b"")
        if not reply.accepted:
            raise ShadowRejected(int(reply.document["code"]), str(reply.document["message"]))
        return reply.document

    def things(self) -> list[str]:
        return sorted(name for name, s in self._shadows.items() if s.exists)

    def exists(self, thing: str) -> bool:
        shadow = self._shadows.get(thing)
        return shadow is not None and shadow.exists

    def sections(self, thing: str) -> tuple[Json, Json]:
        """Copies of the thing's (desired, reported); empty when it has no shadow."""
        shadow = self._shadows.get(thing)
        if shadow is None or not shadow.exists:
            return {}, {}
        return copy.deepcopy(shadow.desired), copy.deepcopy(shadow.reported)

    # -- sync with the cloud ---------------------------------------------------------------

    def watch(self, callback: Callable[[str, frozenset[str]], None]) -> None:
        """``callback(thing, sections)`` after every accepted update or delete that did not
        come through ``apply_synced`` (``sections``: ``desired`` and/or ``reported``)."""
        self._watchers.append(callback)

    def apply_synced(
        self,
        thing: str,
        desired: Json | None,
        reported: Json | None,
        client_token: str | None = None,
    ) -> list[tuple[str, bytes]]:
        """Apply merge patches from the cloud's copy; the replies devices should hear."""
        state: Json = {}
        if desired is not None:
            state["desired"] = desired
        if reported is not None:
            state["reported"] = reported
        request: Json = {"state": state}
        if client_token is not None:
            request["clientToken"] = client_token
        self._quiet = True
        try:
            return self.request(thing, "update", json.dumps(request).encode()).messages
        finally:
            self._quiet = False

    def _changed(self, thing: str, sections: frozenset[str]) -> None:
        if self._quiet or not sections:
            return
        for watcher in self._watchers:
            try:
                watcher(thing, sections)
            except Exception:  # a watcher's failure must not fail the device's request
                log.exception("shadow.watcher_failed thing=%s", thing)

    # -- MQTT ------------------------------------------------------------------------------

    def handle(self, thing: str, operation: str, payload: bytes) -> list[tuple[str, bytes]]:
        """A request that arrived on ``$aws/things/<thing>/shadow/<operation>``: the replies."""
        return self.request(thing, operation, payload).messages

    def request(self, thing: str, operation: str, payload: bytes) -> ShadowReply:
        now = int(self._clock())
        token: Any = None
        try:
            if operation not in OPERATIONS:
                raise ShadowRejected(400, f"Unsupported operation: {operation}")
            request = self._parse(payload, required=operation == "update")
            token = request.get("clientToken")
            if operation == "get":
                return self._get(thing, token, now)
            if operation == "delete":
                return self._delete(thing, request, token, now)
            return self._update(thing, request, token, now)
        except ShadowRejected as exc:
            body: Json = {"code": exc.code, "message": exc.message, "timestamp": now}
            if token is not None:
                body["clientToken"] = token
            op = operation if operation in OPERATIONS else "update"
            topic = shadow_topic(thing, op, "rejected")
            return ShadowReply(False, body, [(topic, json.dumps(body).encode())])

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _parse(payload: bytes, *, required: bool) -> Json:
        if not payload.strip():
            if required:
                raise ShadowRejected(400, "Missing required node: state")
            return {}
        if len(payload) > MAX_DOCUMENT_BYTES:
            raise ShadowRejected(413, "The payload exceeds the maximum size allowed")
        try:
            request = json.loads(payload)
        except ValueError as exc:
            raise ShadowRejected(400, "Payload contains invalid json") from exc
        if not isinstance(request, dict):
            raise ShadowRejected(400, "Payload contains invalid json")
        return request

    def _document(self, shadow: _Shadow, *, with_delta: bool, now: int | None = None) -> Json:
        state = shadow.state()
        doc: Json = {"state": state, "metadata": shadow.metadata(), "version": shadow.version}
        if with_delta:
            d = delta(shadow.desired, shadow.reported)
            if d:
                state["delta"] = d
        doc["timestamp"] = int(self._clock()) if now is None else now
        return doc

    def _get(self, thing: str, token: Any, now: int) -> ShadowReply:
        shadow = self._shadows.get(thing)
        if shadow is None or not shadow.exists:
            raise ShadowRejected(404, f"No shadow exists with name: '{thing}'")
        doc = self._document(shadow, with_delta=True, now=now)
        if token is not None:
            doc["clientToken"] = token
        topic = shadow_topic(thing, "get", "accepted")
        return ShadowReply(True, doc, [(topic, json.dumps(doc).encode())])

    def _delete(self, thing: str, request: Json, token: Any, now: int) -> ShadowReply:
        shadow = self._shadows.get(thing)
        if shadow is None or not shadow.exists:
            raise ShadowRejected(404, f"No shadow exists with name: '{thing}'")
        self._check_version(shadow, request)
        version = shadow.version
        self._shadows[thing] = _Shadow(version=version)
        self._save()
        self._changed(thing, frozenset(("desired", "reported")))
        doc: Json = {"version": version, "timestamp": now}
        if token is not None:
            doc["clientToken"] = token
        topic = shadow_topic(thing, "delete", "accepted")
        return ShadowReply(True, doc, [(topic, json.dumps(doc).encode())])

    @staticmethod
    def _check_version(shadow: _Shadow, request: Json) -> None:
        if "version" in request:
            version = request["version"]
            if not isinstance(version, int) or isinstance(version, bool):
                raise ShadowRejected(400, "Invalid version")
            if version != shadow.version:
                raise ShadowRejected(409, "Version conflict")

    def _update(self, thing: str, request: Json, token: Any, now: int) -> ShadowReply:
        state = request.get("state")
        if not isinstance(state, dict):
            raise ShadowRejected(400, "Missing required node: state")
        unknown = set(state) - {"desired", "reported"}
        if unknown:
            raise ShadowRejected(400, f"State contains an invalid node: '{sorted(unknown)[0]}'")
        for section in ("desired", "reported"):
            value = state.get(section)
            if section in state and value is not None and not isinstance(value, dict):
                raise ShadowRejected(400, f"Invalid {section} node")
            if isinstance(value, dict) and _depth(value) > MAX_DEPTH:
                raise ShadowRejected(400, "JSON contains too many levels of nesting")
        shadow = self._shadows.setdefault(thing, _Shadow())
        self._check_version(shadow, request)
        previous = self._document(shadow, with_delta=False, now=now) if shadow.exists else None
        accepted_meta: Json = {}
        for section in ("desired", "reported"):
            if section not in state:
                continue
            value = state[section]
            target = shadow.desired if section == "desired" else shadow.reported
            meta = shadow.meta_desired if section == "desired" else shadow.meta_reported
            if value is None:
                target.clear()
                meta.clear()
                continue
            _merge(target, meta, value, now)
            accepted_meta[section] = _stamp(value, now)
        shadow.version += 1
        shadow.exists = True
        self._save()
        self._changed(thing, frozenset(s for s in ("desired", "reported") if s in state))

        accepted: Json = {
            "state": copy.deepcopy(state),
            "metadata": accepted_meta,
            "version": shadow.version,
            "timestamp": now,
        }
        if token is not None:
            accepted["clientToken"] = token
        messages = [(shadow_topic(thing, "update", "accepted"), json.dumps(accepted).encode())]
        current = self._document(shadow, with_delta=False, now=now)
        documents: Json = {
            "previous": _strip(previous),
            "current": _strip(current),
            "timestamp": now,
        }
        if token is not None:
            documents["clientToken"] = token
        messages.append(
            (shadow_topic(thing, "update", "documents"), json.dumps(documents).encode())
        )
        d = delta(shadow.desired, shadow.reported)
        if d and "desired" in state:
            delta_doc: Json = {
                "version": shadow.version,
                "timestamp": now,
                "state": d,
                "metadata": _metadata_for(shadow.meta_desired, d),
            }
            if token is not None:
                delta_doc["clientToken"] = token
            messages.append(
                (shadow_topic(thing, "update", "delta"), json.dumps(delta_doc).encode())
            )
        return ShadowReply(True, accepted, messages)

    # -- persistence -----------------------------------------------------------------------

    def _save(self) -> None:
        if self._store_path is None:
            return
        data = {
            name: {
                "desired": s.desired,
                "reported": s.reported,
                "meta_desired": s.meta_desired,
                "meta_reported": s.meta_reported,
                "version": s.version,
                "exists": s.exists,
            }
            for name, s in self._shadows.items()
        }
        tmp = self._store_path.with_name(self._store_path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._store_path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            for name, s in data.items():
                self._shadows[name] = _Shadow(
                    desired=dict(s["desired"]),
                    reported=dict(s["reported"]),
                    meta_desired=dict(s["meta_desired"]),
                    meta_reported=dict(s["meta_reported"]),
                    version=int(s["version"]),
                    exists=bool(s["exists"]),
                )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("shadow_store_unreadable path=%s error=%s", path, exc)
            raise ShadowError(f"cannot load shadow store {path}: {exc}") from exc


def _strip(doc: Json | None) -> Json | None:
    if doc is None:
        return None
    return {"state": doc["state"], "metadata": doc["metadata"], "version": doc["version"]}
