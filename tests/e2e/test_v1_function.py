"""Migrating from Greengrass V1: a greengrasssdk Lambda deployed with --runtime greengrass-v1 runs unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.e2e.harness import EXAMPLES, System, wait_until

pytestmark = pytest.mark.slow


def test_a_v1_lambda_republishes_through_the_subscription_table(system: System) -> None:
    system.create_thing("bme680-9")
    system.function(
        "v1-forward", EXAMPLES / "v1_forward", "v1_forward.function_handler",
        "--runtime", "greengrass-v1", "--pinned",
    )  # fmt: skip
    system.route("thing:bme680-9", "sensors/#", "function:v1-forward")
    system.route("function:v1-forward", "v1/#", "cloud")
    system.deploy()
    system.start(
        "thing",
        [sys.executable, "-m", "hedgerow", "thing", "run", *system.thing_args("bme680-9"),
         "-id", "bme680-9", "-t", "sensors/bme680-9", "--sensor", "sim", "--interval", "0.2",
         "--state-dir", str(system.root / "state")],
    )  # fmt: skip
    forwarded = wait_until(
        lambda: system.payloads("v1/#")[:2] if len(system.payloads("v1/#")) >= 2 else None,
        timeout=60,
        what="two readings republished by the V1 function",
    )
    for message in forwarded:
        assert message["subject"] == "sensors/bme680-9"
        assert message["function"] == "v1-forward"
        assert message["reading"]["thing"] == "bme680-9"
        assert "temperature" in message["reading"]


HELLO_WORLD = """\
import greengrasssdk

client = greengrasssdk.client("iot-data")
# the V1 hello-world pattern: a pinned Lambda publishes as soon as it is loaded
client.publish(topic="hello/world", payload="Hello world! Sent from Greengrass Core.")


def function_handler(event, context):
    return
"""


def test_a_pinned_v1_lambda_publishing_at_import_reaches_the_cloud(
    system: System, tmp_path: Path
) -> None:
    code = tmp_path / "hello_world"
    code.mkdir()
    (code / "greengrassHelloWorld.py").write_text(HELLO_WORLD)
    system.function(
        "hello-world", code, "greengrassHelloWorld.function_handler",
        "--runtime", "greengrass-v1", "--pinned",
    )  # fmt: skip
    system.route("function:hello-world", "hello/#", "cloud")
    deployed = system.deploy()
    assert "Success" in deployed.stdout + deployed.stderr
    [message] = wait_until(
        lambda: system.messages("hello/#"), timeout=30, what="the import-time publish"
    )
    assert message["topic"] == "hello/world"
    assert message["payload"] == "Hello world! Sent from Greengrass Core."
