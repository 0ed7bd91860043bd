"""Things and certificates in the console: expiry, a new bundle, revocation, filters."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from hedgerow import pki

from .conftest import RunningCloud, login, shot, wait_until

pytestmark = pytest.mark.browser


def test_new_certificate_bundle_and_revocation(
    page: Any, cloud: RunningCloud, tmp_path: Path
) -> None:
    cloud.ok("POST", "/api/v1/groups", json={"name": "lab"})
    first = cloud.ok("POST", "/api/v1/things", json={"name": "probe-1", "groups": ["lab"]})
    old = pki.fingerprint(pki.cert_from_pem(first["certificate"].encode()))
    cloud.ok("POST", "/api/v1/things", json={"name": "probe-2"})
    page.on("dialog", lambda dialog: dialog.accept())
    login(page, cloud, "#/things")
    things = page.get_by_role("region", name="Things", exact=True)
    row = things.locator("tr", has_text="probe-1")
    row.wait_for()
    assert "(in 36" in row.locator("td[data-label='Next expiry']").inner_text()

    # a new certificate: the bundle is offered as a zip with a fresh key
    page.get_by_role("button", name="New certificate for probe-1").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download probe-1-certs.zip").click()
    path = tmp_path / "probe-1.zip"
    download.value.save_as(path)
    with zipfile.ZipFile(path) as archive:
        cert_pem = archive.read("probe-1.cert.pem")
        key_pem = archive.read("probe-1.key")
        assert archive.read("root-ca.pem") == cloud.root_ca.read_bytes()
    cert = pki.cert_from_pem(cert_pem)
    new = pki.fingerprint(cert)
    assert new != old and cert.public_key() == pki.key_from_pem(key_pem).public_key()
    listed = cloud.ok("GET", "/api/v1/certificates", params={"owner": "probe-1"})["items"]
    assert {c["fingerprint"] for c in listed} == {old, new}

    # revoke the old certificate only
    certificates = page.get_by_role("region", name="Certificates", exact=True)
    certificates.get_by_role("button", name=f"Revoke certificate {old[:16]} of probe-1").click()
    certificates.locator("tr", has_text=old[:16]).locator(".badge-revoked").wait_for()
    status = {
        c["fingerprint"]: c["status"]
        for c in cloud.ok("GET", "/api/v1/certificates", params={"owner": "probe-1"})["items"]
    }
    assert status == {old: "revoked", new: "active"}
    shot(page, "things-revoked-desktop")

    # revoke every certificate of a thing; the filter shows only its certificates
    page.get_by_role("button", name="Revoke probe-2").click()
    expiry = things.locator("tr", has_text="probe-2").locator("td[data-label='Next expiry']")
    expiry.locator(".badge-revoked").wait_for()  # a revoked thing says so
    page.get_by_label("Owner").fill("probe-2")
    page.get_by_role("button", name="Filter").click()
    wait_until(
        lambda: page.evaluate("location.hash") == "#/things?owner=probe-2", what="the filter"
    )
    certificates = page.get_by_role("region", name="Certificates", exact=True)
    certificates.locator(".badge-revoked").wait_for()
    owners = certificates.locator("td[data-label='Owner']").all_inner_texts()
    assert owners == ["probe-2"]
    assert expiry.inner_text() == "–"


def test_remove_subscription_function_thing_and_group(page: Any, cloud: RunningCloud) -> None:
    cloud.ok("POST", "/api/v1/groups", json={"name": "scratch"})
    cloud.ok("POST", "/api/v1/things", json={"name": "tmp-1", "groups": ["scratch"]})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("f.py", "def handler(event, context):\n    return event\n")
    sha = cloud.ok("POST", "/api/v1/artifacts", content=buffer.getvalue())["sha256"]
    cloud.ok(
        "POST",
        "/api/v1/groups/scratch/functions",
        json={"name": "echo", "handler": "f.handler", "artifact": sha},
    )
    cloud.ok(
        "POST",
        "/api/v1/groups/scratch/subscriptions",
        json={"source": "thing:tmp-1", "topic": "t/#", "target": "function:echo"},
    )
    page.on("dialog", lambda dialog: dialog.accept())
    login(page, cloud, "#/groups/scratch")
    subscriptions = page.get_by_role("region", name="Subscriptions of scratch")
    subscriptions.get_by_role("button", name="Remove thing:tmp-1 t/# to function:echo").click()
    page.get_by_text("No subscriptions: nothing is routed yet.").wait_for()
    assert cloud.ok("GET", "/api/v1/groups/scratch/subscriptions")["items"] == []

    page.get_by_role("button", name="Delete echo").click()
    page.get_by_text("No functions yet.").wait_for()
    assert cloud.ok("GET", "/api/v1/groups/scratch/functions")["items"] == []

    page.get_by_role("button", name="Remove tmp-1").click()
    page.get_by_text("No things in this group yet.").wait_for()
    assert cloud.ok("GET", "/api/v1/things/tmp-1")["groups"] == []

    page.get_by_role("button", name="Delete group").click()
    page.get_by_role("heading", name="Groups", exact=True).wait_for()
    names = [g["name"] for g in cloud.ok("GET", "/api/v1/groups")["items"]]
    assert "scratch" not in names
