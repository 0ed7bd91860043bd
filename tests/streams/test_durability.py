"""Streams in files survive a restart and a kill -9 of the server process: every append that
returned is there afterwards, with its sequence number and bytes (real child processes, the
V2 SDK from PyPI as the client)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import stream_manager as sm

from .helpers import TOKEN, ServerProcess, token_env

APPENDER = """
import sys
import stream_manager as sm
c = sm.StreamManagerClient(port=int(sys.argv[1]), request_timeout=20)
for i in range(1_000_000):
    seq = c.append_message("crash", b"crash-%07d-" % i + b"z" * (i % 200))
    print(seq, i, flush=True)
"""


def payload_of(i: int) -> bytes:
    return b"crash-%07d-" % i + b"z" * (i % 200)


def client(port: int) -> sm.StreamManagerClient:
    with token_env():
        return sm.StreamManagerClient(port=port, request_timeout=20)


def test_file_streams_survive_a_restart_and_memory_streams_do_not(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    c = client(server.port)
    c.create_message_stream(
        sm.MessageStreamDefinition(
            name="durable",
            strategy_on_full=sm.StrategyOnFull.RejectNewData,
            persistence=sm.Persistence.File,
            stream_segment_size=4096,
        )
    )
    c.create_message_stream(
        sm.MessageStreamDefinition(
            name="volatile",
            strategy_on_full=sm.StrategyOnFull.RejectNewData,
            persistence=sm.Persistence.Memory,
        )
    )
    for i in range(1000):
        c.append_message("durable", b"d%d" % i)
        c.append_message("volatile", b"v%d" % i)
    c.close()
    server.terminate()

    server = ServerProcess(tmp_path)
    try:
        c = client(server.port)
        assert c.list_streams() == ["durable"]
        info = c.describe_message_stream("durable")
        assert info.definition.stream_segment_size == 4096
        assert info.storage_status.newest_sequence_number == 999
        messages = c.read_messages(
            "durable", sm.ReadMessagesOptions(min_message_count=1000, max_message_count=1000)
        )
        assert [m.payload for m in messages] == [b"d%d" % i for i in range(1000)]
        # numbering goes on where it stopped
        assert c.append_message("durable", b"after") == 1000
        c.close()
    finally:
        server.terminate()


@pytest.mark.parametrize("flush_on_write", [False, True])
@pytest.mark.timeout(120)
def test_every_append_that_returned_survives_kill_9(tmp_path: Path, flush_on_write: bool) -> None:
    server = ServerProcess(tmp_path)
    c = client(server.port)
    c.create_message_stream(
        sm.MessageStreamDefinition(
            name="crash",
            strategy_on_full=sm.StrategyOnFull.RejectNewData,
            persistence=sm.Persistence.File,
            flush_on_write=flush_on_write,
            stream_segment_size=64 * 1024,  # several segments, a kill during any of them
        )
    )
    c.close()
    # the appender is its own process (like a function): one line per append that returned
    env = dict(os.environ, AWS_CONTAINER_AUTHORIZATION_TOKEN=TOKEN)
    appender = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(server.port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    assert appender.stdout is not None
    returned: dict[int, bytes] = {}
    for line in appender.stdout:  # bounded: the appender stops after 1,000,000 or on error
        seq, i = (int(x) for x in line.split())
        returned[seq] = payload_of(i)
        if len(returned) == 3000:
            server.kill()  # SIGKILL while the client is appending
    appender.wait(timeout=60)
    appender.stdout.close()
    assert len(returned) >= 3000

    server = ServerProcess(tmp_path)
    try:
        c = client(server.port)
        info = c.describe_message_stream("crash")
        newest = info.storage_status.newest_sequence_number
        assert newest >= max(returned)
        messages = []
        while len(messages) <= newest:
            messages += c.read_messages(
                "crash",
                sm.ReadMessagesOptions(
                    desired_start_sequence_number=len(messages), max_message_count=5000
                ),
            )
        held = {m.sequence_number: m.payload for m in messages}
        missing = [seq for seq, payload in returned.items() if held.get(seq) != payload]
        assert missing == []
        assert c.append_message("crash", b"next") == newest + 1
        c.close()
    finally:
        server.terminate()
