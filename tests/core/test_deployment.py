from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from hedgerow import pki
from hedgerow.contract.offline import OfflineDeployment, pack
from hedgerow.core.deployment import (
    FAILURE,
    IN_PROGRESS,
    OFFLINE_SUFFIX,
    OLDER,
    ROLLED_BACK,
    SUCCESS,
    DeploymentAgent,
    DeploymentDocument,
    DeploymentStore,
    OfflineFile,
    Refusal,
)
from hedgerow.core.plan import plan

from .helpers import FakeAPI, document, function_entry, function_zip, raw_verify_key, sign


class FakeApplier:
    def __init__(self) -> None:
        self.applied: list[str] = []
        self.fail_apply: set[str] = set()
        self.fail_health: set[str] = set()
        self.artifacts: list[Mapping[str, Path]] = []

    async def apply(self, doc: DeploymentDocument, artifacts: Mapping[str, Path]) -> None:
        if doc.deployment_id in self.fail_apply:
            raise RuntimeError("function temp-correct would not start")
        for path in artifacts.values():
            assert path.exists()
        self.applied.append(doc.deployment_id)
        self.artifacts.append(artifacts)

    async def health(self, doc: DeploymentDocument, limit_s: float) -> str | None:
        return "temp-correct crashed" if doc.deployment_id in self.fail_health else None


@pytest.fixture
def setup(
    tmp_path: Path,
) -> tuple[DeploymentAgent, FakeAPI, FakeApplier, list[tuple[str, str, str]]]:
    key = pki.new_signing_key()
    api = FakeAPI(key)
    applier = FakeApplier()
    reports: list[tuple[str, str, str]] = []
    agent = DeploymentAgent(
        api=api,
        store=DeploymentStore(tmp_path / "deployments"),
        applier=applier,
        report=lambda i, s, d: reports.append((i, s, d)),
        verify_key=raw_verify_key(key),
        core="pi-1",
        group="factory-1",
    )
    return agent, api, applier, reports


Setup = tuple[DeploymentAgent, FakeAPI, FakeApplier, list[tuple[str, str, str]]]


async def test_success_then_dedup(setup: Setup) -> None:
    agent, api, applier, reports = setup
    art = function_zip()
    api.add(document("d-1", functions=(function_entry("fn", art),)), artifacts={"fn": art})
    assert await agent.deploy("d-1") == SUCCESS
    assert [r[1] for r in reports] == [IN_PROGRESS, SUCCESS]
    assert applier.applied == ["d-1"]
    assert await agent.deploy("d-1") is None  # de-duplicated by id
    assert agent.store.pointer("current") == "d-1"


async def test_wrong_signature_is_rejected_and_nothing_is_touched(setup: Setup) -> None:
    agent, api, applier, reports = setup
    api.add(document("d-1"))
    await agent.deploy("d-1")
    other = pki.new_signing_key()
    text = document("d-2", things=("evil",))
    api.add(text, signature=sign(other, text))
    assert await agent.deploy("d-2") == FAILURE
    assert reports[-1] == ("d-2", FAILURE, "the signature does not verify")
    assert applier.applied == ["d-1"]
    assert agent.current is not None and agent.current.deployment_id == "d-1"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json at all", "not JSON"),
        (document("d-9", core="pi-2"), "core"),
        (document("d-9", group="other"), "group"),
        (document("d-9", subscriptions=(("device:x", "a", "cloud"),)), "subscriptions"),
    ],
)
async def test_corrupt_documents_fail(setup: Setup, text: str, reason: str) -> None:
    agent, api, applier, reports = setup
    from hedgerow.core.cloudapi import SignedDocument

    api.documents["d-9"] = SignedDocument(text, sign(api.signing_key, text))
    assert await agent.deploy("d-9") == FAILURE
    assert reason in reports[-1][2]
    assert applier.applied == []


async def test_artifact_hash_mismatch_fails(setup: Setup) -> None:
    agent, api, applier, reports = setup
    art = function_zip()
    api.add(document("d-1", functions=(function_entry("fn", art),)))
    api.artifacts[function_entry("fn", art)["artifact"]["sha256"]] = art + b"tampered"
    assert await agent.deploy("d-1") == FAILURE
    assert "hash does not match" in reports[-1][2]
    assert applier.applied == []


