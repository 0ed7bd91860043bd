"""On-demand functions: a pool up to max concurrency, idle workers reaped; native context."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from hedgerow.functions import FunctionHost, FunctionSpec, QueueFull
from hedgerow.functions.pool import PoolSettings

from .helpers import Recorder, eventually, write_bundle

SLOW = """
    import os, time
    def handler(event, context):
        time.sleep(event["sleep"])
        return os.getpid()
"""


RENDEZVOUS = """
    import os, pathlib, time, uuid
    def handler(event, context):
        room = pathlib.Path(event["room"])
        (room / uuid.uuid4().hex).touch()
        deadline = time.monotonic() + 10
        while len(list(room.iterdir())) < event["party"] and time.monotonic() < deadline:
            time.sleep(0.005)
        return os.getpid()
"""


async def test_pool_grows_to_max_concurrency_and_idle_workers_are_reaped(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "meet", {"meet.py": RENDEZVOUS})
    spec = FunctionSpec(name="meet", handler="meet.handler", max_concurrency=3, timeout_s=15)
    settings = PoolSettings(idle_s=0.5)
    loop = asyncio.get_running_loop()
    async with FunctionHost(tmp_path / "work", publish=Recorder(), settings=settings) as host:
        await host.apply([spec], {"meet": bundle})
        assert host.counters()["meet"]["workers"] == 1
        # three invocations that only return once all three run at the same time
        # a room the workers can reach: as root they run as an unprivileged user, and
        # pytest's tmp_path lies in a directory only root may enter
        room = Path(tempfile.mkdtemp(prefix="hedgerow-room-"))
        room.chmod(0o1777)
        payload = json.dumps({"room": str(room), "party": 3}).encode()
        started = loop.time()
        pids = await asyncio.gather(*(host.invoke("meet", payload) for _ in range(6)))
        assert loop.time() - started < 8  # they met: the pool grew to three workers
        assert len({int(p) for p in pids}) == 3  # and never beyond max_concurrency
        assert host.counters()["meet"]["workers"] == 3
        await eventually(host, lambda host: host.counters()["meet"]["workers"] == 0)
        assert host.states()["meet"] == "RUNNING"
        # the next invocation starts a worker again
        alone = json.dumps({"room": str(room), "party": 1}).encode()
        assert int(await host.invoke("meet", alone)) not in {int(p) for p in pids}
        assert host.counters()["meet"]["workers"] == 1
    shutil.rmtree(room)


async def test_native_context_invoke_and_publish_between_functions(tmp_path: Path) -> None:
    recorder = Recorder()
    bundles = {
        "front": write_bundle(
            tmp_path,
            "front",
            {
                "front.py": """
                    import json
                    def handler(event, context):
                        answer = json.loads(context.invoke("back", {"x": event["x"]}))
                        context.publish("front/" + context.function_name, {"answer": answer, "topic": context.topic})
                        return answer
                """
            },
        ),
        "back": write_bundle(
            tmp_path,
            "back",
            {"back.py": "def handler(event, context):\n    return event['x'] + 1\n"},
        ),
    }
    specs = [
        FunctionSpec(name="front", handler="front.handler", pinned=True),
        FunctionSpec(name="back", handler="back.handler"),
    ]
    async with FunctionHost(tmp_path / "work", publish=recorder) as host:
        await host.apply(specs, bundles)
        await host.deliver("front", "in/a", b'{"x": 41}', "thing:a")
        messages = await recorder.wait_for(lambda m: len(m) >= 1)
        assert messages[0][:2] == ("front", "front/front")
        assert json.loads(messages[0][2]) == {"answer": 42, "topic": "in/a"}


async def test_bounded_queue_counts_overflow(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "slow", {"slow.py": SLOW})
    spec = FunctionSpec(name="slow", handler="slow.handler", pinned=True, timeout_s=10)
    settings = PoolSettings(queue_limit=5, window=1)
    async with FunctionHost(tmp_path / "work", publish=Recorder(), settings=settings) as host:
        await host.apply([spec], {"slow": bundle})
        payload = json.dumps({"sleep": 0.2}).encode()
        for _ in range(10):
            await host.deliver("slow", "t", payload, "thing:x")
        counters = host.counters()["slow"]
        # one in flight, five queued, four dropped
        assert counters["delivered"] == 6 and counters["dropped"] == 4
        with pytest.raises(QueueFull):
            await host.invoke("slow", payload)
        await eventually(host, lambda host: host.counters()["slow"]["succeeded"] == 6)


async def test_apply_replaces_changed_and_stops_removed_functions(tmp_path: Path) -> None:
    v1 = write_bundle(tmp_path, "a1", {"fn.py": "def handler(e, c):\n    return 'one'\n"})
    v2 = write_bundle(tmp_path, "a2", {"fn.py": "def handler(e, c):\n    return 'two'\n"})
    other = write_bundle(tmp_path, "b", {"fn.py": "def handler(e, c):\n    return 'b'\n"})
    a = FunctionSpec(name="a", handler="fn.handler", pinned=True)
    b = FunctionSpec(name="b", handler="fn.handler", pinned=True)
    async with FunctionHost(tmp_path / "work", publish=Recorder()) as host:
        await host.apply([a, b], {"a": v1, "b": other})
        assert json.loads(await host.invoke("a", b"")) == "one"
        await host.apply([a], {"a": v2})  # new code, same spec: replaced; b removed
        assert json.loads(await host.invoke("a", b"")) == "two"
        assert host.states() == {"a": "RUNNING"}
        # the old and the removed bundles are gone from disk, the running one stays
        unpacked = list((tmp_path / "work" / "bundles").iterdir())
        assert len(unpacked) == 1 and unpacked[0].name.startswith("a-")
        await host.deliver("b", "t", b"{}", "x")  # unknown now: ignored, not raised
        assert host.dropped_unknown == 1


async def test_redeploy_lets_inflight_finish_and_hands_queued_work_over(tmp_path: Path) -> None:
    recorder = Recorder()
    code = """
        import json, os, time
        VERSION = {version}
        def handler(event, context):
            time.sleep(event.get("sleep", 0))
            context.publish("done", {{"version": VERSION, "n": event["n"]}})
            return [VERSION, os.getpid()]
    """
    v1 = write_bundle(tmp_path, "v1", {"fn.py": code.format(version=1)})
    v2 = write_bundle(tmp_path, "v2", {"fn.py": code.format(version=2)})
    spec = FunctionSpec(name="fn", handler="fn.handler", pinned=True, timeout_s=5)
    async with FunctionHost(tmp_path / "work", publish=recorder) as host:
        await host.apply([spec], {"fn": v1})
        first = await host.invoke("fn", b'{"n": -1}')
        assert json.loads(first)[0] == 1
        slow = asyncio.ensure_future(host.invoke("fn", b'{"n": 0, "sleep": 0.5}'))
        for n in range(1, 4):
            await host.deliver("fn", "t", json.dumps({"n": n}).encode(), "x")
        await host.apply(
            [FunctionSpec(name="fn", handler="fn.handler", pinned=True, timeout_s=5, version=2)],
            {"fn": v2},
        )
        assert json.loads(await slow)[0] == 1  # the in-flight call finished on version 1
        await recorder.wait_for(lambda m: len(recorder.on("done")) >= 5)
        done = {json.loads(p)["n"]: json.loads(p)["version"] for p in recorder.on("done")}
        assert set(done) == {-1, 0, 1, 2, 3}
        assert host.counters()["fn"]["failed"] == 0
        # unchanged spec and code: apply is a no-op (same worker)
        pid = json.loads(await host.invoke("fn", b'{"n": 8}'))[1]
        await host.apply(
            [FunctionSpec(name="fn", handler="fn.handler", pinned=True, timeout_s=5, version=2)],
            {"fn": v2},
        )
        assert json.loads(await host.invoke("fn", b'{"n": 9}')) == [2, pid]


async def test_slow_core_publish_pauses_the_worker_and_keeps_order(tmp_path: Path) -> None:
    gate = asyncio.Event()
    all_received = asyncio.Event()
    received: list[int] = []

    async def slow_publish(function: str, topic: str, payload: bytes) -> None:
        await gate.wait()
        received.append(json.loads(payload)["n"])
        if len(received) == 200:
            all_received.set()

    bundle = write_bundle(
        tmp_path,
        "burst",
        {
            "burst.py": """
                def handler(event, context):
                    for n in range(200):
                        context.publish("burst", {"n": n})
                    return "sent"
            """
        },
    )
    spec = FunctionSpec(name="burst", handler="burst.handler", pinned=True)
    settings = PoolSettings(outbox_pause=20, outbox_resume=5)
    async with FunctionHost(tmp_path / "work", publish=slow_publish, settings=settings) as host:
        await host.apply([spec], {"burst": bundle})
        invocation = asyncio.ensure_future(host.invoke("burst", b"{}"))
        # the core's publish is stuck: the pool stops reading from the worker...
        await eventually(host, lambda host: host.counters()["burst"]["paused"] == 1)
        gate.set()  # ...and carries on once the core catches up, in order, nothing lost
        assert json.loads(await invocation) == "sent"
        async with asyncio.timeout(10):
            await all_received.wait()
        assert received == list(range(200))
        assert host.counters()["burst"]["published"] == 200
        assert host.counters()["burst"]["timeouts"] == 0
