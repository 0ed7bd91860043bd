"""Native pinned and on-demand functions running in real worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hedgerow.functions import FunctionHost, FunctionSpec, HandlerError
from hedgerow.functions.policy import RestartPolicy
from hedgerow.functions.pool import PoolSettings

from .helpers import EXAMPLES, Recorder, eventually, write_bundle

FAST = PoolSettings(policy=RestartPolicy(backoff_base_s=0.05, max_crashes=3, window_s=30))


async def test_seed_temperature_correction_as_native_pinned_function(tmp_path: Path) -> None:
    recorder = Recorder()
    spec = FunctionSpec(
        name="temp-correct",
        handler="temp_correct.handler",
        pinned=True,
        environment={"FACTOR": "5"},
    )
    async with FunctionHost(tmp_path / "work", publish=recorder, thing_name="core-1") as host:
        await host.apply([spec], {"temp-correct": EXAMPLES / "temp_correct"})
        assert host.states() == {"temp-correct": "RUNNING"}
        reading = {"thing": "bme680-1", "temperature": 30.0, "cpu_temperature": 55.0}
        await host.deliver(
            "temp-correct", "sensors/bme680-1", json.dumps(reading).encode(), "thing:bme680-1"
        )
        messages = await recorder.wait_for(lambda m: len(m) >= 1)
        function, topic, payload = messages[0]
        assert (function, topic) == ("temp-correct", "corrected/bme680-1")
        corrected = json.loads(payload)
        assert corrected["temperature"] == pytest.approx(30.0 - (55.0 - 30.0) / 5)
        assert corrected["raw_temperature"] == 30.0
        # RequestResponse returns the handler's value
        result = json.loads(await host.invoke("temp-correct", json.dumps(reading).encode()))
        assert result["temperature"] == pytest.approx(25.0)
        counters = host.counters()["temp-correct"]
        assert counters["delivered"] == 1 and counters["invoked"] == 1
    assert host.states() == {}


async def test_handler_that_raises_is_counted_and_worker_survives(tmp_path: Path) -> None:
    bundle = write_bundle(
        tmp_path,
        "flaky",
        {
            "flaky.py": """
                import os
                PID = os.getpid()
                def handler(event, context):
                    if event.get("fail"):
                        raise ValueError("bad reading " + str(event["fail"]))
                    print("handled", event)
                    return {"pid": PID}
            """
        },
    )
    spec = FunctionSpec(name="flaky", handler="flaky.handler", pinned=True)
    async with FunctionHost(tmp_path / "work", publish=Recorder(), settings=FAST) as host:
        await host.apply([spec], {"flaky": bundle})
        first = json.loads(await host.invoke("flaky", b"{}"))["pid"]
        with pytest.raises(HandlerError) as info:
            await host.invoke("flaky", b'{"fail": 7}')
        assert info.value.error_type == "ValueError"
        assert "bad reading 7" in info.value.traceback
        await host.deliver("flaky", "t", b'{"fail": 8}', "thing:x")
        await eventually(host, lambda host: host.counters()["flaky"]["failed"] == 2)
        assert json.loads(await host.invoke("flaky", b"{}"))["pid"] == first
        assert host.states()["flaky"] == "RUNNING"
        log_text = (tmp_path / "work" / "logs" / "flaky.log").read_text()
    assert "Traceback" in log_text and "bad reading 8" in log_text
    assert "handled {}" in log_text  # print() lands in the function's log


async def test_last_error_and_changes_reach_the_core(tmp_path: Path) -> None:
    """A handler that raises leaves its error text in ``errors()`` (the heartbeat's source),
    and ``watch_changes`` fires on start, on a new error and on stop, not on every message."""
    bundle = write_bundle(
        tmp_path,
        "flaky",
        {
            "flaky.py": """
                def handler(event, context):
                    if event.get("fail"):
                        raise KeyError("sensor " + str(event["fail"]))
                    return {}
            """
        },
    )
    spec = FunctionSpec(name="flaky", handler="flaky.handler", pinned=True)
    changes: list[dict[str, str]] = []
    async with FunctionHost(tmp_path / "work", publish=Recorder(), settings=FAST) as host:
        host.watch_changes(lambda: changes.append(host.states()))
        await host.apply([spec], {"flaky": bundle})
        assert changes and changes[-1] == {"flaky": "RUNNING"}
        assert host.errors() == {}
        seen = len(changes)
        for _ in range(5):
            await host.invoke("flaky", b"{}")
        assert len(changes) == seen  # successful messages are not changes
        await host.deliver("flaky", "t", b'{"fail": 9}', "thing:x")
        await eventually(host, lambda host: "flaky" in host.errors())
        error = host.errors()["flaky"]
        assert error["failed"] == 1 and error["crashes"] == 0
        assert error["last_error"] == "KeyError: 'sensor 9'"
        assert error["traceback"].startswith("Traceback (most recent call last):")
        assert error["traceback"].rstrip().endswith("KeyError: 'sensor 9'")
        assert error["invocations"] == 6  # five invoked, one delivered
        assert len(changes) == seen + 1
        await host.apply([], {})
        assert changes[-1] == {}


async def test_native_pinned_module_level_sensor_loop(tmp_path: Path) -> None:
    recorder = Recorder()
    bundle = write_bundle(
        tmp_path,
        "sensor",
        {
            "sensor.py": """
                import time
                from hedgerow.functions.worker import module_context

                context = module_context()
                reading = 0
                while True:  # a sensor loop at module level, as V1 allowed
                    reading += 1
                    context.publish("sensors/" + context.function_name, {"reading": reading})
                    time.sleep(0.01)

                def handler(event, context):
                    return None
            """
        },
    )
    spec = FunctionSpec(name="sensor", handler="sensor.handler", pinned=True)
    async with FunctionHost(tmp_path / "work", publish=recorder, settle_s=0.1) as host:
        await host.apply([spec], {"sensor": bundle})
        assert host.states() == {"sensor": "RUNNING"}
        await recorder.wait_for(lambda m: len(m) >= 10)
    readings = [json.loads(p)["reading"] for p in recorder.on("sensors/sensor")]
    assert readings[:10] == list(range(1, 11))


async def test_native_context_shadow_calls(tmp_path: Path) -> None:
    from hedgerow.core.shadow import ShadowService

    bundle = write_bundle(
        tmp_path,
        "lamp",
        {
            "lamp.py": """
                from hedgerow.functions.worker import FunctionCallError

                def handler(event, context):
                    updated = context.update_thing_shadow("lamp-1", {"state": {"desired": {"on": True}}})
                    got = context.get_thing_shadow("lamp-1")
                    try:
                        context.update_thing_shadow("lamp-1", {"state": {"desired": {"on": False}}, "version": 9})
                        conflict = None
                    except FunctionCallError as exc:
                        conflict = str(exc)
                    return {"version": updated["version"], "delta": got["state"]["delta"], "conflict": conflict}
            """
        },
    )
    shadow = ShadowService(None)
    spec = FunctionSpec(name="lamp", handler="lamp.handler", pinned=True)
    async with FunctionHost(tmp_path / "work", publish=Recorder(), shadow=shadow) as host:
        await host.apply([spec], {"lamp": bundle})
        result = json.loads(await host.invoke("lamp", b"{}"))
    assert result["version"] == 1 and result["delta"] == {"on": True}
    assert "Version conflict" in result["conflict"]
    assert shadow.get("lamp-1")["version"] == 1  # type: ignore[index]


def test_runs_under_uvloop(tmp_path: Path) -> None:
    """The core may run on uvloop (the ``fast`` extra): transports and subprocesses differ."""
    import uvloop

    v1 = write_bundle(
        tmp_path,
        "v1",
        {
            "v1.py": """
                import greengrasssdk
                iot = greengrasssdk.client("iot-data")
                def function_handler(event, context):
                    iot.publish(topic="v1/uv", payload=b"ok")
                    return "done"
            """
        },
    )

    async def scenario() -> list[tuple[str, str, bytes]]:
        recorder = Recorder()
        specs = [
            FunctionSpec(name="temp-correct", handler="temp_correct.handler", pinned=True),
            FunctionSpec(name="v1", handler="v1.function_handler", runtime="greengrass-v1"),
        ]
        artifacts = {"temp-correct": EXAMPLES / "temp_correct", "v1": v1}
        async with FunctionHost(tmp_path / "work", publish=recorder) as host:
            await host.apply(specs, artifacts)
            reading = {"thing": "t", "temperature": 20.0, "cpu_temperature": 45.0}
            await host.deliver("temp-correct", "sensors/t", json.dumps(reading).encode(), "thing:t")
            assert json.loads(await host.invoke("v1", b"{}")) == "done"
            return await recorder.wait_for(lambda m: len(m) >= 2)

    messages = uvloop.run(scenario())
    topics = {(function, topic) for function, topic, _ in messages}
    assert topics == {("temp-correct", "corrected/t"), ("v1", "v1/uv")}
