"""The cloud's side of fleet operations through the REST API, on SQLite and PostgreSQL:
logs stored from core batches and queried by group, core, function, level and time;
retention; log levels set per group, retained for its core; alert rules and webhooks
refused with the field named; Prometheus ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

from hedgerow.contract.logs import LogBatch, LogLevels, LogRecord
from hedgerow.contract.topics import CoreLeaf, core_topic
from tests.cloud.conftest import Cloud
from tests.cloud.test_core_link import WAIT, core_client

ROOT = Path(__file__).resolve().parents[2]


def _batch(*records: tuple[float, int, str, str, str], dropped: int = 0) -> bytes:
    return LogBatch(tuple(LogRecord(*r) for r in records), dropped).to_json()


async def test_logs_are_stored_and_queried_by_every_filter(cloud: Cloud) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g1"})
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g2"})
    logs = cloud.server.services.logs
    now = time.time()
    logs.store_batches([
        ("g1", _batch((now - 100, 20, "core", "hedgerow.core", "old"),
                      (now, 40, "function:fn", "", "Traceback (most recent call last):\n  x\nValueError: boom"),
                      (now, 20, "function:other", "", "hello"), dropped=7), "c1", now),
        ("g2", _batch((now, 30, "core", "hedgerow.core.spool", "elsewhere")), "c2", now),
        ("g1", b'{"schema": 2, "records": []}', "c1", now),  # refused, counted, not retried
    ])  # fmt: skip
    assert logs.stored == 4 and logs.refused == 1 and logs.dropped_at_cores == 7

    everything = await cloud.ok("GET", "/api/v1/logs", params={"group": "g1"})
    assert [e["message"][:5] for e in everything["items"]] == ["old", "Trace", "hello"]
    errors = await cloud.ok(
        "GET", "/api/v1/logs", params={"group": "g1", "level": "error", "function": "fn"}
    )
    assert errors["count"] == 1 and errors["items"][0]["level"] == "ERROR"
    assert errors["items"][0]["message"].endswith("ValueError: boom")
    recent = await cloud.ok("GET", "/api/v1/logs", params={"group": "g1", "since": str(now - 10)})
    assert recent["count"] == 2
    after = await cloud.ok(
        "GET", "/api/v1/logs", params={"group": "g1", "after_id": str(everything["last_id"])}
    )
    assert after["count"] == 0
    bad = await cloud.api.get("/api/v1/logs", params={"group": "g1", "level": "LOUD"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "level"

    assert await cloud.server.log_ingest.sweep() == 0  # within the retention period
    assert logs.delete_before(now - 50) == 1
    assert (await cloud.ok("GET", "/api/v1/logs", params={"group": "g1"}))["count"] == 2


async def test_alert_rules_and_webhooks(cloud: Cloud) -> None:
    rule = await cloud.ok(
        "POST", "/api/v1/alerts/rules",
        json={"name": "offline", "kind": "core-offline", "threshold": 30},
    )  # fmt: skip
    assert rule["means"] == "seconds offline"
    for body, field in (
        ({"name": "x", "kind": "nope"}, "kind"),
        ({"name": "x", "kind": "spool-full", "threshold": 2}, "threshold"),
        ({"name": "a b", "kind": "spool-full"}, "name"),
        ({"name": "x", "kind": "spool-full", "threshold": "half"}, "threshold"),
    ):
        response = await cloud.api.post("/api/v1/alerts/rules", json=body)
        assert response.status_code in (400, 422), response.text
        assert response.json()["error"]["field"] == field
    again = await cloud.api.post(
        "/api/v1/alerts/rules", json={"name": "offline", "kind": "core-offline"}
    )
    assert again.status_code == 409
    hook = await cloud.ok(
        "POST", "/api/v1/alerts/webhooks", json={"name": "ops", "url": "http://127.0.0.1:9/x"}
    )
    assert len(hook["secret"]) == 64 and hook["webhook"] == {
        "name": "ops",
        "url": "http://127.0.0.1:9/x",
    }
    listed = await cloud.ok("GET", "/api/v1/alerts/webhooks")
    assert listed["items"] == [hook["webhook"]]  # the secret is never shown again
    bad = await cloud.api.post("/api/v1/alerts/webhooks", json={"name": "x", "url": "ftp://h"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "url"
    await cloud.ok("DELETE", "/api/v1/alerts/rules/offline")
    await cloud.ok("DELETE", "/api/v1/alerts/webhooks/ops")
    gone = await cloud.api.delete("/api/v1/alerts/rules/offline")
    assert gone.status_code == 404
    assert (await cloud.ok("GET", "/api/v1/alerts"))["items"] == []


async def test_prometheus_metrics(cloud: Cloud) -> None:
    await cloud.ok("GET", "/api/v1/groups")
    response = await cloud.api.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert 'hedgerow_cloud_cores{state="connected"} 0' in text
    assert 'hedgerow_cloud_ingest_total{result="stored"}' in text
    assert 'hedgerow_cloud_api_request_seconds_count{method="GET",route="/api/v1/groups"} 1' in text
    assert 'le="+Inf"' in text
    anonymous = await cloud.api.get("/metrics", headers={"authorization": ""})
    assert anonymous.status_code == 401
    # every metric the Grafana dashboard charts is one the cloud exposes
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    charted = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"hedgerow_cloud_[a-z_]+", target["expr"])
    }
    exposed = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    assert len(charted) >= 10 and charted <= exposed, charted - exposed


async def test_log_levels_are_kept_per_group_and_retained_for_its_core(
    cloud: Cloud, tmp_path: Path
) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g1"})
    path = "/api/v1/groups/g1/log-levels"
    assert await cloud.ok("GET", path) == {"group": "g1", "core": None, "functions": {}}
    # set before the group has a core: kept, sent once it has one and it connects
    await cloud.ok("PATCH", path, json={"level": "debug", "function": "chatty"})
    cert, key = await cloud.core("pi-1", "g1", tmp_path)
    async with core_client(cloud, cert, key) as core:
        await core.subscribe(core_topic("pi-1", CoreLeaf.LOG_LEVELS), qos=1)
        async with asyncio.timeout(WAIT):
            first = LogLevels.from_json((await core.get_message()).payload)
        assert first == LogLevels(None, {"chatty": 10})
    await cloud.ok("PATCH", path, json={"level": "WARNING"})
    shown = await cloud.ok("PATCH", path, json={"level": "error", "function": "quiet"})
    assert shown == {
        "group": "g1", "core": "WARNING", "functions": {"chatty": "DEBUG", "quiet": "ERROR"},
    }  # fmt: skip
    async with core_client(cloud, cert, key) as core:
        await core.subscribe(core_topic("pi-1", CoreLeaf.LOG_LEVELS), qos=1)
        async with asyncio.timeout(WAIT):
            retained = LogLevels.from_json((await core.get_message()).payload)
        assert retained == LogLevels(30, {"chatty": 10, "quiet": 40})
        # a change reaches the connected core at once; "default" gives the config's back
        await cloud.ok("PATCH", path, json={"level": "default", "function": "quiet"})
        await cloud.ok("PATCH", path, json={"level": "default"})
        async with asyncio.timeout(WAIT):
            await core.get_message()
            latest = LogLevels.from_json((await core.get_message()).payload)
        assert latest == LogLevels(None, {"chatty": 10})
    for body, field in (
        ({"level": "LOUD"}, "core"),
        ({"level": "INFO", "function": "no/slash"}, "functions.no/slash"),
    ):
        refused = await cloud.api.patch(path, json=body)
        assert refused.status_code == 400 and refused.json()["error"]["field"] == field
    missing = await cloud.api.patch("/api/v1/groups/nope/log-levels", json={"level": "INFO"})
    assert missing.status_code == 404
    # a cloud that starts again announces every group's levels (no retained message kept)
    assert await cloud.server.services.log_levels.announce_all() == 1
