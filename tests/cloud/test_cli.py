"""`hedgerow cloud ...` end to end: real subprocesses for init, serve and the API commands."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import sys
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hedgerow import pki
from hedgerow.cli import main
from hedgerow.client import Client, ProtocolVersion

HEDGEROW = str(Path(sys.executable).parent / "hedgerow")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "functions" / "temp_correct"
WAIT = 20.0


@dataclass
class Result:
    code: int
    out: str
    err: str


def _in_process(args: tuple[str, ...]) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return Result(code, out.getvalue(), err.getvalue())


async def run(*args: str, cwd: Path, process: bool = True) -> Result:
    """``hedgerow ARGS`` as a subprocess, or (``process=False``, absolute paths only) through
    the same ``main()`` in a worker thread, which saves the interpreter start."""
    if not process:
        return await asyncio.to_thread(_in_process, args)
    process_ = await asyncio.create_subprocess_exec(
        HEDGEROW, *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(WAIT):
        out, err = await process_.communicate()
    assert process_.returncode is not None
    return Result(process_.returncode, out.decode(), err.decode())


async def ok(*args: str, cwd: Path, process: bool = True) -> str:
    result = await run(*args, cwd=cwd, process=process)
    assert result.code == 0, result.err
    return result.out


@dataclass
class Served:
    process: asyncio.subprocess.Process
    banner: str
    data: Path

    def state(self) -> dict[str, str]:
        return dict(json.loads((self.data / "serve.json").read_text()))


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    data = tmp_path / "data"
    init = await ok(
        "cloud", "init", "--data", str(data),
        "--api-port", "0", "--device-host", "127.0.0.1", "--device-port", "0",
        "--mqtt-host", "127.0.0.1", "--mqtt-port", "0",
        cwd=tmp_path,
    )  # fmt: skip
    assert "root CA" in init and (data / "admin-token").exists()
    with (tmp_path / "serve.log").open("wb") as log:  # the server's log, never a full pipe
        process = await asyncio.create_subprocess_exec(
            HEDGEROW, "cloud", "serve", "--data", str(data),
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(WAIT):
            while not lines or "Ctrl-C" not in lines[-1]:
                line = (await process.stdout.readline()).decode()
                assert line, "serve exited: " + "".join(lines)
                lines.append(line)
        yield Served(process, "".join(lines), data)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT):
                await process.wait()


async def test_init_refuses_an_existing_directory(tmp_path: Path) -> None:
    await ok("cloud", "init", "--data", "d", cwd=tmp_path)
    again = await run("cloud", "init", "--data", "d", cwd=tmp_path)
    assert again.code == 2 and "already initialised" in again.err


async def test_the_story_through_the_cli(served: Served, tmp_path: Path) -> None:
    state = served.state()
    for word in (
        "REST API",
        state["api"],
        "device HTTPS",
        state["device"],
        "cloud MQTT",
        state["mqtt"],
    ):
        assert word in served.banner
    d = ["--data", str(served.data)]
    await ok("cloud", "group", "create", "factory-1", *d, cwd=tmp_path)
    duplicate = await run("cloud", "group", "create", "factory-1", *d, cwd=tmp_path)
    assert duplicate.code == 2 and "already exists" in duplicate.err and "\n" == duplicate.err[-1]
    invalid = await run("cloud", "group", "create", "no spaces", *d, cwd=tmp_path, process=False)
    assert invalid.code == 2 and "invalid group name" in invalid.err

    out = await ok(
        "cloud",
        "core",
        "create",
        "--group",
        "factory-1",
        "pi-1",
        "--out",
        "bundles",
        *d,
        cwd=tmp_path,
    )
    assert "pi-1.tar.gz" in out
    with tarfile.open(tmp_path / "bundles" / "pi-1.tar.gz") as tar:
        assert sorted(tar.getnames()) == sorted(
            ["config.toml", "core.cert.pem", "core.key", "root-ca.pem", "deploy-verify.pem"]
        )
        tar.extractall(tmp_path / "pi-1", filter="data")

    await ok(
        "cloud",
        "thing",
        "create",
        "--group",
        "factory-1",
        "bme680-1",
        "--out",
        str(tmp_path / "certs"),
        *d,
        cwd=tmp_path,
        process=False,
    )
    assert {p.name for p in (tmp_path / "certs").iterdir()} == {
        "bme680-1.cert.pem",
        "bme680-1.key",
        "root-ca.pem",
    }
    assert oct((tmp_path / "certs" / "bme680-1.key").stat().st_mode & 0o777) == "0o600"
    key = pki.new_key()
    (tmp_path / "dev.csr").write_bytes(pki.make_csr(key, "dev-2"))
    await ok(
        "cloud",
        "thing",
        "create",
        "--group",
        "factory-1",
        "dev-2",
        "--out",
        str(tmp_path / "certs2"),
        "--csr",
        str(tmp_path / "dev.csr"),
        *d,
        cwd=tmp_path,
        process=False,
    )
    assert not (tmp_path / "certs2" / "dev-2.key").exists()
    listed = json.loads(
        await ok("cloud", "thing", "list", "--json", *d, cwd=tmp_path, process=False)
    )
    assert [t["name"] for t in listed] == ["bme680-1", "dev-2"]

    out = await ok(
        "cloud", "function", "create", "--group", "factory-1", "temp-correct",
        "--code", str(EXAMPLE), "--handler", "temp_correct.handler", "--pinned",
        "--memory", "64", "--timeout", "5", "--env", "FACTOR=5", *d,
        cwd=tmp_path, process=False,
    )  # fmt: skip
    assert "version 1" in out
    functions = json.loads(
        await ok(
            "cloud",
            "function",
            "list",
            "--group",
            "factory-1",
            "--json",
            *d,
            cwd=tmp_path,
            process=False,
        )
    )
    assert functions[0]["environment"] == {"FACTOR": "5"} and functions[0]["pinned"] is True
    for source, topic, target in (
        ("thing:bme680-1", "sensors/#", "function:temp-correct"),
        ("function:temp-correct", "corrected/#", "cloud"),
    ):
        await ok(
            "cloud", "subscription", "add", "--group", "factory-1",
            "--source", source, "--topic", topic, "--target", target, *d,
            cwd=tmp_path, process=False,
        )  # fmt: skip
    unknown = await run(
        "cloud", "subscription", "add", "--group", "factory-1",
        "--source", "thing:ghost", "--topic", "x", "--target", "cloud", *d,
        cwd=tmp_path, process=False,
    )  # fmt: skip
    assert unknown.code == 2 and "ghost" in unknown.err

    # the test plays the core: it answers the deployment the CLI waits for
    host, port = state["mqtt"].removeprefix("mqtts://").rsplit(":", 1)
    ctx = pki.client_context(
        str(tmp_path / "pi-1" / "root-ca.pem"),
        str(tmp_path / "pi-1" / "core.cert.pem"),
        str(tmp_path / "pi-1" / "core.key"),
    )
    async with Client(
        host, int(port), ssl=ctx, client_id="pi-1", version=ProtocolVersion.V5
    ) as core:
        await core.subscribe("$hedgerow/cores/pi-1/deployments", qos=1)
        deploy = asyncio.create_task(
            run("cloud", "deploy", "--group", "factory-1", "--wait", *d, cwd=tmp_path)
        )
        async with asyncio.timeout(WAIT):
            notice = json.loads((await core.get_message()).payload)
        for status in ("InProgress", "Success"):
            body = {"deployment_id": notice["deployment_id"], "status": status, "detail": ""}
            await core.publish("$hedgerow/cores/pi-1/deployment-status", json.dumps(body), qos=1)
        result = await deploy
        assert result.code == 0, result.err
        assert "InProgress" in result.out and "succeeded" in result.out

        failing = asyncio.create_task(
            run(
                "cloud", "deploy", "--group", "factory-1", "--wait", *d, cwd=tmp_path, process=False
            )
        )
        async with asyncio.timeout(WAIT):
            notice = json.loads((await core.get_message()).payload)
        body = {
            "deployment_id": notice["deployment_id"],
            "status": "Failure",
            "detail": "temp-correct crashed",
        }
        await core.publish("$hedgerow/cores/pi-1/deployment-status", json.dumps(body), qos=1)
        result = await failing
        assert result.code == 1 and "temp-correct crashed" in result.err

        history = await ok(
            "cloud", "deployments", "--group", "factory-1", *d, cwd=tmp_path, process=False
        )
        assert history.count("NewDeployment") == 2 and "Failure" in history and "Success" in history

        tail = await asyncio.create_subprocess_exec(
            HEDGEROW, "cloud", "tail", "corrected/#", "--count", "1", *d,
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert tail.stderr is not None and tail.stdout is not None
        async with asyncio.timeout(WAIT):
            assert "following" in (await tail.stderr.readline()).decode()
            for attempt in range(50):
                await core.publish(
                    "corrected/bme680-1", json.dumps({"t": 21.5, "n": attempt}), qos=1
                )
                try:
                    async with asyncio.timeout(0.3):
                        line = (await tail.stdout.readline()).decode()
                        break
                except TimeoutError:
                    continue
            await tail.wait()
        assert "corrected/bme680-1" in line and "pi-1" in line

    messages = await ok(
        "cloud", "messages", "--filter", "corrected/#", "--json", *d, cwd=tmp_path, process=False
    )
    assert json.loads(messages)[0]["topic"] == "corrected/bme680-1"
    # the positional filter works in messages too (as in tail); ids to page from
    human = await ok("cloud", "messages", "corrected/#", *d, cwd=tmp_path, process=False)
    assert "#1  " in human and "corrected/bme680-1" in human
    of_group = await ok(
        "cloud", "messages", "--group", "factory-1", "--json", *d, cwd=tmp_path, process=False
    )  # fmt: skip
    assert {m["core"] for m in json.loads(of_group)} == {"pi-1"}
    await ok(
        "cloud", "thing", "revoke", "--group", "factory-1", "bme680-1", *d,
        cwd=tmp_path, process=False,
    )  # fmt: skip
    shown = json.loads(
        await ok("cloud", "thing", "show", "bme680-1", "--json", *d, cwd=tmp_path, process=False)
    )
    assert shown["certificates"][0]["status"] == "revoked"
    # human output by default
    human = await ok("cloud", "thing", "show", "bme680-1", *d, cwd=tmp_path, process=False)
    assert "name: bme680-1" in human and "status: revoked" in human

    # fleet, group settings, a new core identity, detaching
    await ok("cloud", "group", "create", "factory-2", *d, cwd=tmp_path, process=False)
    await ok(
        "cloud",
        "group",
        "update",
        "factory-2",
        "--open-broker",
        "--ca-rotation-days",
        "3",
        *d,
        cwd=tmp_path,
        process=False,
    )
    shown_group = json.loads(
        await ok("cloud", "group", "show", "factory-2", "--json", *d, cwd=tmp_path, process=False)
    )
    assert shown_group["settings"] == {"open_broker": True} and shown_group["ca_rotation_days"] == 3
    await ok(
        "cloud",
        "thing",
        "attach",
        "--group",
        "factory-2",
        "bme680-1",
        *d,
        cwd=tmp_path,
        process=False,
    )
    fleet = await ok(
        "cloud", "fleet", "apply", "--from-group", "factory-1", "--group", "factory-2", *d,
        cwd=tmp_path, process=False,
    )  # fmt: skip
    assert "1 function(s) and 2 subscription(s) to 1 group(s)" in fleet
    subs = json.loads(
        await ok(
            "cloud",
            "subscription",
            "list",
            "--group",
            "factory-2",
            "--json",
            *d,
            cwd=tmp_path,
            process=False,
        )
    )
    assert {(x["source"], x["target"]) for x in subs} == {
        ("thing:bme680-1", "function:temp-correct"),
        ("function:temp-correct", "cloud"),
    }
    detached = await run(
        "cloud",
        "thing",
        "detach",
        "--group",
        "factory-2",
        "bme680-1",
        *d,
        cwd=tmp_path,
        process=False,
    )
    assert detached.code == 2 and "used by subscriptions" in detached.err
    out = await ok(
        "cloud",
        "core",
        "bundle",
        "pi-1",
        "--out",
        str(tmp_path / "new"),
        *d,
        cwd=tmp_path,
        process=False,
    )
    assert (tmp_path / "new" / "pi-1.tar.gz").exists() and "revoked" in out

    served.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(WAIT):
        assert await served.process.wait() == 0
    log = (tmp_path / "serve.log").read_text()
    assert "api.refused" in log and "already exists" in log, "bad input leaves a log line"


async def test_commands_work_from_elsewhere_with_url_and_token(
    served: Served, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env_free = ["--url", served.state()["api"]]
    no_token = await run(
        "cloud", "group", "list", *env_free, "--data", str(elsewhere), cwd=elsewhere
    )
    assert no_token.code == 2 and "token" in no_token.err
    token = (served.data / "admin-token").read_text().strip()
    await ok(
        "cloud",
        "group",
        "create",
        "remote",
        *env_free,
        "--token",
        token,
        cwd=elsewhere,
        process=False,
    )
    # labels: set, listed, filtered by, removed; rollouts need targets
    auth = [*env_free, "--token", token]

    async def cloud(*args: str) -> str:
        return await ok("cloud", *args, *auth, cwd=elsewhere, process=False)

    await cloud("group", "update", "remote", "--label", "site=a")
    labelled = await cloud("group", "list", "--label", "site=a")
    assert "remote" in labelled and "site=a" in labelled
    await cloud("group", "update", "remote", "--label", "site=")
    assert "(none)" in await cloud("group", "list", "--label", "site=a")
    bad = await run(
        "cloud", "group", "update", "remote", "--label", "site", *auth, cwd=elsewhere, process=False
    )
    assert bad.code == 2 and "write --label key=value" in bad.err
    untargeted = await run("cloud", "rollout", "start", *auth, cwd=elsewhere, process=False)
    assert untargeted.code == 2 and "--groups a,b or --label" in untargeted.err
    nobody = await run(
        "cloud", "rollout", "start", "--label", "site=a", *auth, cwd=elsewhere, process=False
    )
    assert nobody.code == 2 and "no group matches" in nobody.err
    assert "(none)" in await cloud("rollout", "status")
    wrong = await run(
        "cloud", "group", "list", *env_free, "--token", "bad", cwd=elsewhere, process=False
    )
    assert wrong.code == 2 and "invalid token" in wrong.err
    os_env = dict(os.environ, HEDGEROW_CLOUD_URL=served.state()["api"], HEDGEROW_CLOUD_TOKEN=token)
    process = await asyncio.create_subprocess_exec(
        HEDGEROW,
        "cloud",
        "group",
        "list",
        cwd=elsewhere,
        env=os_env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0 and "remote" in out.decode()
    down = await run(
        "cloud", "group", "list", "--url", "http://127.0.0.1:9", "--token", token, cwd=elsewhere
    )
    assert down.code == 2 and "cannot reach" in down.err


def test_an_argument_error_shows_the_subcommands_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from hedgerow.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["cloud", "thing", "revoke", "--bogus", "x"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: hedgerow cloud thing revoke")
    assert "unrecognized arguments: --bogus" in err
    with pytest.raises(SystemExit):
        main(["cloud", "tail", "a/#", "--filter", "b/#", "--nope"])
    assert capsys.readouterr().err.startswith("usage: hedgerow cloud tail")


def test_messages_show_the_readings_own_time() -> None:
    from hedgerow.cli.cloud import _message_line, reading_time

    assert reading_time('{"timestamp": 1700000000.25, "t": 1}') == 1700000000.25
    assert reading_time('{"timestamp": true}') is None
    assert reading_time("not json") is None and reading_time(None) is None
    line = _message_line(
        {"id": 7, "ts": 1700000060.0, "core": "pi-1", "topic": "t",
         "payload": '{"timestamp": 1700000000.25}'}
    )  # fmt: skip
    # spooled while offline: ingested a minute after it was read
    assert line.startswith("#7  2023-11-14 22:14:20.000  read 22:13:20.250  pi-1")


def test_admin_tokens_never_look_like_an_option() -> None:
    """``--token VALUE`` must parse for every token `cloud init` makes: a URL-safe token
    starts with "-" one time in 64, and argparse then refused it (a flaky CLI test)."""
    from hedgerow.cloud.datadir import new_admin_token

    tokens = [new_admin_token() for _ in range(2000)]
    assert not [t for t in tokens if t.startswith("-")]
    assert len(set(tokens)) == len(tokens)


def test_shadow_commands_say_what_to_give(tmp_path: Path) -> None:
    """Refused before any request: a --desired that is not a JSON object, nothing to change."""
    common = ("--url", "http://127.0.0.1:9", "--token", "t-unused")
    bad = _in_process(("cloud", "shadow", "update", "lamp", "--desired", "{led: on}", *common))
    assert bad.code == 2 and "--desired is not JSON" in bad.err and "give an object" in bad.err
    listed = _in_process(("cloud", "shadow", "update", "lamp", "--desired", "[1]", *common))
    assert listed.code == 2 and "must be a JSON object" in listed.err
    nothing = _in_process(("cloud", "shadow", "update", "lamp", *common))
    assert nothing.code == 2 and "give --desired" in nothing.err
    down = _in_process(("cloud", "core", "support-bundle", "pi-1", *common))
    assert down.code == 2 and "cannot reach the cloud API" in down.err


async def test_claims_and_devices_own_certificates_through_the_cli(
    served: Served, tmp_path: Path
) -> None:
    """Templates, claims (human output says what to do next), device CAs, and things by
    their own certificates one by one and from a CSV; refusals are one line, exit 2."""
    data = ("--data", str(served.data))
    await ok("cloud", "group", "create", "plant", *data, cwd=tmp_path, process=False)
    created = await ok(
        "cloud", "claim", "template", "create", "sensors", "--kind", "thing", "--group",
        "plant", "--name-pattern", "s-{serial}", *data, cwd=tmp_path, process=False,
    )  # fmt: skip
    assert "claim create --template sensors" in created
    out = await ok(
        "cloud", "claim", "create", "--template", "sensors", "--count", "2", "--expires", "1d",
        "--out", str(tmp_path), *data, cwd=tmp_path, process=False,
    )  # fmt: skip
    claim_id = out.split()[1]
    assert (tmp_path / f"{claim_id}.tar.gz").stat().st_mode & 0o077 == 0
    assert "hedgerow thing run --claim" in out
    listed = await ok("cloud", "claim", "list", *data, cwd=tmp_path, process=False)
    assert claim_id in listed and "0/2" in listed and "active" in listed
    await ok("cloud", "claim", "revoke", claim_id, *data, cwd=tmp_path, process=False)
    shown = await ok("cloud", "claim", "show", claim_id, *data, cwd=tmp_path, process=False)
    assert "revoked at" in shown

    old_ca = pki.make_ca("old vendor")
    for name in ("d-1", "d-2"):
        (tmp_path / f"{name}.pem").write_bytes(pki.issue(old_ca, "AWS IoT Certificate").cert_pem)
    (tmp_path / "fleet.csv").write_text("name,certificate,group\nd-1,d-1.pem,plant\nd-2,d-2.pem\n")
    imported = await ok(
        "cloud", "thing", "import", "--csv", str(tmp_path / "fleet.csv"), "--group", "plant",
        *data, cwd=tmp_path, process=False,
    )  # fmt: skip
    assert "imported 2 thing(s)" in imported
    one = pki.issue(old_ca, "x")
    (tmp_path / "d-3.pem").write_bytes(one.cert_pem)
    await ok(
        "cloud", "thing", "create", "d-3", "--cert", str(tmp_path / "d-3.pem"), "--group",
        "plant", *data, cwd=tmp_path, process=False,
    )  # fmt: skip
    things = await ok("cloud", "thing", "list", "--group", "plant", *data, cwd=tmp_path,
                      process=False)  # fmt: skip
    assert all(name in things for name in ("d-1", "d-2", "d-3"))
    (tmp_path / "ca.pem").write_bytes(old_ca.cert_pem)
    wrong = await run(
        "cloud", "ca", "register", str(tmp_path / "ca.pem"), "--template", "nope", *data,
        cwd=tmp_path, process=False,
    )  # fmt: skip
    assert wrong.code == 2 and "claim template 'nope' does not exist" in wrong.err
