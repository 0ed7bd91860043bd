"""SyncClient: the blocking wrapper, against the machine's Mosquitto."""

from __future__ import annotations

import threading
import uuid

import pytest

from hedgerow.client import ClientError, ConnectError, ConnectionLost, ProtocolVersion
from hedgerow.client.sync import SyncClient
from tests.conftest import free_port

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(20)]


def sync_client(broker: tuple[str, int], **options: object) -> SyncClient:
    options.setdefault("client_id", f"hedgerow-sync-{uuid.uuid4().hex[:12]}")
    return SyncClient(broker[0], broker[1], **options)


@pytest.mark.parametrize("version", [ProtocolVersion.V311, ProtocolVersion.V5])
def test_sync_round_trip(
    shared_broker: tuple[str, int], topic: str, version: ProtocolVersion
) -> None:
    with sync_client(shared_broker, version=version) as client:
        assert client.is_connected
        assert client.subscribe(f"{topic}/#", qos=1) == (1,)
        client.publish(f"{topic}/a", b"one", qos=1)
        client.publish(f"{topic}/b", "two", qos=2)
        first = client.get_message(timeout=5)
        second = client.get_message(timeout=5)
        assert client.unsubscribe(f"{topic}/#") == (() if version == ProtocolVersion.V311 else (0,))
    assert first is not None and second is not None
    assert (first.topic, first.payload) == (f"{topic}/a", b"one")
    assert (second.topic, second.payload, second.qos) == (f"{topic}/b", b"two", 1)
    assert not client.is_connected


def test_sync_messages_iterator_stops_on_timeout(
    shared_broker: tuple[str, int], topic: str
) -> None:
    with sync_client(shared_broker) as client:
        client.subscribe(f"{topic}/n", qos=0)
        for index in range(3):
            client.publish(f"{topic}/n", str(index), qos=1)
        payloads = [message.payload for message in client.messages(timeout=0.5)]
        assert client.get_message(timeout=0.05) is None
    assert payloads == [b"0", b"1", b"2"]


def test_sync_close_stops_the_loop_thread(shared_broker: tuple[str, int]) -> None:
    client = sync_client(shared_broker)
    client.connect()
    assert any(t.name == "hedgerow-mqtt-sync" for t in threading.enumerate())
    client.close()
    client.close()  # twice is harmless
    assert not [t for t in threading.enumerate() if t.name == "hedgerow-mqtt-sync"]
    with pytest.raises(ClientError):
        client.publish("x", b"")


def test_sync_errors_are_the_client_errors(shared_broker: tuple[str, int]) -> None:
    refused = SyncClient("127.0.0.1", free_port())
    with pytest.raises(ConnectError):
        refused.connect()
    refused.close()
    with pytest.raises(ConnectError), SyncClient("127.0.0.1", free_port()):
        pass
    assert not [t for t in threading.enumerate() if t.name == "hedgerow-mqtt-sync"]
    with sync_client(shared_broker) as client:
        client.disconnect()
        with pytest.raises(ConnectionLost):
            client.get_message(timeout=1)
