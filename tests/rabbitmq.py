"""The machine's RabbitMQ (3.10) as the cloud's external MQTT engine, for tests marked
``rabbitmq``: set up by ``.ci/rabbitmq-mqtt`` (idempotent, quick when done), MQTT on
127.0.0.1:1885, the HTTP auth backend pointed at one test's cloud at a time.

RabbitMQ has one set of auth paths, so a test holds ``LOCK`` (fcntl, across xdist
workers) from pointing them at its cloud until it is done; its replicas' durable session
queues are deleted afterwards (they would otherwise collect every later test's telemetry).
"""

from __future__ import annotations

import fcntl
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hedgerow.cloud.broker_credentials import SECRET_FILE, BrokerSecret, load_or_create

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "rabbitmq-mqtt"
MQTT_PORT = 1885
BROKER_URL = f"mqtt://127.0.0.1:{MQTT_PORT}"
LOCK = Path("/tmp/hedgerow-rabbitmq-auth.lock")
QUESTIONS = ("user", "vhost", "resource", "topic")
#: a test waits this long for another test's turn on RabbitMQ (they run one at a time)
TURN_TIMEOUT_S = 300
#: the pytest timeout of a rabbitmq test: its own run plus a wait for its turn
TEST_TIMEOUT_S = 120 + TURN_TIMEOUT_S


def ensure_rabbitmq() -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, f".ci/rabbitmq-mqtt failed:\n{done.stdout}\n{done.stderr}"


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )


@dataclass
class RabbitMQ:
    """One test's turn on RabbitMQ: its cloud's secret and the replicas' client ids."""

    data: Path
    secret: BrokerSecret
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    replicas: list[str] = field(default_factory=list)

    def replica(self, name: str) -> str:
        """A replica id unique to this test (its queue is this test's alone)."""
        replica = f"{self.tag}-{name}"
        self.replicas.append(replica)
        return replica

    def point_auth_at(self, api_url: str) -> None:
        base = f"{api_url}/api/v1/broker-auth/{self.secret.path_token()}"
        settings = ", ".join(
            f'application:set_env(rabbitmq_auth_backend_http, {q}_path, "{base}/{q}")'
            for q in QUESTIONS
        )
        done = rabbitmqctl(
            "eval",
            f"{settings}, application:set_env(rabbitmq_auth_backend_http, http_method, post).",
        )
        assert done.returncode == 0, done.stderr

    def delete_queues(self) -> None:
        for replica in self.replicas:
            for qos in ("qos0", "qos1"):
                rabbitmqctl("delete_queue", f"mqtt-subscription-hedgerow-cloud-{replica}{qos}")


@contextmanager
def rabbitmq_turn(data: Path, api_url: str) -> Iterator[RabbitMQ]:
    """RabbitMQ set up, its auth paths at ``api_url`` for the cloud whose data directory is
    ``data`` (the broker secret made now, before the cloud starts), until the block ends."""
    ensure_rabbitmq()
    secret = load_or_create(data / SECRET_FILE)
    with LOCK.open("a") as lock:
        deadline = time.monotonic() + TURN_TIMEOUT_S
        while True:  # another test's turn: polled, bounded (flock has no timeout)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "RabbitMQ stayed busy with another test"
                time.sleep(0.2)
        rabbit = RabbitMQ(data, secret)
        rabbit.point_auth_at(api_url)
        try:
            yield rabbit
        finally:
            rabbit.delete_queues()
