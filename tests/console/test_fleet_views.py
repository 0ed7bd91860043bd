"""The console's fleet views in chromium against a real cloud: claims (list, revoke after
asking, the audit of uses by real ``hedgerow thing provision`` processes), releases (an
uploaded release and the cores on each version, from their heartbeats) and drift (an
offline deployment made here, adopted from the group's page; one the cloud never made,
replaced from the fleet page). The cloud is shared by the session: rows are found by this
module's own names, never by counts."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from hedgerow.contract import CoreLeaf, core_topic
from hedgerow.contract.heartbeat import Heartbeat

from .conftest import RunningCloud, login, screenshots, wait_until

pytestmark = pytest.mark.browser


def provision(cloud: RunningCloud, claim: Path, serial: str, directory: Path) -> str:
    """``hedgerow thing provision`` in its own process; its output (it may be refused)."""
    done = subprocess.run(
        [sys.executable, "-m", "hedgerow", "thing", "provision", "--claim", str(claim),
         "--serial", serial, "--identity-dir", str(directory), "--timeout", "20"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.stdout + done.stderr


def test_claims_view_lists_revokes_after_asking_and_audits_the_uses(
    page: Any, cloud: RunningCloud, tmp_path: Path
) -> None:
    cloud.ok("POST", "/api/v1/groups", json={"name": "cv-plant"})
    cloud.ok("POST", "/api/v1/claim-templates", json={
        "name": "cv-sensors", "kind": "thing", "group": "cv-plant", "name_pattern": "cv-{serial}",
    })  # fmt: skip
    made = cloud.ok("POST", "/api/v1/claims",
                    json={"template": "cv-sensors", "count": 3, "expires": "2d"})  # fmt: skip
    claim_id = made["claim"]["id"]
    claim_file = tmp_path / made["bundle_name"]
    claim_file.write_bytes(base64.b64decode(made["bundle"]))
    assert "thing cv-sn-1 provisioned" in provision(cloud, claim_file, "sn-1", tmp_path / "one")

    login(page, cloud, "#/overview")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Claims").click()
    page.get_by_role("heading", name="Claims", exact=True).wait_for()
    row = page.get_by_role("region", name="Claims", exact=True).locator("tr", has_text=claim_id)
    row.wait_for()
    cells = row.inner_text()
    assert "cv-sensors" in cells and "1 of 3" in cells and "active" in cells, cells
    expires = row.locator("time").first.get_attribute("datetime")
    assert expires == made["claim"]["expires_at"]
    templates = page.get_by_role("region", name="Claim templates")
    assert "cv-{serial}" in templates.locator("tr", has_text="cv-sensors").inner_text()
    screenshots(page, "claims")

    # Revoke asks first: dismissed, nothing happens
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name=f"Revoke claim {claim_id}").click()
    assert cloud.ok("GET", f"/api/v1/claims/{claim_id}")["revoked_at"] is None
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Revoke claim {claim_id}").click()
    row.locator(".badge", has_text="revoked").wait_for()
    assert row.get_by_role("button").count() == 0
    assert cloud.ok("GET", f"/api/v1/claims/{claim_id}")["revoked_at"] is not None

    # a device arriving after the revocation is refused, and the audit says so
    refused = provision(cloud, claim_file, "sn-2", tmp_path / "two")
    assert "revoked" in refused, refused
    row.get_by_role("link", name=claim_id).click()
    page.get_by_role("heading", name=f"Claim {claim_id}").wait_for()
    uses = page.get_by_role("region", name="Uses of the claim, newest first")
    wait_until(lambda: uses.locator("tbody tr").count() == 2, what="both uses in the audit")
    newest, first = uses.locator("tbody tr").nth(0), uses.locator("tbody tr").nth(1)
    assert "sn-2" in newest.inner_text() and "refused" in newest.inner_text()
    assert "was revoked" in newest.inner_text()
    assert "sn-1" in first.inner_text() and "ok" in first.inner_text()
    assert "cv-sn-1" in first.inner_text()
    assert "127.0.0.1:" in first.inner_text() and "('" not in first.inner_text()  # host:port
    assert "1 of 3" in page.locator(".facts").inner_text()
    screenshots(page, "claim-uses")


def wheel(version: str) -> bytes:
    """A minimal hedgerow wheel: what the cloud reads of one is its METADATA."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            f"hedgerow-{version}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: hedgerow\nVersion: {version}\n",
        )
    return buffer.getvalue()


def beat(cloud: RunningCloud, core: str, identity: tuple[Path, Path], **fields: Any) -> None:
    """The core's heartbeat, published at the cloud's MQTT endpoint with its identity."""
    payload = Heartbeat(health="healthy", **fields).to_json()
    cert, key = identity
    cloud.publish_as_core(cert, key, core, [(core_topic(core, CoreLeaf.HEARTBEAT), payload)])


