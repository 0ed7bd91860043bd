"""The deployment agent: fetch, verify, stage, apply, health-check, report, roll back.

Triggers (all end in ``request(deployment_id)`` or ``check_latest()``): the notification on
``$hedgerow/cores/{core}/deployments``, every cloud reconnect, and a slow poll. Requests
go through one queue and one worker: one deployment at a time, de-duplicated by id (the
running one, the one in progress and ids that already failed are skipped).

Steps for a new id:

1. fetch the signed document; verify the Ed25519 signature over the exact text (in the
   short-lived ``keytool`` child: the daemon does not load ``cryptography``) and that it
   is for this core and group (``Failure`` on any problem: nothing was touched; a key
   tool that cannot run is reported as ``Failure`` but not remembered as failed: the id is
   tried again on the next trigger);
2. fetch every artifact not yet stored and check its sha256 and size (``Failure``);
3. stage (document, signature, artifacts on disk), report ``InProgress``;
4. apply (routes, device list, functions) and health-check the functions;
5. success: the id becomes ``current`` (the previous one is kept) and ``Success`` is
   reported; failure: the previous deployment is applied again and ``RolledBack`` is
   reported with the reason.

A newer deployment supersedes the one in progress: while one runs, every other id the
cloud names is fetched and verified beside it, and when its document was made after the
one in progress (``core/supersede.py``, pure) the one in progress is cancelled where it
stands, undone for its phase (the last good deployment applied again, its staged files and
the artifacts only it fetched removed), reported ``Superseded``, and the newer one runs
next — not after the older one's health check or deadline. A release of the core already
switched to, and that release's trial, are never interrupted.

After a restart ``restore()`` applies the last good deployment from disk, cloud or not —
but only one that verifies again there: its stored signature (in the key tool's child, as
above), its addressee, and the sha256 and size of every artifact. A file edited on disk is
refused (``core.deployment.refused`` names the file and the reason), the ``previous``
deployment is tried next, and the refusals are kept in ``refused`` for the heartbeat, so
the cloud sends its latest deployment again (which replaces the tampered files).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

from hedgerow.contract.deployment import CoreRelease, DeploymentStatus
from hedgerow.contract.deployment import DeploymentDocument as WireDocument
from hedgerow.contract.errors import ContractError
from hedgerow.contract.offline import unpack

from . import keytool
from .certificates import write_atomic
from .cloudapi import CloudAPI
from .errors import CloudAPIError, CoreError, DeploymentError, UpdateError
from .launcher import Pending
from .plan import plan
from .routing_table import RoutingError, Subscription
from .runtime import RuntimeUpdater
from .secrets import SealedVersion, parse_secrets
from .supersede import UNDO, Phase, made_before, supersedes

log = logging.getLogger(__name__)

PENDING = DeploymentStatus.PENDING
IN_PROGRESS = DeploymentStatus.IN_PROGRESS
SUCCESS = DeploymentStatus.SUCCESS
FAILURE = DeploymentStatus.FAILURE
ROLLED_BACK = DeploymentStatus.ROLLED_BACK
SUPERSEDED = DeploymentStatus.SUPERSEDED

_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

Reporter = Callable[[str, str, str], None]
#: fetches one artifact's bytes by sha256 (from the cloud, or from an offline file)
ArtifactSource = Callable[[str], Awaitable[bytes]]
#: A deployment not finished this long after it started is failed and rolled back, so a
#: stuck one never blocks the next in the queue.
DEFAULT_DEADLINE_S = 300.0
#: What ``deploy`` returns for a deployment older than the one running (not applied).
OLDER = "Older"


#: Where ``hedgerow core deploy --file`` drops files for the running core, how they end,
#: and how often the core looks.
OFFLINE_SUFFIX = ".offline.tar"
OFFLINE_INBOX_POLL = 0.5


def offline_inbox(data_dir: Path) -> Path:
    return data_dir / "deployments" / "inbox"


@dataclass(frozen=True)
class OfflineFile:
    """A queued offline deployment file (``hedgerow core deploy --file``); the result is
    written beside it as ``<file>.result`` (JSON ``{"deployment_id", "status", "detail"}``)."""

    path: Path


@dataclass(frozen=True)
class Refusal:
    """A deployment on disk that did not verify at restart: which file, and why."""

    deployment_id: str
    file: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"deployment_id": self.deployment_id, "file": self.file, "reason": self.reason}


@dataclass(frozen=True)
class DeploymentDocument:
    deployment_id: str
    group: str
    core: str
    things: tuple[str, ...]
    functions: tuple[Mapping[str, Any], ...]
    subscriptions: tuple[Subscription, ...]
    settings: Mapping[str, Any]
    text: str = field(repr=False)
    #: industrial connectors: ``{"kind", "name", "version", "config"}`` (``hedgerow.connectors``)
    connectors: tuple[Mapping[str, Any], ...] = ()
    #: secret versions sealed to this core's key (see ``core/secrets.py``)
    secrets: tuple[SealedVersion, ...] = ()
    #: the Hedgerow release this core should run (None: keep the running one)
    core_version: CoreRelease | None = None

    @property
    def open_broker(self) -> bool:
        return bool(self.settings.get("open_broker", False))

    @property
    def sync_shadows(self) -> tuple[str, ...]:
        """The things whose shadows this core syncs with the cloud (``core/shadow_sync.py``)."""
        return tuple(self.settings.get("sync_shadows", ()))

    def artifacts(self) -> list[tuple[str, int | None]]:
        out = []
        for entry in self.functions:
            artifact = entry.get("artifact") or {}
            out.append((str(artifact.get("sha256", "")), artifact.get("size")))
        if self.core_version is not None:
            out += [(wheel.sha256, wheel.size) for wheel in self.core_version.wheels]
        return out

    def as_dict(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.text)
        return value


def parse_document(text: str) -> DeploymentDocument:
    """Parse a document's JSON text (already verified) by the contract's rules
    (``hedgerow.contract.deployment``); ``DeploymentError`` names the field."""
    try:
        wire = WireDocument.from_json(text)
    except ContractError as exc:
        raise DeploymentError(_id_of(text), str(exc)) from exc
    try:
        subscriptions = tuple(Subscription.from_dict(s.to_json()) for s in wire.subscriptions)
    except RoutingError as exc:
        raise DeploymentError(wire.deployment_id, f"subscriptions: {exc}") from exc
    return DeploymentDocument(
        deployment_id=wire.deployment_id,
        group=wire.group,
        core=wire.core,
        things=wire.things,
        functions=tuple(f.to_json() for f in wire.functions),
        subscriptions=subscriptions,
        settings={"open_broker": wire.open_broker, "sync_shadows": wire.sync_shadows},
        text=text,
        connectors=tuple(c.to_json() for c in wire.connectors),
        secrets=parse_secrets(wire.deployment_id, [dict(e) for e in wire.secrets]),
        core_version=wire.core_version,
    )


def _id_of(text: str) -> str:
    """The deployment id of a document that did not parse, for the report ("?" if none)."""
    try:
        value = json.loads(text).get("deployment_id")
    except (ValueError, AttributeError):
        return "?"
    return value if isinstance(value, str) and _ID.fullmatch(value) else "?"


BAD_SIGNATURE = "the signature does not verify"


def decode_signature(signature: str) -> bytes:
    """The raw signature of a deployment (base64 in the API); malformed is not verifying."""
    try:
        return base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DeploymentError("?", BAD_SIGNATURE) from exc


def check_addressee(text: str, *, core: str, group: str) -> DeploymentDocument:
    """Parse a document whose signature verified and check it is for this core and group."""
    doc = parse_document(text)
    if doc.core != core:
        raise DeploymentError(
            doc.deployment_id, f"core: the document is for {doc.core!r}, not {core!r}"
        )
    if doc.group != group:
        raise DeploymentError(
            doc.deployment_id, f"group: the document is for {doc.group!r}, not {group!r}"
        )
    return doc


async def verify_document(
    text: str, signature: str, key: bytes, *, core: str, group: str
) -> DeploymentDocument:
    """Check the Ed25519 signature (``key``: the raw 32-byte public key) over the exact
    UTF-8 text, then parse and check the addressee.

    The signature check runs in the key tool's child process (``keytool``); when that child
    cannot run, ``KeytoolError`` (a ``CoreError``) says so — the document is not judged.
    """
    raw = decode_signature(signature)
    if not await keytool.verify_signature(key, text.encode("utf-8"), raw):
        raise DeploymentError("?", BAD_SIGNATURE)
    return check_addressee(text, core=core, group=group)


def _failed_file(deployment_id: str, reason: str) -> str:
    """The file a ``verify_stored`` reason starts with (``<id>.json`` when it names none)."""
    head = reason.split(":", 1)[0]
    return head if head.endswith((".json", ".sig", ".zip")) else f"{deployment_id}.json"


EMPTY_DOCUMENT = DeploymentDocument("", "", "", (), (), (), {}, "{}")


@dataclass
class InProgress:
    """The deployment the worker is applying: how far it got, and what it fetched."""

    deployment_id: str
    phase: Phase = Phase.CHECKING
    #: its document, once verified
    doc: DeploymentDocument | None = None
    #: artifacts it downloaded (not those already stored)
    fetched: list[str] = field(default_factory=list)


class Superseded(Exception):
    """A newer deployment (verified) cancels the one in progress."""

    def __init__(self, newer: DeploymentDocument) -> None:
        super().__init__(newer.deployment_id)
        self.newer = newer


class Applier(Protocol):
    """Puts a deployment into effect (routes, device list, functions)."""

    async def apply(self, doc: DeploymentDocument, artifacts: Mapping[str, Path]) -> None: ...

    async def health(self, doc: DeploymentDocument, limit_s: float) -> str | None:
        """None when every function of ``doc`` is healthy, else the reason."""
        ...


class DeploymentStore:
    """Documents, signatures and artifacts on disk; ``current``/``previous`` pointers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.artifacts_dir = directory / "artifacts"

    def _doc_file(self, deployment_id: str) -> Path:
        return self.directory / f"{deployment_id}.json"

    def artifact_path(self, sha256: str) -> Path:
        return self.artifacts_dir / f"{sha256}.zip"

    def has_artifact(self, sha256: str) -> bool:
        path = self.artifact_path(sha256)
        return path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256

    def put_artifact(self, sha256: str, data: bytes) -> Path:
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        path = self.artifact_path(sha256)
        write_atomic(path, data)
        return path

    def stage(self, doc: DeploymentDocument, signature: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self._doc_file(doc.deployment_id), doc.text.encode())
        write_atomic(self.directory / f"{doc.deployment_id}.sig", signature.encode())

    def unstage(self, deployment_id: str) -> None:
        """Remove a staged document and its signature (never ``current``'s or
        ``previous``'s)."""
        if deployment_id in (self.pointer("current"), self.pointer("previous")):
            return
        for path in (self._doc_file(deployment_id), self.directory / f"{deployment_id}.sig"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def stored_artifacts(self) -> list[str]:
        """The sha256 of every stored artifact."""
        if not self.artifacts_dir.is_dir():
            return []
        return sorted(p.stem for p in self.artifacts_dir.glob("*.zip"))

    def remove_artifacts(self, sha256s: Iterable[str], keep: Iterable[str]) -> int:
        """Remove the artifacts ``sha256s`` not in ``keep``; returns the bytes freed."""
        kept = set(keep)
        freed = 0
        for sha256 in dict.fromkeys(sha256s):
            if sha256 in kept:
                continue
            path = self.artifact_path(sha256)
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            freed += size
        return freed

    def pointer(self, name: str) -> str | None:
        try:
            value = (self.directory / name).read_text().strip()
        except OSError:
            return None
        return value or None

    def commit(self, deployment_id: str, previous: str | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if previous:
            write_atomic(self.directory / "previous", previous.encode())
        write_atomic(self.directory / "current", deployment_id.encode())

    def load_signed(self, deployment_id: str) -> tuple[str, str]:
        """The stored text and signature of a deployment; ``DeploymentError`` names the
        file that is missing or unreadable."""
        out = []
        for path in (self._doc_file(deployment_id), self.directory / f"{deployment_id}.sig"):
            try:
                out.append(path.read_text("utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise DeploymentError(deployment_id, f"{path.name}: cannot read: {exc}") from exc
        return out[0], out[1]

    def check_artifact(self, deployment_id: str, sha256: str, size: int | None) -> None:
        """``DeploymentError`` (naming the file) unless the stored artifact has this hash."""
        path = self.artifact_path(sha256)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DeploymentError(
                deployment_id, f"artifacts/{path.name}: cannot read: {exc.strerror}"
            ) from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise DeploymentError(
                deployment_id, f"artifacts/{path.name}: the sha256 does not match the document"
            )
        if size is not None and len(data) != size:
            raise DeploymentError(
                deployment_id, f"artifacts/{path.name}: size {len(data)} != {size}"
            )

    def load(self, deployment_id: str) -> DeploymentDocument | None:
        try:
            return parse_document(self._doc_file(deployment_id).read_text("utf-8"))
        except (OSError, DeploymentError) as exc:
            log.warning("core.deployment.load_failed id=%s error=%s", deployment_id, exc)
            return None


class DeploymentAgent:
    """``verify_key`` is the cloud's raw 32-byte Ed25519 deployment key
    (``keytool.ed25519_public_key_from_pem`` of ``deploy-verify.pem``)."""

    def __init__(
        self,
        *,
        api: CloudAPI,
        store: DeploymentStore,
        applier: Applier,
        report: Reporter,
        verify_key: bytes,
        core: str,
        group: str,
        health_timeout: float = 10.0,
        deadline_s: float = DEFAULT_DEADLINE_S,
        updater: RuntimeUpdater | None = None,
        restart: Callable[[], None] = lambda: None,
        cloud_linked: Callable[[float], Awaitable[bool]] | None = None,
    ) -> None:
        """``updater`` installs and switches releases of the core itself (None: a document's
        ``core_version`` fails the deployment); ``restart()`` asks the daemon to exit for
        the launcher; ``cloud_linked(timeout)`` waits for the MQTT link to the cloud (part
        of a new release's health)."""
        self.api = api
        self.store = store
        self.applier = applier
        self.report = report
        self.verify_key = verify_key
        self.core = core
        self.group = group
        self.health_timeout = health_timeout
        self.deadline_s = deadline_s
        self.updater = updater
        self.restart = restart
        self.cloud_linked = cloud_linked
        #: deployments handed to another release of the core (this process is exiting)
        self.handed_over: set[str] = set()
        self.current: DeploymentDocument | None = None
        self.in_progress: str | None = None
        self.failed: set[str] = set()
        self.results: dict[str, str] = {}
        #: Deployments on disk that did not verify at the last restart (for the heartbeat);
        #: cleared when a deployment from the cloud succeeds.
        self.refused: tuple[Refusal, ...] = ()
        self._last_detail: dict[str, str] = {}
        self._queue: asyncio.Queue[str | OfflineFile | None] = asyncio.Queue()
        self.idle = asyncio.Event()
        self.idle.set()
        #: the deployment being applied (None between deployments)
        self.run_state: InProgress | None = None
        #: ids requested and not yet taken by the worker (candidates to supersede)
        self._waiting: dict[str, None] = {}
        #: set on every request and phase change: the supersede watch looks again
        self._changed = asyncio.Event()

    # ---- triggers -------------------------------------------------------------------

    def request(self, deployment_id: str | OfflineFile | None) -> None:
        """Queue a deployment id (None = ask the cloud for the latest) or an offline file."""
        self.idle.clear()
        if isinstance(deployment_id, str):
            self._waiting[deployment_id] = None
            self._changed.set()
        self._queue.put_nowait(deployment_id)

    async def run(self) -> None:
        """The single worker: one deployment at a time, in request order."""
        while True:
            if self._queue.empty():
                self.idle.set()
            item = await self._queue.get()
            if isinstance(item, str):
                self._waiting.pop(item, None)
            try:
                if item is None:
                    await self.check_latest()
                elif isinstance(item, OfflineFile):
                    await self.deploy_file(item)
                else:
                    await self.deploy(item)
            except CoreError as exc:
                log.warning("core.deployment.check_failed error=%s", exc)

    async def check_latest(self) -> None:
        latest = await self.api.latest_deployment()
        if latest:
            await self.deploy(latest)

    def _skip(self, deployment_id: str) -> bool:
        return (
            (self.current is not None and self.current.deployment_id == deployment_id)
            or self.in_progress == deployment_id
            or deployment_id in self.failed
            or deployment_id in self.handed_over
        )

    # ---- restore after a restart ------------------------------------------------------

    async def restore(self) -> DeploymentDocument | None:
        """Apply the last good deployment on disk that verifies (no cloud needed).

        ``current`` first, then ``previous``; each must verify as it did when it arrived
        (``verify_stored``). A refused one is logged and kept in ``refused``; when the
        fallback is applied it becomes ``current`` on disk, so the refused files are not
        tried again at the next start (the cloud's redeploy overwrites them).
        """
        refused: list[Refusal] = []
        chosen: DeploymentDocument | None = None
        for pointer in ("current", "previous"):
            deployment_id = self.store.pointer(pointer)
            if not deployment_id or any(r.deployment_id == deployment_id for r in refused):
                continue
            try:
                chosen = await self.verify_stored(deployment_id)
                break
            except DeploymentError as exc:
                refusal = Refusal(
                    deployment_id, _failed_file(deployment_id, exc.reason), exc.reason
                )
            except keytool.KeytoolError as exc:
                refusal = Refusal(
                    deployment_id,
                    f"{deployment_id}.sig",
                    f"cannot check the signature: {exc} (run `hedgerow core check`)",
                )
            log.error(
                "core.deployment.refused id=%s file=%s reason=%r then=%r",
                refusal.deployment_id,
                refusal.file,
                refusal.reason,
                "not applied; the cloud is asked for its latest deployment",
            )
            refused.append(refusal)
        self.refused = tuple(refused)
        if chosen is None:
            return None
        try:
            await self.applier.apply(chosen, self._artifact_paths(chosen))
        except Exception as exc:  # an applier may fail in any way; the core keeps running
            log.error("core.deployment.restore_failed id=%s error=%s", chosen.deployment_id, exc)
            return None
        self.current = chosen
        if refused:
            self.store.commit(chosen.deployment_id, None)
            log.warning(
                "core.deployment.fell_back id=%s refused=%s",
                chosen.deployment_id,
                ",".join(r.deployment_id for r in refused),
            )
        log.info("core.deployment.restored id=%s", chosen.deployment_id)
        return chosen

    async def verify_stored(self, deployment_id: str) -> DeploymentDocument:
        """A stored deployment checked as on arrival: the signature over the stored text,
        the addressee, its id, and every artifact's sha256 and size. ``DeploymentError``
        (its reason starts with the file at fault) or ``KeytoolError``."""
        text, signature = self.store.load_signed(deployment_id)
        try:
            raw = decode_signature(signature.strip())
            if not await keytool.verify_signature(self.verify_key, text.encode("utf-8"), raw):
                raise DeploymentError(deployment_id, BAD_SIGNATURE)
        except DeploymentError as exc:
            raise DeploymentError(
                deployment_id, f"{deployment_id}.json: {BAD_SIGNATURE} ({deployment_id}.sig)"
            ) from exc
        try:
            doc = check_addressee(text, core=self.core, group=self.group)
        except DeploymentError as exc:
            raise DeploymentError(deployment_id, f"{deployment_id}.json: {exc.reason}") from exc
        if doc.deployment_id != deployment_id:
            raise DeploymentError(
                deployment_id,
                f"{deployment_id}.json: the document says {doc.deployment_id!r}",
            )
        for sha256, size in doc.artifacts():
            self.store.check_artifact(deployment_id, sha256, size)
        return doc

    # ---- one deployment -------------------------------------------------------------

    async def deploy(self, deployment_id: str) -> str | None:
        """Run one deployment from the cloud; returns the final status (None when skipped)."""
        return await self._run_one(deployment_id, self._deploy(deployment_id))

    async def _run_one(self, deployment_id: str, work: Awaitable[str]) -> str | None:
        """One deployment within the deadline: past it, it is failed and the previous
        deployment applied again, and the queue moves on. A newer deployment cancels it
        sooner (``_watch_for_newer``, ``_abandon``)."""
        if self._skip(deployment_id):
            if asyncio.iscoroutine(work):
                work.close()
            return None
        self.in_progress = deployment_id
        trial = self.updater.trial() if self.updater is not None else None
        run = self.run_state = InProgress(
            deployment_id,
            Phase.HANDING_OVER
            if trial is not None and trial.deployment_id == deployment_id
            else Phase.CHECKING,
        )
        try:
            async with asyncio.timeout(self.deadline_s):
                status = await self._supersedable(run, work)
        except TimeoutError:
            self.failed.add(deployment_id)
            rollback_error = await self._rollback()
            detail = f"deadline exceeded: not finished within {self.deadline_s:g} s; " + (
                f"rollback failed: {rollback_error}" if rollback_error else "rolled back"
            )
            self._report(deployment_id, FAILURE, detail)
            status = FAILURE
        finally:
            self.in_progress = None
            self.run_state = None
        self.results[deployment_id] = status
        return status

    async def _supersedable(self, run: InProgress, work: Awaitable[str]) -> str:
        """``work`` with the supersede watch beside it: a newer deployment cancels it, and
        it is undone and reported ``Superseded``."""
        outcome: str | Exception
        newer: DeploymentDocument | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                watch = tg.create_task(
                    self._watch_for_newer(run), name="deployment-supersede-watch"
                )
                try:
                    outcome = await work
                except Exception as exc:  # raised below as it came, not in an ExceptionGroup
                    outcome = exc
                finally:
                    watch.cancel()
        except* Superseded as caught:
            superseded = caught.exceptions[0]
            assert isinstance(superseded, Superseded)
            newer = superseded.newer
        if newer is not None:
            return await self._abandon(run, newer)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _enter(self, phase: Phase, doc: DeploymentDocument | None = None) -> None:
        """The deployment in progress reached ``phase`` (the supersede watch looks again);
        a release being handed over stays so."""
        run = self.run_state
        if run is None:
            return
        if run.phase is not Phase.HANDING_OVER:
            run.phase = phase
        if doc is not None:
            run.doc = doc
        self._changed.set()

    async def _watch_for_newer(self, run: InProgress) -> NoReturn:
        """Beside the deployment in progress: every other id requested meanwhile is fetched
        and verified; one made after the deployment in progress raises ``Superseded``
        (``core/supersede.py`` decides, by the phase at that moment)."""
        checked: set[str] = set()
        while True:
            await self._changed.wait()
            self._changed.clear()
            for candidate in list(self._waiting):
                if (
                    candidate in checked
                    or candidate == run.deployment_id
                    or self._skip(candidate)
                    or run.doc is None
                    or run.phase not in UNDO
                ):
                    continue
                checked.add(candidate)
                newer = await self._verified(candidate)
                if newer is None:
                    continue
                if supersedes(newer.as_dict(), run.doc.as_dict(), run.phase):
                    raise Superseded(newer)
                log.info(
                    "core.deployment.not_superseded id=%s by=%s phase=%s",
                    run.deployment_id,
                    candidate,
                    run.phase.value,
                )

    async def _verified(self, deployment_id: str) -> DeploymentDocument | None:
        """The cloud's document ``deployment_id``, verified as on arrival (None: it could not
        be fetched or does not verify; the queue meets it again in its turn)."""
        try:
            signed = await self.api.deployment(deployment_id)
            doc = await verify_document(
                signed.document, signed.signature, self.verify_key, core=self.core, group=self.group
            )
        except Exception as exc:  # the watch must never break the deployment it watches
            log.info("core.deployment.newer_unchecked id=%s error=%s", deployment_id, exc)
            return None
        return doc if doc.deployment_id == deployment_id else None

    async def _abandon(self, run: InProgress, newer: DeploymentDocument) -> str:
        """Undo the cancelled deployment as far as its phase needs and report it
        ``Superseded``; the newer one is next in the queue."""
        deployment_id = run.deployment_id
        undo = UNDO[run.phase]
        self.failed.add(deployment_id)
        rollback_error = await self._rollback() if undo.roll_back else None
        if undo.unstage:
            self.store.unstage(deployment_id)
        freed = 0
        if undo.drop_artifacts:
            keep = [sha for sha, _ in newer.artifacts()]
            for kept in (self.current, self._stored(self.store.pointer("previous"))):
                if kept is not None:
                    keep += [sha for sha, _ in kept.artifacts()]
            freed = self.store.remove_artifacts(run.fetched, keep)
        log.warning(
            "core.deployment.superseded id=%s by=%s phase=%s rolled_back=%s freed_bytes=%d",
            deployment_id,
            newer.deployment_id,
            run.phase.value,
            undo.roll_back,
            freed,
        )
        running = self.current.deployment_id if self.current else "(none)"
        if rollback_error:
            outcome = f"rollback to {running} failed: {rollback_error}"
        elif undo.roll_back:
            outcome = f"cancelled while {run.phase.value}, rolled back to {running}"
        else:
            outcome = f"cancelled while {run.phase.value}, nothing applied"
        self._report(deployment_id, SUPERSEDED, f"superseded by {newer.deployment_id}: {outcome}")
        return SUPERSEDED

    def _stored(self, deployment_id: str | None) -> DeploymentDocument | None:
        return self.store.load(deployment_id) if deployment_id else None

    async def deploy_file(self, request: OfflineFile) -> str | None:
        """Apply an offline deployment file: no cloud needed. The same checks and steps as
        a deployment from the cloud (signature, addressee, artifact hashes, stage, apply,
        health, roll back); the result is written to ``<file>.result``."""
        deployment_id = "?"
        status: str | None
        try:
            offline = unpack(await asyncio.to_thread(request.path.read_bytes))
            deployment_id = offline.deployment_id

            async def from_file(sha256: str) -> bytes:
                try:
                    return offline.artifacts[sha256]
                except KeyError:
                    raise DeploymentError(
                        deployment_id, f"artifact {sha256}: not in the file"
                    ) from None

            log.info("core.deployment.offline id=%s file=%s", deployment_id, request.path)
            status = await self._run_one(
                deployment_id,
                self._deploy_signed(deployment_id, offline.document, offline.signature, from_file),
            )
            detail = self._last_detail.get(deployment_id, "")
            if status is None:
                status, detail = "Skipped", "already running or failed before"
        except (OSError, ContractError) as exc:
            status, detail = FAILURE, f"cannot read {request.path.name}: {exc}"
        result = {"deployment_id": deployment_id, "status": status, "detail": detail}
        write_atomic(
            request.path.with_name(request.path.name + ".result"), json.dumps(result).encode()
        )
        with contextlib.suppress(OSError):
            request.path.unlink()
        return status

    def _report(self, deployment_id: str, status: str, detail: str = "") -> None:
        self._last_detail[deployment_id] = detail
        log.info("core.deployment.status id=%s status=%s detail=%s", deployment_id, status, detail)
        self.report(deployment_id, status, detail)

    async def _deploy(self, deployment_id: str) -> str:
        try:
            signed = await self.api.deployment(deployment_id)
        except CloudAPIError as exc:
            if exc.status == 404:
                self.failed.add(deployment_id)
                self._report(deployment_id, FAILURE, f"not found: {exc}")
                return FAILURE
            raise
        return await self._deploy_signed(
            deployment_id, signed.document, signed.signature, self._cloud_artifact
        )

    async def _deploy_signed(
        self, deployment_id: str, document: str, signature: str, source: ArtifactSource
    ) -> str:
        try:
            doc = await verify_document(
                document, signature, self.verify_key, core=self.core, group=self.group
            )
            if doc.deployment_id != deployment_id:
                raise DeploymentError(deployment_id, f"the document says {doc.deployment_id!r}")
            if self._older(doc):
                # e.g. the cloud's retained notification after an offline deployment:
                # never go back on the operator's behalf (the cloud shows the drift)
                self.failed.add(deployment_id)
                log.warning(
                    "core.deployment.older_not_applied id=%s running=%s",
                    deployment_id,
                    self.current.deployment_id if self.current else None,
                )
                return OLDER
            self._enter(Phase.FETCHING, doc)
            await self._fetch_artifacts(doc, source)
        except keytool.KeytoolError as exc:
            # the signature could not be checked at all: say so (an operator must fix the
            # core's Python), touch nothing, and do not mark the id failed: the next
            # notification, reconnect or poll tries it again
            self._report(
                deployment_id,
                FAILURE,
                f"cannot check the signature: {exc} (run `hedgerow core check`; "
                "the deployment is tried again on the next notification or poll)",
            )
            return FAILURE
        except DeploymentError as exc:
            self.failed.add(deployment_id)
            self._report(deployment_id, FAILURE, exc.reason)
            return FAILURE
        self.store.stage(doc, signature)
        if doc.core_version is not None and (
            self.updater is None or self.updater.needs(doc.core_version)
        ):
            return await self._update_core(doc, doc.core_version)
        self._enter(Phase.APPLYING)
        self._report(
            deployment_id, IN_PROGRESS, plan(self._current_dict(), doc.as_dict()).summary()
        )
        reason = await self._apply_and_check(doc)
        trial = self.updater.trial() if self.updater is not None else None
        if trial is not None and trial.deployment_id == deployment_id:
            return await self._settle_update(doc, trial, reason)
        if reason is None:
            previous = self.current.deployment_id if self.current else None
            self.store.commit(deployment_id, previous)
            self.current = doc
            self.refused = ()
            self._prune_artifacts()
            self._report(deployment_id, SUCCESS)
            return SUCCESS
        self.failed.add(deployment_id)
        rollback_error = await self._rollback()
        if rollback_error:
            self._report(deployment_id, FAILURE, f"{reason}; rollback failed: {rollback_error}")
            return FAILURE
        self._report(deployment_id, ROLLED_BACK, reason)
        return ROLLED_BACK

    async def _update_core(self, doc: DeploymentDocument, release: CoreRelease) -> str:
        """Install the release beside this one, switch, and hand over to it: the new
        version applies this deployment and commits (``_settle_update``)."""
        deployment_id = doc.deployment_id
        if self.updater is None:
            self.failed.add(deployment_id)
            self._report(
                deployment_id,
                FAILURE,
                f"core_version {release.version}: this core runs without a runtime directory",
            )
            return FAILURE
        running = self.updater.running_version
        self._enter(Phase.INSTALLING)
        self._report(
            deployment_id, IN_PROGRESS, f"core update {running} -> {release.version}: installing"
        )
        try:
            await self.updater.install(release, self._artifact_paths(doc))
        except (UpdateError, OSError) as exc:
            self.failed.add(deployment_id)
            self._report(deployment_id, FAILURE, f"core update to {release.version}: {exc}")
            return FAILURE
        self._enter(Phase.HANDING_OVER)
        self.updater.switch(release.version, deployment_id)
        self.handed_over.add(deployment_id)
        self._report(
            deployment_id,
            IN_PROGRESS,
            f"core update {running} -> {release.version}: restarting into it",
        )
        self.restart()
        return IN_PROGRESS

    async def _settle_update(
        self, doc: DeploymentDocument, trial: Pending, reason: str | None
    ) -> str:
        """This process is the trial of a new release: commit when the deployment is
        healthy and the cloud link is up, else roll the release back (the previous
        version, started by the launcher, reports ``RolledBack`` from the outcome)."""
        deployment_id = doc.deployment_id
        updater = self.updater
        assert updater is not None
        if reason is None and self.cloud_linked is not None:
            if not await self.cloud_linked(max(1.0, trial.deadline_s / 2)):
                reason = "no link to the cloud's MQTT endpoint"
        if reason is not None:
            updater.roll_back(trial, f"version {trial.version}: {reason}")
            self.handed_over.add(deployment_id)
            self.restart()
            return ROLLED_BACK
        freed = updater.commit(trial)
        previous = self.current.deployment_id if self.current else None
        self.store.commit(deployment_id, previous)
        self.current = doc
        self.refused = ()
        freed += self._prune_artifacts()
        log.info(
            "core.update.freed version=%s previous=%s freed_bytes=%d",
            trial.version,
            trial.previous,
            freed,
        )
        self._report(
            deployment_id,
            SUCCESS,
            f"core updated {trial.previous_version or trial.previous} -> {trial.version}",
        )
        return SUCCESS

    def _prune_artifacts(self) -> int:
        """After a success: remove the artifacts (function code, a release's wheels) that
        neither ``current`` nor ``previous`` names — they are what a restart verifies and a
        rollback applies. Returns the bytes freed."""
        keep: list[str] = []
        for deployment_id in (self.store.pointer("current"), self.store.pointer("previous")):
            if not deployment_id:
                continue
            kept = self._stored(deployment_id)
            if kept is None:
                return 0  # a document that does not load: remove nothing it might name
            keep += [sha for sha, _ in kept.artifacts()]
        stored = self.store.stored_artifacts()
        freed = self.store.remove_artifacts(stored, keep)
        if freed:
            log.info(
                "core.deployment.artifacts_pruned removed=%d freed_bytes=%d",
                len(set(stored) - set(keep)),
                freed,
            )
        return freed

    def _current_dict(self) -> dict[str, Any] | None:
        return self.current.as_dict() if self.current else None

    def _older(self, doc: DeploymentDocument) -> bool:
        """Whether ``doc`` was made before the deployment the core runs."""
        return self.current is not None and made_before(doc.as_dict(), self.current.as_dict())

    async def _cloud_artifact(self, sha256: str) -> bytes:
        try:
            return await self.api.artifact(sha256)
        except CloudAPIError as exc:
            if exc.status is None or exc.status >= 500:
                raise  # transient: the deployment is tried again on the next trigger
            raise DeploymentError("?", f"artifact {sha256}: {exc}") from exc

    async def _fetch_artifacts(self, doc: DeploymentDocument, source: ArtifactSource) -> None:
        for sha256, size in doc.artifacts():
            if self.store.has_artifact(sha256):
                continue
            try:
                data = await source(sha256)
            except DeploymentError as exc:
                raise DeploymentError(doc.deployment_id, exc.reason) from exc
            if hashlib.sha256(data).hexdigest() != sha256:
                raise DeploymentError(
                    doc.deployment_id, f"artifact {sha256}: the hash does not match"
                )
            if size is not None and len(data) != size:
                raise DeploymentError(
                    doc.deployment_id, f"artifact {sha256}: size {len(data)} != {size}"
                )
            self.store.put_artifact(sha256, data)
            if self.run_state is not None:
                self.run_state.fetched.append(sha256)

    def _artifact_paths(self, doc: DeploymentDocument) -> dict[str, Path]:
        return {sha: self.store.artifact_path(sha) for sha, _ in doc.artifacts()}

    async def _apply_and_check(self, doc: DeploymentDocument) -> str | None:
        try:
            await self.applier.apply(doc, self._artifact_paths(doc))
        except Exception as exc:  # any failure of the new deployment leads to a rollback
            log.warning("core.deployment.apply_failed id=%s error=%s", doc.deployment_id, exc)
            return f"apply failed: {exc}"
        try:
            return await self.applier.health(doc, self.health_timeout)
        except Exception as exc:  # same: the health check itself failing is a failure
            return f"health check failed: {exc}"

    async def _rollback(self) -> str | None:
        target = self.current or EMPTY_DOCUMENT
        try:
            await self.applier.apply(target, self._artifact_paths(target))
        except Exception as exc:  # report it; nothing else can be done
            log.error("core.deployment.rollback_failed error=%s", exc)
            return str(exc)
        log.info("core.deployment.rolled_back to=%s", target.deployment_id or "(empty)")
        return None
