"""The broker-auth endpoints' HTTP shapes: RabbitMQ's form questions and text answers,
EMQX 5's JSON result, VerneMQ's webhooks, and the token that keeps prying eyes out.
(RabbitMQ itself asks them in tests/cloud/test_rabbitmq.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from hedgerow.cloud.api.broker_auth import MAX_CACHED, PREFIX, BrokerAuth, routes
from hedgerow.cloud.broker_acl import CoreStanding, Routes
from hedgerow.cloud.broker_credentials import CLOUD_USER, BrokerSecret

SECRET = BrokerSecret(b"s" * 32)
GW = CoreStanding("gw", "plant", "f" * 64)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    cores = {"gw": GW}

    async def standing(core: str) -> CoreStanding | None:
        return cores.get(core)

    auth = BrokerAuth(SECRET, standing, lambda group: Routes(("plant/#",), ("cmd/plant/#",)))
    app = Starlette(routes=routes(auth))
    base = f"http://cloud{PREFIX}/{SECRET.path_token()}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=base) as client:
        yield client


async def test_rabbitmq_questions_are_answered_as_text(http: httpx.AsyncClient) -> None:
    password = SECRET.core_password("gw", GW.fingerprint)
    login = {"username": "gw", "password": password, "client_id": "gw", "vhost": "/"}
    assert (await http.post("/user", data=login)).text == "allow"
    assert (await http.get("/user", params=login)).text == "allow"  # http_method = get
    assert (await http.post("/user", data={**login, "password": "x"})).text == "deny"
    cloud = {"username": CLOUD_USER, "password": SECRET.cloud_password(), "client_id": "any"}
    assert (await http.post("/user", data=cloud)).text == "allow"
    assert (await http.post("/vhost", data={"username": "gw", "vhost": "/"})).text == "allow"
    assert (await http.post("/vhost", data={"username": "gone", "vhost": "/"})).text == "deny"
    queue = {"username": "gw", "resource": "queue", "permission": "configure"}
    assert (
        await http.post("/resource", data={**queue, "name": "mqtt-subscription-gwqos1"})
    ).text == "allow"
    assert (
        await http.post("/resource", data={**queue, "name": "mqtt-subscription-xqos1"})
    ).text == "deny"
    topic = {"username": "gw", "variable_map.client_id": "gw", "permission": "write"}
    mine = "$hedgerow.cores.gw.routed.plant.1"
    theirs = "$hedgerow.cores.other.routed.plant.1"
    assert (await http.post("/topic", data={**topic, "routing_key": mine})).text == "allow"
    assert (await http.post("/topic", data={**topic, "routing_key": theirs})).text == "deny"


async def test_emqx_gets_a_json_result_and_speaks_mqtt_topics(http: httpx.AsyncClient) -> None:
    password = SECRET.core_password("gw", GW.fingerprint)
    login = {"username": "gw", "password": password, "clientid": "gw"}
    answer = await http.post("/user", params={"format": "json"}, data=login)
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"result": "allow"}
    ask = {"username": "gw", "clientid": "gw", "format": "json"}
    publish = {**ask, "action": "publish", "topic": "$hedgerow/cores/gw/routed/plant/x.y"}
    assert (await http.get("/topic", params=publish)).json() == {"result": "allow"}
    subscribe = {**ask, "action": "subscribe", "topic": "$hedgerow/cores/other/deployments"}
    assert (await http.get("/topic", params=subscribe)).json() == {"result": "deny"}


async def test_vernemq_webhooks(http: httpx.AsyncClient) -> None:
    password = SECRET.core_password("gw", GW.fingerprint)
    register = {"username": "gw", "password": password, "client_id": "gw", "mountpoint": ""}
    assert (await http.post("/auth_on_register", json=register)).json() == {"result": "ok"}
    refused = await http.post("/auth_on_register", json={**register, "client_id": "other"})
    assert refused.json() == {"result": {"error": "not_allowed"}}
    publish = {"username": "gw", "client_id": "gw", "topic": "$hedgerow/cores/gw/heartbeat"}
    assert (await http.post("/auth_on_publish", json=publish)).json() == {"result": "ok"}
    subscribe = {
        "username": "gw",
        "client_id": "gw",
        "topics": [{"topic": "cmd/plant/1", "qos": 1}, {"topic": "$hedgerow/cores/+/#", "qos": 1}],
    }
    assert (await http.post("/auth_on_subscribe", json=subscribe)).json() == {
        "result": {"error": "not_allowed"}
    }
    assert (await http.post("/auth_on_subscribe", content=b"not json")).json() == {
        "result": {"error": "not_allowed"}
    }


async def test_a_wrong_token_or_question_is_not_found(http: httpx.AsyncClient) -> None:
    base = f"http://cloud{PREFIX}"
    for path in (f"{base}/{'0' * 40}/user", f"{base}/{SECRET.path_token()}/nothing"):
        answer = await http.post(path, data={"username": CLOUD_USER})
        assert answer.status_code == 404 and answer.text == "not found"


async def test_standings_are_kept_a_second_and_bounded() -> None:
    lookups: list[str] = []
    now = [0.0]

    async def standing(core: str) -> CoreStanding | None:
        lookups.append(core)
        return GW if core == "gw" else None

    auth = BrokerAuth(SECRET, standing, lambda group: Routes((), ()), clock=lambda: now[0])
    await auth.standing("gw")
    await auth.standing("gw")
    assert lookups == ["gw"]
    now[0] += 1.5  # older than STANDING_TTL_S: asked again
    await auth.standing("gw")
    assert lookups == ["gw", "gw"]
    await auth.standing("gw", fresh=True)  # a login always asks
    assert len(lookups) == 3
    for index in range(MAX_CACHED + 5):
        await auth.standing(f"made-up-{index}")
    assert len(auth._standing) <= MAX_CACHED