def test_releases_view_shows_uploads_and_which_cores_run_which_version(
    page: Any, cloud: RunningCloud, tmp_path: Path
) -> None:
    data = wheel("7.7.1")
    sha = cloud.ok("POST", "/api/v1/artifacts", content=data)["sha256"]
    cloud.ok("POST", "/api/v1/releases",
             json={"wheels": [{"filename": "hedgerow-7.7.1-py3-none-any.whl", "sha256": sha}]})  # fmt: skip
    for name, version in (("rv-new", "7.7.1"), ("rv-old", "7.7.0")):
        cloud.ok("POST", "/api/v1/groups", json={"name": name})
        identity = cloud.core_identity(f"{name}-core", name, tmp_path)
        beat(cloud, f"{name}-core", identity, version=version)
    wait_until(
        lambda: (cloud.ok("GET", "/api/v1/cores/rv-old-core")["heartbeat"] or {}).get("version"),
        what="the heartbeats recorded",
    )

    login(page, cloud, "#/overview")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Releases").click()
    page.get_by_role("heading", name="Releases").wait_for()
    release = page.get_by_role("region", name="Releases, newest first").locator(
        "tbody tr", has=page.locator("td", has_text="7.7.1")
    )
    release.first.wait_for()
    cells = release.first.inner_text()
    assert f"{len(data)} B" in cells and "rv-new-core" in cells and "rv-old-core" not in cells
    versions = page.get_by_role("region", name="Cores by the version they run")
    old = versions.locator("tbody tr", has=page.locator("td", has_text="7.7.0"))
    assert "not uploaded here" in old.inner_text() and "rv-old-core" in old.inner_text()
    new = versions.locator("tbody tr", has=page.locator("td", has_text="7.7.1"))
    assert "uploaded" in new.inner_text() and "rv-new-core" in new.inner_text()
    screenshots(page, "releases")


def test_drift_shown_on_the_fleet_and_group_pages_replaced_and_adopted(
    page: Any, cloud: RunningCloud, tmp_path: Path
) -> None:
    latest: dict[str, str] = {}
    identities: dict[str, tuple[Path, Path]] = {}
    for group in ("dv-offline", "dv-foreign"):
        cloud.ok("POST", "/api/v1/groups", json={"name": group})
        identities[group] = cloud.core_identity(f"{group}-core", group, tmp_path)
        made = cloud.ok("POST", f"/api/v1/groups/{group}/deployments", json={})
        latest[group] = made["deployment_id"]
    exported = cloud.ok("POST", "/api/v1/groups/dv-offline/deployments/export")
    offline = exported["deployment"]["deployment_id"]
    for group, running in (("dv-offline", offline), ("dv-foreign", "made-elsewhere")):
        beat(cloud, f"{group}-core", identities[group], deployment=running)
    wait_until(lambda: cloud.ok("GET", "/api/v1/groups/dv-foreign/drift")["drift"],
               what="the drift recorded")  # fmt: skip

    page.on("dialog", lambda dialog: dialog.accept())
    login(page, cloud, "#/fleet")
    drift = page.get_by_role("region", name="Cores running another deployment")
    foreign = drift.locator("tr", has_text="dv-foreign-core")
    foreign.wait_for()
    assert "made-elsewhere" in foreign.inner_text() and "did not make" in foreign.inner_text()
    assert foreign.get_by_role("button", name="Adopt what dv-foreign-core runs").is_disabled()
    offline_row = drift.locator("tr", has_text="dv-offline-core")
    assert offline in offline_row.inner_text() and "offline deployment made here" in (
        offline_row.inner_text()
    )
    assert offline_row.get_by_role("button", name="Adopt what dv-offline-core runs").is_enabled()
    screenshots(page, "fleet-drift")

    # Replace: the group's current deployment again, over what the core runs
    foreign.get_by_role("button", name="Replace what dv-foreign-core runs").click()
    replaced = wait_until(
        lambda: (
            (d := cloud.ok("GET", "/api/v1/groups/dv-foreign/drift"))["latest"]
            != latest["dv-foreign"]
            and d["latest"]
        ),
        what="the replacement deployment",
    )
    newest = cloud.ok("GET", "/api/v1/groups/dv-foreign/deployments", params={"limit": 1})
    assert newest["items"][0]["deployment_id"] == replaced
    assert newest["items"][0]["restores"] == latest["dv-foreign"]
    wait_until(lambda: replaced in foreign.inner_text(), what="the row naming the replacement")

    # Adopt, from the group's page: the offline deployment becomes the current one
    page.goto(f"{cloud.url}/console/#/groups/dv-offline")
    panel = page.locator("[data-drift=running]")
    panel.wait_for()
    assert offline in panel.inner_text() and latest["dv-offline"] in panel.inner_text()
    screenshots(page, "group-drift")
    panel.get_by_role("button", name="Adopt what dv-offline-core runs").click()
    panel.wait_for(state="detached")
    after = cloud.ok("GET", "/api/v1/groups/dv-offline/drift")
    assert not after["drift"] and after["latest"] == offline
    page.goto(f"{cloud.url}/console/#/fleet")
    page.get_by_role("heading", name="Fleet health").wait_for()
    foreign.wait_for()  # still drifting until its core reports the replacement
    assert drift.locator("tr", has_text="dv-offline-core").count() == 0
