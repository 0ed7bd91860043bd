"""Greengrass V1 functions written against the PyPI greengrasssdk run unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from hedgerow.core.shadow import ShadowService
from hedgerow.functions import FunctionHost, FunctionSpec

from .helpers import Recorder, write_bundle

V1_FUNCTION = """
    import json
    import os
    import greengrasssdk

    iot = greengrasssdk.client("iot-data")
    lam = greengrasssdk.client("lambda")

    def function_handler(event, context):
        subject = context.client_context.custom["subject"]
        thing = os.environ["AWS_IOT_THING_NAME"]
        iot.publish(topic="v1/out", payload=json.dumps({"seen": event, "subject": subject}))
        doubled = lam.invoke(
            FunctionName="arn:aws:lambda:us-east-1:123456789012:function:doubler:1",
            InvocationType="RequestResponse",
            Payload=json.dumps({"n": event["n"]}),
        )
        n2 = json.loads(doubled["Payload"].read())["n"]
        lam.invoke(
            FunctionName="arn:aws:lambda:us-east-1:123456789012:function:doubler",
            InvocationType="Event",
            Payload=json.dumps({"n": n2}),
        )
        update = iot.update_thing_shadow(
            thingName="lamp-1", payload=json.dumps({"state": {"desired": {"n": n2}}})
        )
        got = json.loads(iot.get_thing_shadow(thingName="lamp-1")["payload"])
        return {
            "function_name": context.function_name,
            "arn": context.invoked_function_arn,
            "request_id": context.aws_request_id,
            "n2": n2,
            "updated_version": json.loads(update["payload"])["version"],
            "shadow_desired": got["state"]["desired"],
            "thing": thing,
        }
"""

DOUBLER = """
    import json
    import greengrasssdk

    iot = greengrasssdk.client("iot-data")

    def function_handler(event, context):
        iot.publish(topic="doubler/seen", payload=json.dumps(event))
        return {"n": event["n"] * 2}
"""

SENSOR_LOOP = """
    import json
    import time
    import greengrasssdk

    iot = greengrasssdk.client("iot-data")
    count = 0
    # the classic V1 pinned sensor loop at module level: never returns
    while True:
        count += 1
        iot.publish(topic="loop/reading", payload=json.dumps({"count": count}))
        time.sleep(0.02)

    def function_handler(event, context):
        return None
"""


async def test_v1_function_publish_invoke_and_shadow(tmp_path: Path) -> None:
    recorder = Recorder()
    shadow = ShadowService(None)
    bundles = {
        "v1-main": write_bundle(tmp_path, "v1-main", {"main.py": V1_FUNCTION}, zip_it=True),
        "doubler": write_bundle(tmp_path, "doubler", {"doubler.py": DOUBLER}),
    }
    specs = [
        FunctionSpec(
            name="v1-main", handler="main.function_handler", runtime="greengrass-v1", pinned=True
        ),
        FunctionSpec(name="doubler", handler="doubler.function_handler", runtime="greengrass-v1"),
    ]
    async with FunctionHost(
        tmp_path / "work", publish=recorder, shadow=shadow, thing_name="core-1"
    ) as host:
        await host.apply(specs, bundles)
        assert host.states() == {"v1-main": "RUNNING", "doubler": "RUNNING"}
        raw = await host.invoke("v1-main", json.dumps({"n": 21}).encode(), topic="sensors/a")
        result = json.loads(raw)
        assert result["function_name"] == "v1-main"
        assert result["arn"].endswith(":function:v1-main:1")
        assert result["n2"] == 42
        assert result["updated_version"] == 1
        assert result["shadow_desired"] == {"n": 42}
        assert result["thing"] == "core-1"
        out = await recorder.wait_for(lambda m: len(m) >= 3)
        published = {(f, t) for f, t, _ in out}
        assert ("v1-main", "v1/out") in published
        assert ("doubler", "doubler/seen") in published
        assert json.loads(recorder.on("v1/out")[0]) == {"seen": {"n": 21}, "subject": "sensors/a"}
        # the Event invoke reached the doubler with n=42
        await recorder.wait_for(
            lambda m: any(json.loads(p) == {"n": 42} for _, t, p in m if t == "doubler/seen")
        )
        assert shadow.get("lamp-1")["state"]["desired"] == {"n": 42}
        # a new version gets a new token; the SDK calls of the new process still work
        specs[0] = FunctionSpec(
            name="v1-main",
            handler="main.function_handler",
            runtime="greengrass-v1",
            pinned=True,
            version=2,
        )
        await host.apply(specs, bundles)
        again = json.loads(await host.invoke("v1-main", b'{"n": 1}', topic="sensors/b"))
        assert again["arn"].endswith(":function:v1-main:2")
        assert again["n2"] == 2 and again["updated_version"] == 2


async def test_v1_pinned_module_level_loop_runs(tmp_path: Path) -> None:
    recorder = Recorder()
    bundle = write_bundle(tmp_path, "loop", {"loop.py": SENSOR_LOOP})
    spec = FunctionSpec(
        name="loop", handler="loop.function_handler", runtime="greengrass-v1", pinned=True
    )
    async with FunctionHost(tmp_path / "work", publish=recorder, settle_s=0.2) as host:
        await host.apply([spec], {"loop": bundle})
        assert host.states() == {"loop": "RUNNING"}
        await recorder.wait_for(lambda m: len(m) >= 5)
    counts = [json.loads(p)["count"] for p in recorder.on("loop/reading")]
    assert counts[:5] == [1, 2, 3, 4, 5]
    assert {f for f, _, _ in recorder.messages} == {"loop"}


ERRORS_FUNCTION = """
    import json
    import greengrasssdk
    from greengrasssdk.IoTDataPlane import ShadowError

    iot = greengrasssdk.client("iot-data")
    lam = greengrasssdk.client("lambda")

    def function_handler(event, context):
        failed = lam.invoke(FunctionName="arn:aws:lambda:::function:raiser", Payload=b"{}")
        missing = lam.invoke(FunctionName="arn:aws:lambda:::function:nobody-here", Payload=b"{}")
        iot.update_thing_shadow(thingName="t1", payload=json.dumps({"state": {"reported": {"a": 1}}}))
        try:
            iot.update_thing_shadow(
                thingName="t1", payload=json.dumps({"state": {"reported": {"a": 2}}, "version": 99})
            )
            conflict = None
        except ShadowError as exc:
            conflict = str(exc)
        try:
            iot.get_thing_shadow(thingName="never-updated")
            absent = None
        except ShadowError as exc:
            absent = str(exc)
        return {
            "failed_error": failed["FunctionError"],
            "failed_payload": json.loads(failed["Payload"]),
            "missing_error": missing["FunctionError"],
            "conflict": conflict,
            "absent": absent,
        }