@pytest.mark.parametrize("failure", ["apply", "health"])
async def test_failure_rolls_back_to_previous(setup: Setup, failure: str) -> None:
    agent, api, applier, reports = setup
    api.add(document("d-1"))
    assert await agent.deploy("d-1") == SUCCESS
    api.add(document("d-2"))
    (applier.fail_apply if failure == "apply" else applier.fail_health).add("d-2")
    assert await agent.deploy("d-2") == ROLLED_BACK
    assert reports[-1][:2] == ("d-2", ROLLED_BACK)
    assert ("would not start" if failure == "apply" else "crashed") in reports[-1][2]
    assert applier.applied[-1] == "d-1"
    assert agent.current is not None and agent.current.deployment_id == "d-1"
    assert agent.store.pointer("current") == "d-1"
    assert await agent.deploy("d-2") is None  # a failed id is not retried


async def test_restore_applies_last_good_without_the_cloud(setup: Setup, tmp_path: Path) -> None:
    agent, api, applier, _ = setup
    art = function_zip()
    api.add(document("d-1", functions=(function_entry("fn", art),)), artifacts={"fn": art})
    await agent.deploy("d-1")
    api.offline = True
    fresh = FakeApplier()
    again = DeploymentAgent(
        api=api,
        store=DeploymentStore(tmp_path / "deployments"),
        applier=fresh,
        report=lambda *a: None,
        verify_key=raw_verify_key(api.signing_key),
        core="pi-1",
        group="factory-1",
    )
    doc = await again.restore()
    assert doc is not None and doc.deployment_id == "d-1"
    assert fresh.applied == ["d-1"]
    assert list(fresh.artifacts[0]) == [function_entry("fn", art)["artifact"]["sha256"]]


def _restarted(api: FakeAPI, tmp_path: Path) -> tuple[DeploymentAgent, FakeApplier]:
    """A fresh agent over the same disk, the cloud away: what a restart sees."""
    api.offline = True
    applier = FakeApplier()
    agent = DeploymentAgent(
        api=api,
        store=DeploymentStore(tmp_path / "deployments"),
        applier=applier,
        report=lambda *a: None,
        verify_key=raw_verify_key(api.signing_key),
        core="pi-1",
        group="factory-1",
    )
    return agent, applier


async def _two_deployments(setup: Setup) -> bytes:
    """d-1 (no functions) then d-2 (one function) deployed: d-2 current, d-1 previous."""
    agent, api, _, _ = setup
    api.add(document("d-1", things=("bme680-1",)))
    assert await agent.deploy("d-1") == SUCCESS
    art = function_zip()
    api.add(
        document("d-2", things=("bme680-1",), functions=(function_entry("fn", art),)),
        artifacts={"fn": art},
    )
    assert await agent.deploy("d-2") == SUCCESS
    return art


