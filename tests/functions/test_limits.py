"""Memory limit, timeout, crash-restart-BROKEN, deploy failures: real processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hedgerow.functions import (
    FunctionDeployError,
    FunctionHost,
    FunctionSpec,
    FunctionUnavailable,
    InvocationTimeout,
    WorkerCrashed,
)
from hedgerow.functions.policy import RestartPolicy
from hedgerow.functions.pool import PoolSettings

from .helpers import EXAMPLES, Recorder, eventually, write_bundle

FAST = PoolSettings(policy=RestartPolicy(backoff_base_s=0.05, max_crashes=3, window_s=30))

ECHO = """
    import os
    def handler(event, context):
        return {"pid": os.getpid(), "event": event}
"""


async def test_gigabyte_allocation_killed_at_64mb_and_core_keeps_serving(tmp_path: Path) -> None:
    bundles = {
        "hog": write_bundle(
            tmp_path,
            "hog",
            {
                "hog.py": """
                    import os
                    def handler(event, context):
                        if event == "alloc":
                            block = bytearray(1024 * 1024 * 1024)
                            return len(block)
                        return os.getpid()
                """
            },
        ),
        "echo": write_bundle(tmp_path, "echo", {"echo.py": ECHO}),
    }
    specs = [
        FunctionSpec(name="hog", handler="hog.handler", pinned=True, memory_mb=64),
        FunctionSpec(name="echo", handler="echo.handler", pinned=True),
    ]
    async with FunctionHost(tmp_path / "work", publish=Recorder(), settings=FAST) as host:
        await host.apply(specs, bundles)
        pid_before = json.loads(await host.invoke("hog", b'"pid"'))
        with pytest.raises(WorkerCrashed, match="memory limit of 64 MB"):
            await host.invoke("hog", b'"alloc"')
        # the other function never noticed
        assert json.loads(await host.invoke("echo", b"1"))["event"] == 1
        # the hog is restarted (after backoff) and serves again from a new process
        await eventually(
            host,
            lambda host: (
                host.states()["hog"] == "RUNNING" and host.counters()["hog"]["crashes"] == 1
            ),
        )
        pid_after = json.loads(await host.invoke("hog", b'"pid"'))
        assert pid_after != pid_before
        assert host.counters()["hog"]["restarts"] == 1


async def test_endless_loop_is_stopped_at_its_timeout(tmp_path: Path) -> None:
    bundle = write_bundle(
        tmp_path,
        "spin",
        {
            "spin.py": """
                import os
                def handler(event, context):
                    if event == "spin":
                        while True:
                            pass
                    return os.getpid()
            """
        },
    )
    spec = FunctionSpec(name="spin", handler="spin.handler", pinned=True, timeout_s=0.3)
    async with FunctionHost(tmp_path / "work", publish=Recorder(), settings=FAST) as host:
        await host.apply([spec], {"spin": bundle})
        pid_before = json.loads(await host.invoke("spin", b'"pid"'))
        with pytest.raises(InvocationTimeout):
            await host.invoke("spin", b'"spin"', timeout=5.0)
        # replaced at once (no crash, no backoff) and serving
        pid_after = json.loads(await host.invoke("spin", b'"pid"', timeout=5.0))
        assert pid_after != pid_before
        counters = host.counters()["spin"]
        assert counters["timeouts"] == 1 and counters["crashes"] == 0
        assert host.states()["spin"] == "RUNNING"


async def test_crashing_function_ends_broken_after_retry_limit(tmp_path: Path) -> None:
    bundle = write_bundle(
        tmp_path,
        "crashy",
        {
            "crashy.py": """
                import os
                def handler(event, context):
                    import sys
                    sys.exit(17)
            """
        },
    )
    spec = FunctionSpec(name="crashy", handler="crashy.handler", pinned=True)
    async with FunctionHost(tmp_path / "work", publish=Recorder(), settings=FAST) as host:
        await host.apply([spec], {"crashy": bundle})
        for _attempt in range(3):
            await eventually(host, lambda host: host.states()["crashy"] == "RUNNING")
            with pytest.raises(WorkerCrashed, match="exited with code 17"):
                await host.invoke("crashy", b"{}")
        assert host.states()["crashy"] == "BROKEN"
        assert host.counters()["crashy"]["crashes"] == 3
        status = host.status()["crashy"]
        assert (status["state"], status["last_error"]) == ("BROKEN", "exited with code 17")
        with pytest.raises(FunctionUnavailable, match="BROKEN"):
            await host.invoke("crashy", b"{}")
        await host.deliver("crashy", "t", b"{}", "thing:x")
        assert host.counters()["crashy"]["dropped"] == 1
        # a new deployment of the same function starts it again
        await host.apply([spec], {"crashy": bundle})
        assert host.states()["crashy"] == "RUNNING"


async def test_missing_handler_fails_deploy_and_keeps_previous(tmp_path: Path) -> None:
    good = write_bundle(tmp_path, "good", {"echo.py": ECHO})
    spec = FunctionSpec(name="fn", handler="echo.handler", pinned=True)
    async with FunctionHost(tmp_path / "work", publish=Recorder()) as host:
        await host.apply([spec], {"fn": good})
        pid = json.loads(await host.invoke("fn", b"1"))["pid"]
        broken = FunctionSpec(name="fn", handler="echo.nope", pinned=True, version=2)
        with pytest.raises(FunctionDeployError) as info:
            await host.apply([broken], {"fn": good})
        assert info.value.function == "fn"
        assert "echo.nope" in info.value.reason and "AttributeError" in info.value.reason
        # the previous version still runs, in the same process
        assert host.states() == {"fn": "RUNNING"}
        assert json.loads(await host.invoke("fn", b"2"))["pid"] == pid
        assert host.specs()["fn"].version == 1


async def test_bundle_that_fails_to_import_fails_deploy(tmp_path: Path) -> None:
    bad = write_bundle(tmp_path, "bad", {"bad.py": "import no_such_module_anywhere\n"}, zip_it=True)
    spec = FunctionSpec(name="bad", handler="bad.handler")
    async with FunctionHost(tmp_path / "work", publish=Recorder()) as host:
        with pytest.raises(FunctionDeployError) as info:
            await host.apply([spec], {"bad": bad})
        assert info.value.function == "bad"
        assert "ModuleNotFoundError" in info.value.reason
        assert "no_such_module_anywhere" in info.value.reason
        assert host.states() == {}


async def test_missing_artifact_fails_deploy(tmp_path: Path) -> None:
    spec = FunctionSpec(name="ghost", handler="ghost.handler")
    async with FunctionHost(tmp_path / "work", publish=Recorder()) as host:
        with pytest.raises(FunctionDeployError, match="no artifact"):
            await host.apply([spec], {})
        with pytest.raises(FunctionDeployError, match="bundle not found"):
            await host.apply([spec], {"ghost": tmp_path / "nowhere.zip"})


async def test_host_exits_promptly_while_a_function_waits_in_backoff(tmp_path: Path) -> None:
    bundle = write_bundle(
        tmp_path, "crashy", {"crashy.py": "import os\ndef handler(e, c):\n    os._exit(3)\n"}
    )
    spec = FunctionSpec(name="crashy", handler="crashy.handler", pinned=True)
    slow_backoff = PoolSettings(policy=RestartPolicy(backoff_base_s=60.0))
    loop = asyncio.get_running_loop()
    async with FunctionHost(tmp_path / "work", publish=Recorder(), settings=slow_backoff) as host:
        await host.apply([spec], {"crashy": bundle})
        with pytest.raises(WorkerCrashed):
            await host.invoke("crashy", b"{}")
        assert host.states()["crashy"] == "BACKOFF"
        started = loop.time()
    assert loop.time() - started < 5.0


async def test_examples_deploy_under_default_limit_and_numpy_hint_at_64mb(tmp_path: Path) -> None:
    names = ("temp_correct", "vibration_features", "window_aggregate")
    specs = [
        FunctionSpec(name=n.replace("_", "-"), handler=f"{n}.handler", pinned=True) for n in names
    ]
    artifacts = {n.replace("_", "-"): EXAMPLES / n for n in names}
    async with FunctionHost(tmp_path / "work", publish=Recorder()) as host:
        await host.apply(specs, artifacts)
        assert set(host.states().values()) == {"RUNNING"}
        tight = FunctionSpec(name="tight", handler="vibration_features.handler", memory_mb=64)
        tight_artifacts = {**artifacts, "tight": EXAMPLES / "vibration_features"}
        if host.memory_backend == "rlimit-as":
            # the address-space limit is stricter than resident memory: numpy needs ~100 MB
            with pytest.raises(FunctionDeployError) as info:
                await host.apply([*specs, tight], tight_artifacts)
            assert info.value.function == "tight"
            assert "raise memory_mb" in info.value.reason
        else:
            await host.apply([*specs, tight], tight_artifacts)
            assert host.states()["tight"] == "RUNNING"


async def test_cancelled_apply_leaves_nothing_running(tmp_path: Path) -> None:
    slow = write_bundle(
        tmp_path,
        "slow",
        {"slow.py": "import time\ntime.sleep(30)\ndef handler(e, c):\n    return 1\n"},
    )
    spec = FunctionSpec(name="slow", handler="slow.handler")  # on demand: no loop allowance
    async with FunctionHost(tmp_path / "work", publish=Recorder(), settle_s=60) as host:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await host.apply([spec], {"slow": slow})
        assert host.states() == {}
        assert host._tasks == {}


async def test_function_not_ready_within_startup_timeout_fails_deploy(tmp_path: Path) -> None:
    slow = write_bundle(
        tmp_path,
        "slow",
        {"slow.py": "import time\ntime.sleep(30)\ndef handler(e, c):\n    return 1\n"},
    )
    spec = FunctionSpec(name="slow", handler="slow.handler")
    settings = PoolSettings(startup_timeout_s=0.3)
    async with FunctionHost(
        tmp_path / "work", publish=Recorder(), settings=settings, settle_s=60
    ) as host:
        with pytest.raises(FunctionDeployError, match="not ready after 0.3 s"):
            await host.apply([spec], {"slow": slow})
        assert host.states() == {}


async def test_an_internal_error_in_one_function_leaves_the_others_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hedgerow.functions.pool import FunctionPool

    original = FunctionPool._housekeeping

    async def faulty(self: FunctionPool) -> None:
        if self.name == "victim":
            raise RuntimeError("injected fault")
        await original(self)

    monkeypatch.setattr(FunctionPool, "_housekeeping", faulty)
    echo = write_bundle(tmp_path, "echo", {"echo.py": ECHO})
    specs = [
        FunctionSpec(name="victim", handler="echo.handler", pinned=True),
        FunctionSpec(name="healthy", handler="echo.handler", pinned=True),
    ]
    async with FunctionHost(tmp_path / "work", publish=Recorder()) as host:
        with pytest.raises(FunctionDeployError, match="injected fault"):
            await host.apply(specs, {"victim": echo, "healthy": echo})
        await host.apply(specs[1:], {"healthy": echo})
        assert json.loads(await host.invoke("healthy", b"5"))["event"] == 5