"""

RAISER = """
    def function_handler(event, context):
        raise RuntimeError("sensor unplugged")
"""

BINARY = """
    def function_handler(event, context):
        assert isinstance(event, bytes)
        return event[::-1]
"""


async def test_v1_errors_surface_as_the_sdk_expects(tmp_path: Path) -> None:
    shadow_replies: list[tuple[str, bytes]] = []

    async def shadow_publish(topic: str, payload: bytes) -> None:
        shadow_replies.append((topic, payload))

    bundles = {
        "errs": write_bundle(tmp_path, "errs", {"errs.py": ERRORS_FUNCTION}),
        "raiser": write_bundle(tmp_path, "raiser", {"raiser.py": RAISER}),
        "binary": write_bundle(tmp_path, "binary", {"binary.py": BINARY}),
    }
    specs = [
        FunctionSpec(name="errs", handler="errs.function_handler", runtime="greengrass-v1"),
        FunctionSpec(name="raiser", handler="raiser.function_handler", runtime="greengrass-v1"),
        FunctionSpec(
            name="binary",
            handler="binary.function_handler",
            runtime="greengrass-v1",
            encoding="binary",
        ),
    ]
    async with FunctionHost(
        tmp_path / "work",
        publish=Recorder(),
        shadow=ShadowService(None),
        shadow_publish=shadow_publish,
    ) as host:
        await host.apply(specs, bundles)
        result = json.loads(await host.invoke("errs", b"{}"))
        assert result["failed_error"] == "Handled"
        assert result["failed_payload"]["errorMessage"] == "sensor unplugged"
        assert result["failed_payload"]["errorType"] == "RuntimeError"
        assert result["missing_error"] == "Unhandled"
        assert "409" in result["conflict"] and "Version conflict" in result["conflict"]
        assert "404" in result["absent"]
        assert await host.invoke("binary", b"\x00\x01\xff") == b"\xff\x01\x00"
        assert host.counters()["raiser"]["failed"] == 1
    topics = [topic for topic, _ in shadow_replies]
    assert "$aws/things/t1/shadow/update/accepted" in topics
    assert "$aws/things/t1/shadow/update/rejected" in topics


SLOW_START = """
    import json
    import time
    import greengrasssdk

    iot = greengrasssdk.client("iot-data")
    for count in range(60):  # module-level code that outlives the settle time and the timeout
        iot.publish(topic="init/progress", payload=json.dumps({"count": count}))
        time.sleep(0.025)

    def function_handler(event, context):
        iot.publish(topic="handled", payload=json.dumps(event))
"""


async def test_events_wait_while_module_code_runs_and_are_served_after(tmp_path: Path) -> None:
    recorder = Recorder()
    bundle = write_bundle(tmp_path, "slowstart", {"slowstart.py": SLOW_START})
    spec = FunctionSpec(
        name="slowstart",
        handler="slowstart.function_handler",
        runtime="greengrass-v1",
        pinned=True,
        timeout_s=0.1,
    )
    async with FunctionHost(tmp_path / "work", publish=recorder, settle_s=0.1) as host:
        await host.apply([spec], {"slowstart": bundle})
        for n in range(3):
            await host.deliver("slowstart", "in", json.dumps({"n": n}).encode(), "thing:a")
        await recorder.wait_for(lambda m: len([1 for _, t, _ in m if t == "handled"]) == 3)
        counters = host.counters()["slowstart"]
        assert counters["restarts"] == 0 and counters["timeouts"] == 0
    progress = [json.loads(p)["count"] for p in recorder.on("init/progress")]
    assert progress == list(range(60))  # the module code ran once, to its end
    assert [json.loads(p)["n"] for p in recorder.on("handled")] == [0, 1, 2]