async def test_restore_refuses_an_edited_document_and_falls_back(
    setup: Setup, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await _two_deployments(setup)
    path = tmp_path / "deployments" / "d-2.json"
    data = json.loads(path.read_text())
    data["things"].append("intruder")
    data["settings"]["open_broker"] = True
    path.write_text(json.dumps(data))
    agent, applier = _restarted(setup[1], tmp_path)
    doc = await agent.restore()
    assert doc is not None and doc.deployment_id == "d-1"
    assert applier.applied == ["d-1"]  # the edited one was never applied
    assert agent.refused == (
        Refusal("d-2", "d-2.json", "d-2.json: the signature does not verify (d-2.sig)"),
    )
    assert "core.deployment.refused id=d-2 file=d-2.json" in caplog.text
    assert agent.store.pointer("current") == "d-1"  # not tried again at the next start


async def test_restore_refuses_a_swapped_artifact_and_falls_back(
    setup: Setup, tmp_path: Path
) -> None:
    art = await _two_deployments(setup)
    sha = function_entry("fn", art)["artifact"]["sha256"]
    stored = tmp_path / "deployments" / "artifacts" / f"{sha}.zip"
    stored.write_bytes(function_zip(code="import os\ndef handler(e, c):\n    os.system('id')\n"))
    agent, applier = _restarted(setup[1], tmp_path)
    doc = await agent.restore()
    assert doc is not None and doc.deployment_id == "d-1"
    assert applier.applied == ["d-1"]
    (refusal,) = agent.refused
    assert refusal.file == f"artifacts/{sha}.zip"
    assert "sha256 does not match" in refusal.reason


async def test_restore_refuses_a_forged_pointer_and_a_missing_signature(
    setup: Setup, tmp_path: Path
) -> None:
    """A document written beside the real ones (no signature) and pointed to as current."""
    await _two_deployments(setup)
    directory = tmp_path / "deployments"
    (directory / "d-evil.json").write_text(document("d-evil", settings={"open_broker": True}))
    (directory / "current").write_text("d-evil")
    agent, applier = _restarted(setup[1], tmp_path)
    doc = await agent.restore()
    # previous is d-1 (d-2 was current before the forged pointer)
    assert doc is not None and doc.deployment_id == "d-1"
    assert [(r.deployment_id, r.file) for r in agent.refused] == [("d-evil", "d-evil.sig")]
    assert applier.applied == ["d-1"]


async def test_restore_with_nothing_that_verifies_applies_nothing(
    setup: Setup, tmp_path: Path
) -> None:
    setup[1].add(document("d-1"))
    assert await setup[0].deploy("d-1") == SUCCESS
    (tmp_path / "deployments" / "d-1.sig").write_text(sign(pki.new_signing_key(), document("d-1")))
    agent, applier = _restarted(setup[1], tmp_path)
    assert await agent.restore() is None
    assert applier.applied == []
    assert [r.deployment_id for r in agent.refused] == ["d-1"]
    # the cloud sends it again: verified afresh, the files replaced, the refusal cleared
    setup[1].offline = False
    assert await agent.deploy("d-1") == SUCCESS
    assert agent.refused == ()
    assert (await agent.verify_stored("d-1")).deployment_id == "d-1"


async def test_worker_runs_requests_one_at_a_time(setup: Setup) -> None:
    import asyncio

    agent, api, applier, reports = setup
    api.add(document("d-1"))
    task = asyncio.create_task(agent.run())
    agent.request("d-1")
    agent.request("d-1")
    agent.request(None)
    await asyncio.wait_for(agent.idle.wait(), 5)
    task.cancel()
    assert applier.applied == ["d-1"]
    assert [r[1] for r in reports].count(SUCCESS) == 1


def test_plan_says_what_changes() -> None:
    import json

    art = function_zip()
    old = json.loads(document("a", functions=(function_entry("f", art), function_entry("g", art))))
    new = json.loads(
        document(
            "b",
            functions=(function_entry("f", art, memory_mb=256), function_entry("h", art)),
            subscriptions=(("thing:x", "a/#", "cloud"),),
        )
    )
    p = plan(old, new)
    assert (p.start, p.stop, p.replace, p.keep) == (("h",), ("g",), ("f",), ())
    assert p.routes_changed and not p.things_changed and p.functions_changed
    assert "start=h" in p.summary()
    assert plan(new, new).summary() == "no changes"


async def test_cloud_outage_during_fetch_is_retried_not_failed(setup: Setup) -> None:
    from hedgerow.core.errors import CloudAPIError

    agent, api, applier, reports = setup
    art = function_zip()
    api.add(document("d-1", functions=(function_entry("fn", art),)), artifacts={"fn": art})
    real_artifact = api.artifact

    async def unreachable(sha256: str) -> bytes:
        raise CloudAPIError("connection refused", "artifact")

    api.artifact = unreachable  # type: ignore[method-assign]
    with pytest.raises(CloudAPIError):
        await agent.deploy("d-1")
    assert "d-1" not in agent.failed and applier.applied == []
    api.artifact = real_artifact  # type: ignore[method-assign]
    assert await agent.deploy("d-1") == SUCCESS


async def test_tampered_and_malformed_signatures_are_rejected(setup: Setup) -> None:
    import base64

    agent, api, applier, reports = setup
    api.add(document("d-1"))
    assert await agent.deploy("d-1") == SUCCESS
    # signed, then changed on the way
    api.add(document("d-2", things=("evil",)), signature=sign(api.signing_key, document("d-2")))
    # not base64 at all, and a signature one byte short
    api.add(document("d-3"), signature="not base64!")
    short = base64.b64decode(sign(api.signing_key, document("d-4")))[:-1]
    api.add(document("d-4"), signature=base64.b64encode(short).decode())
    for deployment_id in ("d-2", "d-3", "d-4"):
        assert await agent.deploy(deployment_id) == FAILURE
        assert reports[-1] == (deployment_id, FAILURE, "the signature does not verify")
    assert applier.applied == ["d-1"]
    assert agent.current is not None and agent.current.deployment_id == "d-1"
    assert agent.store.pointer("current") == "d-1"


async def test_a_key_tool_that_cannot_run_is_reported_and_retried_not_failed(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signature could not be checked at all: the cloud hears why (Failure, with what to
    do), nothing is applied, and the same id is tried again on the next trigger."""
    from hedgerow.core import keytool

    agent, api, applier, reports = setup
    api.add(document("d-1"))
    monkeypatch.setattr(keytool, "CHILD_MODULE", "hedgerow.core.no_such_module")
    assert await agent.deploy("d-1") == FAILURE
    assert "d-1" not in agent.failed and applier.applied == []
    assert [(r[0], r[1]) for r in reports] == [("d-1", FAILURE)]
    assert "no_such_module" in reports[0][2] and "hedgerow core check" in reports[0][2]
    monkeypatch.undo()
    assert await agent.deploy("d-1") == SUCCESS


# ---- offline files, deadlines, never going back ------------------------------------------


def _offline_file(api: FakeAPI, tmp_path: Path, text: str, artifacts: dict[str, bytes]) -> Path:
    data = json.loads(text)
    path = tmp_path / "inbox" / f"{data['deployment_id']}{OFFLINE_SUFFIX}"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(
        pack(
            OfflineDeployment(
                data["deployment_id"],
                data["group"],
                data["core"],
                text,
                sign(api.signing_key, text),
                {hashlib.sha256(a).hexdigest(): a for a in artifacts.values()},
            )
        )
    )
    return path


async def test_an_offline_file_is_applied_with_no_cloud_and_then_wins_over_older_ones(
    setup: Setup, tmp_path: Path
) -> None:
    agent, api, applier, reports = setup
    art = function_zip()
    api.add(document("d-1", functions=(function_entry("fn", art),)), artifacts={"fn": art})
    assert await agent.deploy("d-1") == SUCCESS
    api.offline = True
    art2 = function_zip(code="def handler(event, context):\n    return 2\n")
    text = document(
        "d-2", functions=(function_entry("fn", art2),), created_at="2026-11-27T00:00:00Z"
    )
    path = _offline_file(api, tmp_path, text, {"fn": art2})
    assert await agent.deploy_file(OfflineFile(path)) == SUCCESS
    assert applier.applied == ["d-1", "d-2"]
    result = json.loads(path.with_name(path.name + ".result").read_text())
    assert result == {"deployment_id": "d-2", "status": SUCCESS, "detail": ""}
    assert not path.exists()
    assert agent.store.pointer("current") == "d-2" and agent.store.pointer("previous") == "d-1"
    # back online, the cloud's retained notification still names d-1 (older): not applied
    api.offline = False
    assert await agent.deploy("d-1") == OLDER  # fetched, verified, not applied
    assert await agent.deploy("d-1") is None  # and not fetched again
    api.add(document("d-0", created_at="2026-11-26T12:00:00Z"))
    assert await agent.deploy("d-0") == OLDER
    assert applier.applied == ["d-1", "d-2"]
    # a newer one from the cloud (e.g. the operator's replace) is applied
    api.add(document("d-3", created_at="2026-11-28T00:00:00Z"))
    assert await agent.deploy("d-3") == SUCCESS


async def test_an_offline_file_that_does_not_verify_changes_nothing(
    setup: Setup, tmp_path: Path
) -> None:
    agent, api, applier, reports = setup
    other = FakeAPI(pki.new_signing_key())
    path = _offline_file(other, tmp_path, document("d-9"), {})
    assert await agent.deploy_file(OfflineFile(path)) == FAILURE
    result = json.loads(path.with_name(path.name + ".result").read_text())
    assert result["detail"] == "the signature does not verify"
    bad = tmp_path / "inbox" / f"junk{OFFLINE_SUFFIX}"
    bad.write_bytes(b"not a tar")
    assert await agent.deploy_file(OfflineFile(bad)) == FAILURE
    assert "not a tar file" in json.loads(bad.with_name(bad.name + ".result").read_text())["detail"]
    assert applier.applied == []


async def test_a_stuck_deployment_fails_at_its_deadline_and_the_next_one_runs(
    setup: Setup,
) -> None:
    agent, api, applier, reports = setup
    api.add(document("d-1"))
    assert await agent.deploy("d-1") == SUCCESS
    agent.deadline_s = 2.0  # the signature check runs in a child process: not 0
    release = asyncio.Event()
    stuck_health = applier.health

    async def hangs(doc: DeploymentDocument, limit_s: float) -> str | None:
        if doc.deployment_id == "d-2":
            await release.wait()  # never set: a health check that never returns
        return await stuck_health(doc, limit_s)

    applier.health = hangs  # type: ignore[method-assign]
    api.add(document("d-2"))
    api.add(document("d-3"))
    worker = asyncio.create_task(agent.run())
    try:
        agent.request("d-2")
        agent.request("d-3")
        async with asyncio.timeout(20):
            while agent.results.get("d-3") is None:
                await asyncio.sleep(0.01)
    finally:
        worker.cancel()
    assert agent.results["d-2"] == FAILURE
    d2 = [r for r in reports if r[0] == "d-2"]
    assert d2[-1][2].startswith("deadline exceeded") and "rolled back" in d2[-1][2]
    assert agent.results["d-3"] == SUCCESS
    assert applier.applied == ["d-1", "d-2", "d-1", "d-3"]  # d-2, rolled back, then d-3


async def _until(predicate: object, what: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_a_newer_deployment_cancels_a_hanging_health_check_and_runs_at_once(
    setup: Setup, tmp_path: Path
) -> None:
    agent, api, applier, reports = setup
    shared, own = function_zip("shared"), function_zip("own", "def handler(e, c):\n    return 1\n")
    api.add(
        document("d-1", created_at="2026-12-01T10:00:00+00:00"),
        artifacts={"s": shared},
    )
    assert await agent.deploy("d-1") == SUCCESS
    hang = asyncio.Event()  # never set: a health check that never returns
    healthy = applier.health

    async def hangs(doc: DeploymentDocument, limit_s: float) -> str | None:
        if doc.deployment_id == "d-2":
            await hang.wait()
        return await healthy(doc, limit_s)

    applier.health = hangs  # type: ignore[method-assign]
    functions = (function_entry("shared", shared), function_entry("own", own))
    api.add(
        document("d-2", functions=functions, created_at="2026-12-01T10:01:00+00:00"),
        artifacts={"s": shared, "o": own},
    )
    api.add(
        document("d-3", functions=functions[:1], created_at="2026-12-01T10:02:00+00:00"),
        artifacts={"s": shared},
    )
    worker = asyncio.create_task(agent.run())
    try:
        agent.request("d-2")
        await _until(lambda: "d-2" in applier.applied, "d-2 applied")
        started = asyncio.get_running_loop().time()
        agent.request("d-3")
        await _until(lambda: agent.results.get("d-3") is not None, "d-3 done")
        took = asyncio.get_running_loop().time() - started
    finally:
        worker.cancel()
    assert agent.results["d-2"] == "Superseded" and agent.results["d-3"] == SUCCESS
    assert took < 10, took  # not the 300 s deadline, not the health timeout
    assert applier.applied == ["d-1", "d-2", "d-1", "d-3"]  # d-2 undone, then d-3
    (final,) = [r for r in reports if r[0] == "d-2" and r[1] == "Superseded"]
    assert final[2] == "superseded by d-3: cancelled while applying, rolled back to d-1"
    store = agent.store
    assert (
        not (store.directory / "d-2.json").exists() and not (store.directory / "d-2.sig").exists()
    )
    own_sha = hashlib.sha256(own).hexdigest()
    assert not store.artifact_path(own_sha).exists()  # only d-2 named it
    assert store.has_artifact(hashlib.sha256(shared).hexdigest())  # d-3 needs it
    assert store.pointer("current") == "d-3" and store.pointer("previous") == "d-1"
    assert "d-2" in agent.failed  # never retried


async def test_a_newer_deployment_cancels_a_slow_download_before_anything_is_staged(
    setup: Setup,
) -> None:
    agent, api, applier, reports = setup
    slow, fast = function_zip("slow"), function_zip("fast")
    api.add(
        document(
            "d-1", functions=(function_entry("slow", slow),), created_at="2026-12-01T10:00:00Z"
        ),
        artifacts={"s": slow},
    )
    api.add(
        document(
            "d-2", functions=(function_entry("fast", fast),), created_at="2026-12-01T10:05:00Z"
        ),
        artifacts={"f": fast},
    )
    slow_sha = hashlib.sha256(slow).hexdigest()
    downloading = asyncio.Event()
    never = asyncio.Event()
    fetch = api.artifact

    async def crawls(sha256: str) -> bytes:
        if sha256 == slow_sha:
            downloading.set()
            await never.wait()  # a download that does not finish
        return await fetch(sha256)

    api.artifact = crawls  # type: ignore[method-assign]
    worker = asyncio.create_task(agent.run())
    try:
        agent.request("d-1")
        async with asyncio.timeout(20):
            await downloading.wait()
        agent.request("d-2")
        await _until(lambda: agent.results.get("d-2") is not None, "d-2 done")
    finally:
        worker.cancel()
    assert agent.results == {"d-1": "Superseded", "d-2": SUCCESS}
    assert applier.applied == ["d-2"]  # d-1 never touched the core: nothing to roll back
    (final,) = [r for r in reports if r[0] == "d-1" and r[1] == "Superseded"]
    assert final[2] == "superseded by d-2: cancelled while fetching, nothing applied"
    assert not agent.store.artifact_path(slow_sha).exists()
    assert not (agent.store.directory / "d-1.json").exists()


async def test_an_older_deployment_never_cancels_the_one_in_progress(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="hedgerow.core.deployment")
    agent, api, applier, _reports = setup
    gate = asyncio.Event()
    healthy = applier.health

    async def waits(doc: DeploymentDocument, limit_s: float) -> str | None:
        if doc.deployment_id == "d-new":
            await gate.wait()
        return await healthy(doc, limit_s)

    applier.health = waits  # type: ignore[method-assign]
    api.add(document("d-new", created_at="2026-12-01T10:05:00Z"))
    api.add(document("d-old", created_at="2026-12-01T10:00:00Z"))  # e.g. a retained notice
    worker = asyncio.create_task(agent.run())
    try:
        agent.request("d-new")
        await _until(lambda: "d-new" in applier.applied, "d-new applied")
        agent.request("d-old")
        await _until(
            lambda: any("not_superseded id=d-new by=d-old" in r.message for r in caplog.records),
            "the watch's verdict on d-old",
        )
        assert agent.in_progress == "d-new"
        gate.set()
        await _until(lambda: agent.results.get("d-old") is not None, "d-old handled")
    finally:
        worker.cancel()
    assert agent.results == {"d-new": SUCCESS, "d-old": OLDER}
    assert applier.applied == ["d-new"]


def test_supersede_rules() -> None:
    from hedgerow.core.supersede import UNDO, Phase, Undo, made_before, supersedes

    early = {"deployment_id": "a", "created_at": "2026-12-01T10:00:00Z"}
    late = {"deployment_id": "b", "created_at": "2026-12-01T10:00:01+00:00"}
    naive = {"deployment_id": "c", "created_at": "2026-12-01T10:00:02"}  # read as UTC
    assert made_before(early, late) and not made_before(late, early)
    assert made_before(late, naive)
    assert not made_before(early, {"deployment_id": "x"}) and not made_before(early, early)
    assert supersedes(late, early, Phase.APPLYING) and not supersedes(early, late, Phase.APPLYING)
    assert not supersedes(late, early, Phase.HANDING_OVER)  # a release handed over: never
    assert Phase.HANDING_OVER not in UNDO
    assert UNDO[Phase.CHECKING] == Undo(roll_back=False, unstage=False, drop_artifacts=False)
    assert UNDO[Phase.APPLYING].roll_back and not UNDO[Phase.FETCHING].roll_back


async def test_a_success_keeps_only_the_artifacts_current_and_previous_name(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="hedgerow.core.deployment")
    agent, api, _applier, _reports = setup
    codes = [function_zip("fn", f"def handler(e, c):\n    return {n}\n") for n in range(3)]
    for n, code in enumerate(codes, 1):
        api.add(document(f"d-{n}", functions=(function_entry("fn", code),)), artifacts={"fn": code})
        assert await agent.deploy(f"d-{n}") == SUCCESS
    shas = [hashlib.sha256(code).hexdigest() for code in codes]
    assert agent.store.stored_artifacts() == sorted(shas[1:])  # d-3 runs, d-2 to roll back to
    (pruned,) = [r.getMessage() for r in caplog.records if "artifacts_pruned" in r.getMessage()]
    assert pruned == f"core.deployment.artifacts_pruned removed=1 freed_bytes={len(codes[0])}"
    # a restart verifies and applies both kept deployments from disk
    assert (await agent.verify_stored("d-3")).deployment_id == "d-3"
    assert (await agent.verify_stored("d-2")).deployment_id == "d-2"


class HangingInstall:
    """A ``RuntimeUpdater`` whose install of a release never finishes (the real one is
    cancelled for real in tests/core/test_runtime.py); records what it was asked."""

    running_version = "1.0"

    def __init__(self) -> None:
        self.installing = asyncio.Event()
        self.cancelled = False
        self.switched: list[str] = []

    def needs(self, release: object) -> bool:
        return release is not None

    def trial(self) -> None:
        return None

    async def install(self, release: object, wheels: Mapping[str, Path]) -> None:
        self.installing.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    def switch(self, version: str, deployment_id: str) -> None:
        self.switched.append(version)


async def test_a_newer_deployment_cancels_a_core_update_while_it_installs(
    setup: Setup,
) -> None:
    agent, api, applier, reports = setup
    updater = HangingInstall()
    agent.updater = updater  # type: ignore[assignment]
    wheel = b"not really a wheel, only its bytes matter here"
    sha = hashlib.sha256(wheel).hexdigest()
    release = {
        "version": "2.0",
        "wheels": [
            {"filename": "hedgerow-2.0-py3-none-any.whl", "sha256": sha, "size": len(wheel)}
        ],
    }
    update = json.loads(document("d-1", created_at="2026-12-01T10:00:00Z"))
    update["core_version"] = release
    api.add(json.dumps(update), artifacts={"w": wheel})
    api.add(document("d-2", created_at="2026-12-01T10:01:00Z"))
    worker = asyncio.create_task(agent.run())
    try:
        agent.request("d-1")
        async with asyncio.timeout(20):
            await updater.installing.wait()
        agent.request("d-2")
        await _until(lambda: agent.results.get("d-2") is not None, "d-2 done")
    finally:
        worker.cancel()
    assert updater.cancelled and updater.switched == []  # never handed over
    assert agent.results == {"d-1": "Superseded", "d-2": SUCCESS}
    (final,) = [r for r in reports if r[0] == "d-1" and r[1] == "Superseded"]
    assert final[2] == "superseded by d-2: cancelled while installing, nothing applied"
    assert applier.applied == ["d-2"]
    assert not agent.store.artifact_path(sha).exists()  # the wheel only d-1 named
    assert not (agent.store.directory / "d-1.json").exists()
