"""Shadow sync with the cloud, the core's side (the rules are ``hedgerow.contract.shadow``).

For each thing the deployment names in ``settings.sync_shadows``:

- every local change (a device's or a function's update or delete) becomes a
  ``ShadowUpdate`` with the whole changed sections, handed to ``send`` — the core's
  durable spool, so a change made while the cloud is away goes up, in order, once it is
  back;
- after every connect to the cloud (and when a thing starts being synced) the core sends
  its whole ``reported`` (the device wins for reported), which also asks the cloud for
  its copy; until a cloud copy was applied, its ``desired`` as well (it seeds a cloud copy
  whose desired nobody set; otherwise it is a conflict and the cloud's stands);
- a ``ShadowState`` from the cloud is applied unless it is older than the cloud version
  already applied: desired always (the cloud wins for desired), reported only when the
  cloud has processed every local update (``seq``).

The sync state (per thing: the cloud version applied and the last ``seq`` sent) is a small
JSON file rewritten atomically, so a restart neither resends old changes nor applies an old
cloud copy over a newer one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from hedgerow.contract.errors import ContractError
from hedgerow.contract.shadow import ShadowState, ShadowUpdate, patch_between

from .shadow import ShadowService

log = logging.getLogger(__name__)

#: ``send(thing, payload)``: a ``ShadowUpdate`` for the cloud (the core spools it).
SendFn = Callable[[bytes], None]
#: ``replies(thing, messages)``: what devices hear after a cloud change was applied.
RepliesFn = Callable[[str, list[tuple[str, bytes]]], None]


@dataclass
class _ThingSync:
    cloud_version: int = 0
    seq: int = 0


class ShadowSync:
    def __init__(
        self, shadow: ShadowService, state_path: Path, send: SendFn, replies: RepliesFn
    ) -> None:
        self.shadow = shadow
        self.state_path = state_path
        self.send = send
        self.replies = replies
        self.things: frozenset[str] = frozenset()
        self._state: dict[str, _ThingSync] = {}
        self.counters = {"sent": 0, "applied": 0, "stale": 0, "conflicts": 0}
        self._load()
        shadow.watch(self.local_change)

    # ---- what the daemon calls ----------------------------------------------------------

    def set_things(self, things: Iterable[str], *, connected: bool) -> None:
        """The deployment's ``sync_shadows``; newly synced things send their reported now
        (when the cloud link is up; otherwise at the next connect)."""
        new = frozenset(things)
        added = new - self.things
        self.things = new
        if added:
            log.info("core.shadow_sync.things count=%d added=%s", len(new), sorted(added))
        if connected:
            for thing in sorted(added):
                self._send_reported(thing)

    def connected(self) -> None:
        """The cloud link is up: send every synced thing's reported (asks for its copy)."""
        for thing in sorted(self.things):
            self._send_reported(thing)

    def local_change(self, thing: str, sections: frozenset[str]) -> None:
        """The shadow service's watcher: a device or function changed ``sections``."""
        if thing not in self.things:
            return
        desired, reported = self.shadow.sections(thing)
        self._send(
            thing,
            desired=desired if "desired" in sections else None,
            reported=reported if "reported" in sections else None,
        )

    def cloud_state(self, payload: bytes) -> None:
        """A ``ShadowState`` arrived from the cloud: apply it by the version rules."""
        try:
            state = ShadowState.from_json(payload)
        except ContractError as exc:
            log.warning("core.shadow_sync.bad_state error=%s", exc)
            return
        if state.thing not in self.things:
            log.info("core.shadow_sync.not_synced thing=%s", state.thing)
            return
        sync = self._state.setdefault(state.thing, _ThingSync())
        if state.rejected:
            self.counters["conflicts"] += 1
            log.info(
                "core.shadow_sync.rejected thing=%s sections=%s version=%d",
                state.thing,
                ",".join(state.rejected),
                state.version,
            )
        if state.version < sync.cloud_version:
            self.counters["stale"] += 1
            log.info(
                "core.shadow_sync.stale thing=%s version=%d applied=%d",
                state.thing,
                state.version,
                sync.cloud_version,
            )
            return
        desired, reported = self.shadow.sections(state.thing)
        desired_patch = patch_between(desired, state.desired)
        # the cloud's reported only when it has every local update (else ours is newer)
        reported_patch = patch_between(reported, state.reported) if state.seq >= sync.seq else {}
        sync.cloud_version = state.version
        self._save()
        if not desired_patch and not reported_patch:
            return
        messages = self.shadow.apply_synced(
            state.thing, desired_patch or None, reported_patch or None, state.client_token
        )
        self.counters["applied"] += 1
        log.info(
            "core.shadow_sync.applied thing=%s version=%d desired=%s reported=%s",
            state.thing,
            state.version,
            bool(desired_patch),
            bool(reported_patch),
        )
        self.replies(state.thing, messages)

    def report(self) -> dict[str, object]:
        """For the support bundle: what is synced and where each thing stands."""
        return {
            "things": sorted(self.things),
            "state": {
                t: {"cloud_version": s.cloud_version, "seq": s.seq}
                for t, s in sorted(self._state.items())
            },
            "counters": dict(self.counters),
        }

    # ---- internals ----------------------------------------------------------------------

    def _send_reported(self, thing: str) -> None:
        """The whole reported; and before the first cloud copy was applied, the local desired
        too: it seeds a cloud copy nobody has set desired on (else it is a conflict and the
        cloud's stands)."""
        if not self.shadow.exists(thing):
            self._send(thing, desired=None, reported=None)
            return
        desired, reported = self.shadow.sections(thing)
        first = self._state.get(thing, _ThingSync()).cloud_version == 0
        self._send(thing, desired=desired if first and desired else None, reported=reported)

    def _send(self, thing: str, *, desired: dict[str, object] | None, reported: object) -> None:
        sync = self._state.setdefault(thing, _ThingSync())
        sync.seq += 1
        self._save()
        update = ShadowUpdate(
            thing,
            sync.seq,
            sync.cloud_version,
            desired,
            reported if isinstance(reported, dict) else None,
        )
        self.send(update.to_json())
        self.counters["sent"] += 1

    def _save(self) -> None:
        data = {t: {"cloud_version": s.cloud_version, "seq": s.seq} for t, s in self._state.items()}
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.state_path)

    def _load(self) -> None:
        try:
            data = json.loads(self.state_path.read_text())
            self._state = {
                str(t): _ThingSync(int(s["cloud_version"]), int(s["seq"])) for t, s in data.items()
            }
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # a lost sync state costs one full exchange, not correctness: start over
            log.warning("core.shadow_sync.state_unreadable path=%s error=%s", self.state_path, exc)
            self._state = {}
