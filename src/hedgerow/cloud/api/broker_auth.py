"""``/api/v1/broker-auth/{token}/{user,vhost,resource,topic}``: an external broker asks the
cloud who may log in and what they may do (RabbitMQ's ``rabbitmq_auth_backend_http``;
EMQX's, VerneMQ's and HiveMQ's HTTP hooks can call the same paths, see the cloud README).

Each question comes as a form-encoded POST or as a GET query (RabbitMQ sends either,
``http_method``) and is answered ``allow`` or ``deny`` as text, or with ``?format=json``
as ``{"result": "allow"}`` (EMQX 5's HTTP authentication and authorization, whose
``action``/``topic``/``clientid`` fields are read too). VerneMQ's webhooks
``auth_on_register``, ``auth_on_publish`` and ``auth_on_subscribe`` are paths of their own
(JSON in, ``{"result": "ok"}`` out). The rules are
``hedgerow.cloud.broker_acl``'s (the embedded endpoint's); this module only reads the
question, looks the core up and answers. Nobody can probe: the path carries a token only
the broker's configuration holds (``BrokerSecret.path_token``); any other token is a 404,
as for a path that does not exist.

A core's standing (group, live certificate) is looked up at every login, and kept
``STANDING_TTL_S`` for the questions that follow it (RabbitMQ asks for every publish): a
revocation holds at the next login at once and for publish/subscribe within that time
(the cloud also takes the core's client id over, which closes its connection).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from hedgerow.cloud import broker_acl
from hedgerow.cloud.broker_acl import Access, CoreStanding, Routes
from hedgerow.cloud.broker_credentials import CLOUD_USER, BrokerSecret, password_matches
from hedgerow.cloud.routing_keys import topic_from_routing_key

log = logging.getLogger(__name__)

PREFIX = "/api/v1/broker-auth"
#: How long a core's standing answers the questions after its login.
STANDING_TTL_S = 1.0
#: Standings kept at most (then forgotten all at once: each is one lookup away).
MAX_CACHED = 10_000
#: the bodies RabbitMQ reads (anything else is a deny)
ALLOW = PlainTextResponse("allow")
DENY = PlainTextResponse("deny")
NOT_FOUND = PlainTextResponse("not found", status_code=404)

Standing = Callable[[str], Awaitable[CoreStanding | None]]
GroupRoutes = Callable[[str], Routes]


class BrokerAuth:
    """Answers the broker's four questions for one cloud replica."""

    def __init__(
        self,
        secret: BrokerSecret,
        standing: Standing,
        routes: GroupRoutes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secret = secret
        self._lookup = standing
        self.routes = routes
        self.clock = clock
        self._standing: dict[str, tuple[float, CoreStanding | None]] = {}

    async def standing(self, core: str, *, fresh: bool = False) -> CoreStanding | None:
        now = self.clock()
        cached = self._standing.get(core)
        if not fresh and cached is not None and now - cached[0] < STANDING_TTL_S:
            return cached[1]
        found = await self._lookup(core)
        if len(self._standing) >= MAX_CACHED:  # logins under made-up names cannot grow it
            self._standing.clear()
        self._standing[core] = (now, found)
        return found

    def forget(self, core: str) -> None:
        """The core was revoked or deleted here: ask the registry at its next question."""
        self._standing.pop(core, None)

    async def user(self, q: dict[str, str]) -> bool:
        user, password = q.get("username", ""), q.get("password", "")
        if user == CLOUD_USER:
            return password_matches(self.secret.cloud_password(), password)
        standing = await self.standing(user, fresh=True)
        expected = "" if standing is None else self.secret.core_password(user, standing.fingerprint)
        ok = standing is not None and password_matches(expected, password)
        return broker_acl.core_login_allowed(standing, client_id_of(q), ok)

    async def vhost(self, q: dict[str, str]) -> bool:
        user = q.get("username", "")
        return user == CLOUD_USER or await self.standing(user) is not None

    async def resource(self, q: dict[str, str]) -> bool:
        user = q.get("username", "")
        if user != CLOUD_USER and await self.standing(user) is None:
            return False
        return broker_acl.resource_allowed(user, q.get("resource", ""), q.get("name", ""))

    async def topic(self, q: dict[str, str]) -> bool:
        """RabbitMQ's form (``permission`` read/write, ``routing_key`` in AMQP form) or
        EMQX's (``action`` publish/subscribe, ``topic`` as MQTT has it)."""
        user = q.get("username", "")
        if user == CLOUD_USER:
            return True
        access = ACCESS.get(q.get("permission", q.get("action", "")))
        if access is None:
            return False
        standing = await self.standing(user)
        routes = self.routes(standing.group) if standing is not None else Routes((), ())
        if "topic" in q:
            topic = q["topic"]
        else:
            topic = topic_from_routing_key(q.get("routing_key", ""))
        return broker_acl.topic_allowed(standing, routes, client_id_of(q), access, topic)

    # ---- VerneMQ's webhooks: one JSON question each, answered {"result": "ok"} ----------

    async def auth_on_register(self, body: dict[str, Any]) -> bool:
        return await self.user(
            {
                "username": str(body.get("username") or ""),
                "password": str(body.get("password") or ""),
                "client_id": str(body.get("client_id") or ""),
            }
        )

    async def auth_on_publish(self, body: dict[str, Any]) -> bool:
        return await self.topic(_verne_topic(body, "publish", str(body.get("topic") or "")))

    async def auth_on_subscribe(self, body: dict[str, Any]) -> bool:
        topics = body.get("topics")
        if not isinstance(topics, list) or not topics:
            return False
        for entry in topics:
            topic = str(entry.get("topic") or "") if isinstance(entry, dict) else ""
            if not await self.topic(_verne_topic(body, "subscribe", topic)):
                return False
        return True


#: what the broker asks for on a topic, in RabbitMQ's words and EMQX's
ACCESS: dict[str, Access] = {
    "write": Access.WRITE,
    "publish": Access.WRITE,
    "read": Access.READ,
    "subscribe": Access.READ,
}


def client_id_of(q: dict[str, str]) -> str:
    return q.get("variable_map.client_id", q.get("client_id", q.get("clientid", "")))


def _verne_topic(body: dict[str, Any], action: str, topic: str) -> dict[str, str]:
    return {
        "username": str(body.get("username") or ""),
        "client_id": str(body.get("client_id") or ""),
        "action": action,
        "topic": topic,
    }


async def _question(request: Request) -> dict[str, str]:
    if request.method == "POST":
        return dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    return dict(request.query_params)


async def _webhook(request: Request, hook: Callable[[dict[str, Any]], Awaitable[bool]]) -> Response:
    """A VerneMQ webhook: JSON in, ``{"result": "ok"}`` or ``{"result": {"error": ...}}``
    out (publish and subscribe as asked: no payload or topic rewriting)."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    allowed = isinstance(body, dict) and await hook(body)
    if not allowed:
        who = body if isinstance(body, dict) else {}
        log.info(
            "broker_auth.denied question=%s user=%s client_id=%s",
            request.path_params["question"],
            who.get("username", ""),
            who.get("client_id", ""),
        )
    return JSONResponse({"result": "ok" if allowed else {"error": "not_allowed"}})


def routes(auth: BrokerAuth) -> list[BaseRoute]:
    questions = {
        "user": auth.user,
        "vhost": auth.vhost,
        "resource": auth.resource,
        "topic": auth.topic,
    }

    async def answer(request: Request) -> Response:
        token = request.path_params["token"]
        question = request.path_params["question"]
        if question not in questions and question not in webhooks:
            return NOT_FOUND
        if not auth.secret.token_matches(token):
            log.warning("broker_auth.bad_token question=%s", question)
            return NOT_FOUND
        if question in webhooks:
            return await _webhook(request, webhooks[question])
        q = await _question(request)
        allowed = await questions[question](q)
        if not allowed:
            log.info(
                "broker_auth.denied question=%s user=%s client_id=%s resource=%s name=%s "
                "permission=%s routing_key=%s",
                request.path_params["question"],
                q.get("username", ""),
                q.get("variable_map.client_id", q.get("client_id", "")),
                q.get("resource", ""),
                q.get("name", ""),
                q.get("permission", ""),
                q.get("routing_key", ""),
            )
        if request.query_params.get("format") == "json":  # EMQX 5 reads a JSON result
            return JSONResponse({"result": "allow" if allowed else "deny"})
        return ALLOW if allowed else DENY

    webhooks = {
        "auth_on_register": auth.auth_on_register,
        "auth_on_publish": auth.auth_on_publish,
        "auth_on_subscribe": auth.auth_on_subscribe,
    }
    return [Route(PREFIX + "/{token}/{question}", answer, methods=["GET", "POST"])]
