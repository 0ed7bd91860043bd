from __future__ import annotations

import asyncio
from pathlib import Path

from hedgerow.broker.auth import Identity
from hedgerow.core.router import Router, SpoolWriter
from hedgerow.core.routing_table import RoutingTable, Subscription
from hedgerow.core.shadow import ShadowService
from hedgerow.core.spool import IntakeLog, MemorySpool
from hedgerow.mqtt.packets import Publish


class Recorder:
    def __init__(self) -> None:
        self.local: list[tuple[str, bytes]] = []
        self.functions: list[tuple[str, str, bytes, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 0) -> None:
        self.local.append((topic, payload))

    async def deliver(self, name: str, topic: str, payload: bytes, source: str) -> None:
        await self.gate.wait()
        self.functions.append((name, topic, payload, source))


def table(*subs: tuple[str, str, str]) -> RoutingTable:
    return RoutingTable(Subscription(*s) for s in subs)


async def settle(condition: object, limit: int = 200) -> None:
    for _ in range(limit):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def test_dispatch_to_every_kind_of_target(tmp_path: Path) -> None:
    spool = MemorySpool()
    commits: list[int] = []
    writer = SpoolWriter(spool, IntakeLog(tmp_path / "intake.log"), lambda: commits.append(1))
    rec = Recorder()
    shadow = ShadowService()
    t = table(
        ("thing:a", "s/#", "function:f"),
        ("thing:a", "s/#", "cloud"),
        ("function:f", "out/#", "thing:b"),
        ("thing:a", "$aws/things/a/shadow/update", "shadow"),
        ("shadow", "$aws/things/a/shadow/update/accepted", "thing:a"),
    )
    async with Router(t, cloud=writer, local=rec, functions=rec, shadow=shadow) as router:
        router.intercept(Identity("a", kind="thing"), Publish("s/1", b"x", qos=1, packet_id=1))
        assert router.dispatch("function:f", "out/1", b"y") == 1
        router.dispatch(
            "thing:a", "$aws/things/a/shadow/update", b'{"state": {"reported": {"on": true}}}'
        )
        assert router.dispatch("thing:zz", "s/1", b"nobody") == 0
        await settle(
            lambda: (
                len(rec.functions) == 1
                and any(t == "$aws/things/a/shadow/update/accepted" for t, _ in rec.local)
                and commits
            )
        )
        assert rec.functions == [("f", "s/1", b"x", "thing:a")]
        assert ("out/1", b"y") in rec.local
        # the requesting device gets each reply once (its own shadow), despite the subscription
        accepted = [t for t, _ in rec.local if t == "$aws/things/a/shadow/update/accepted"]
        assert len(accepted) == 1
        assert [r.topic for r in spool.peek(0, 10)] == ["s/1"]
        assert IntakeLog.recover(tmp_path / "intake.log")[0] == []  # committed: intake cleared
        assert (
            router.counters["unrouted"] >= 1 and t.counters[0] == 1
        )  # thing:zz (and shadow documents)


async def test_full_function_queue_drops_and_counts(tmp_path: Path) -> None:
    rec = Recorder()
    rec.gate.clear()  # the function is stuck
    writer = SpoolWriter(MemorySpool(), None, lambda: None)
    t = table(("thing:a", "#", "function:slow"))
    async with Router(
        t, cloud=writer, local=rec, functions=rec, shadow=None, queue_size=5
    ) as router:
        taken = sum(router.dispatch("thing:a", "t", b"%d" % i) for i in range(20))
        await asyncio.sleep(0)
        assert taken <= 6  # five queued (+ one the drain task may already hold)
        assert router.counters["dropped_function:slow"] == 20 - taken
        rec.gate.set()
        await settle(lambda: len(rec.functions) == taken)
        router.set_table(RoutingTable())  # the function is gone: its queue retires
        assert "function:slow" not in router.queue_depths()
