"""Alerts: the evaluation as a pure function of (rules, fleet, now) driven by a ManualClock,
what fired and cleared, the signature, and delivery to a real HTTP server with retries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import httpx
import pytest

from hedgerow.backoff import BackoffPolicy
from hedgerow.clock import ManualClock
from hedgerow.cloud.alert_webhooks import deliver
from hedgerow.cloud.alerting import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AlertKind,
    AlertRule,
    AlertWebhook,
    CoreState,
    changes,
    check_rule,
    evaluate,
    sign,
    verify,
)
from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.jobs import Tick
from hedgerow.cloud.services.alerts import EVALUATE_EVERY_S, AlertService
from tests.cloud.conftest import Built

DAY = 86400.0


def test_core_offline_fires_after_its_threshold_and_clears_when_back() -> None:
    clock = ManualClock(start=1_000_000.0)
    rules = [AlertRule("offline", AlertKind.CORE_OFFLINE, 30.0)]
    down = CoreState("pi-1", "g", connected=False, offline_since=clock.now())
    assert evaluate(rules, [down], clock.now()) == []
    clock.advance(29.9)
    assert evaluate(rules, [down], clock.now()) == []
    clock.advance(0.1)
    (firing,) = evaluate(rules, [down], clock.now())
    assert firing.key == ("offline", "pi-1") and "offline for 30 s" in firing.message
    assert changes([], [firing]).fired == [firing]
    assert changes([firing.key], [firing]).fired == []  # still on: not again
    back = CoreState("pi-1", "g", connected=True)
    assert changes([firing.key], evaluate(rules, [back], clock.now())).resolved == [firing.key]
    never = CoreState("pi-2", "g", connected=False)  # never seen: nothing to say yet
    assert evaluate(rules, [never], clock.now() + DAY) == []


def test_each_kind_and_the_group_filter() -> None:
    clock = ManualClock(start=10 * DAY)
    rules = [
        AlertRule("deploy", AlertKind.DEPLOYMENT_FAILED, 0.0),
        AlertRule("errors", AlertKind.FUNCTION_ERRORS, 6.0),  # errors a minute
        AlertRule("spool", AlertKind.SPOOL_FULL, 0.8, group="g1"),
        AlertRule("cert", AlertKind.CERT_EXPIRY, 7.0),
    ]
    core = CoreState(
        "pi-1", "g1", connected=True,
        deployment_status="RolledBack", deployment_id="d-1",
        function_errors={"fn": 12, "ok": 3}, previous_errors={"fn": 2, "ok": 3},
        errors_window=60.0,
        spool_bytes=900, spool_max_bytes=1000,
        cert_not_after=clock.now() + 6 * DAY,
    )  # fmt: skip
    found = {(f.rule, f.subject): f.message for f in evaluate(rules, [core], clock.now())}
    assert found == {
        ("deploy", "pi-1"): "deployment d-1 on core pi-1: RolledBack",
        ("errors", "pi-1/fn"): "function fn on core pi-1: 10.0 errors a minute",
        ("spool", "pi-1"): "core pi-1: spool 90% of its quota",
        ("cert", "pi-1"): "core pi-1: certificate expires in 6.0 days",
    }
    calm = CoreState(
        "pi-2", "g2", connected=True, deployment_status="Success",
        function_errors={"fn": 3}, previous_errors={"fn": 2}, errors_window=60.0,
        spool_bytes=900, spool_max_bytes=1000, cert_not_after=clock.now() + 30 * DAY,
    )  # fmt: skip
    assert evaluate(rules, [calm], clock.now()) == []  # spool rule is for g1 only
    clock.advance(24 * DAY)  # the certificate's time runs out
    assert [f.rule for f in evaluate(rules, [calm], clock.now())] == ["cert"]


def test_rules_are_checked_naming_the_field() -> None:
    assert check_rule("r", "spool-full", 0.5) is AlertKind.SPOOL_FULL
    for args, field in (
        (("r", "loud", 1.0), "kind"),
        (("r", "spool-full", 1.5), "threshold"),
        (("a/b", "core-offline", 1.0), "name"),
    ):
        with pytest.raises(InvalidInput) as info:
            check_rule(*args)
        assert info.value.field == field


def test_the_signature_covers_timestamp_and_body() -> None:
    body = b'{"state":"firing"}'
    signature = sign("k", "1700000000", body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify("k", "1700000000", body, signature)
    assert not verify("k", "1700000001", body, signature)
    assert not verify("k", "1700000000", body + b" ", signature)
    assert not verify("other", "1700000000", body, signature)


async def test_delivery_retries_until_the_server_takes_it() -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    answers = [503, 500, 200]

    async def app(scope: dict, receive: object, send: object) -> None:  # a real ASGI server
        body = b""
        while True:
            message = await receive()  # type: ignore[operator]
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        received.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        await send({"type": "http.response.start", "status": answers.pop(0), "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    import uvicorn

    from tests.conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        hook = AlertWebhook("ops", f"http://127.0.0.1:{port}/hook", "secret-1")
        clock = ManualClock()
        async with httpx.AsyncClient() as client:
            delivery = asyncio.create_task(
                deliver(client, hook, {"state": "firing", "alert": {"rule": "r"}},
                        clock=clock, wall=lambda: 1700000000.0,
                        retry=BackoffPolicy(base=1.0, cap=4.0))
            )  # fmt: skip
            for _ in range(2):  # each failure waits on the clock: move it on
                await clock.wait_sleepers(1)
                clock.advance(4.0)
            assert await asyncio.wait_for(delivery, 10) == "delivered"
        assert len(received) == 3
        headers, body = received[-1]
        assert json.loads(body) == {"alert": {"rule": "r"}, "state": "firing"}
        assert headers[TIMESTAMP_HEADER.lower()] == "1700000000"
        assert verify("secret-1", "1700000000", body, headers[SIGNATURE_HEADER.lower()])

        answers.extend([500] * 2)
        async with httpx.AsyncClient() as client:
            failing = asyncio.create_task(deliver(client, hook, {}, clock=clock, attempts=2))
            await clock.wait_sleepers(1)
            clock.advance(60.0)
            assert await asyncio.wait_for(failing, 10) == "failed: HTTP 500"
    finally:
        server.should_exit = True
        await task


@pytest.mark.parametrize("read_s, expected", [(0.0, 12), (0.2, 3)])
async def test_a_fleet_that_is_slow_to_read_is_evaluated_less_often(
    built: Built, read_s: float, expected: int
) -> None:
    """Each evaluation reads every core: when that takes a while (0.2 s: ~5,000 cores), the
    loop spaces evaluations so that they take at most ``EVALUATION_SHARE`` of the time."""
    clock = ManualClock(start=100.0)

    class SlowToRead(AlertService):
        def fleet_state(self, rules: Sequence[AlertRule], now: float) -> list[CoreState]:
            clock.advance(read_s)
            return []

    service = SlowToRead(built.services.alerts.store, clock=clock)

    async def twelve_ticks(job: str, tick: Tick, interval_s: float, **_: object) -> None:
        assert interval_s == EVALUATE_EVERY_S
        for _ in range(12):
            await tick()
            clock.advance(1.0)

    await service.run(twelve_ticks)
    assert service.evaluations == expected
