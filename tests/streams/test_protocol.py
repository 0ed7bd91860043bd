"""The sans-IO codec: frames as the SDKs write them, split anywhere, and broken input."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import cbor2
import pytest
from stream_manager.data import (
    AppendMessageRequest,
    ConnectRequest,
    ConnectResponse,
    MessageFrame,
    Operation,
)
from stream_manager.utilinternal import UtilInternal

from hedgerow.streams.codes import Status
from hedgerow.streams.errors import ProtocolError
from hedgerow.streams.manager import StreamsSettings
from hedgerow.streams.protocol import (
    NEED_DATA,
    ConnectRequested,
    RequestReceived,
    ServerConnection,
    choose_protocol_version,
)

from .helpers import TOKEN, running


def sdk_frame(operation: Operation, data: object) -> bytes:
    frame = MessageFrame(operation=operation, payload=cbor2.dumps(data.as_dict()))  # type: ignore[attr-defined]
    return b"".join(UtilInternal.encode_frame(frame))


def client_bytes() -> bytes:
    connect = ConnectRequest(
        request_id="c1", protocol_version="1.1.0", sdk_version="1.1.2", auth_token="t"
    )
    append = AppendMessageRequest(request_id="r1", name="s", payload=b"\x00\xffdata")
    return (
        bytes([1])
        + sdk_frame(Operation.Connect, connect)
        + sdk_frame(Operation.AppendMessage, append)
    )


def events(conn: ServerConnection) -> list[object]:
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
        if isinstance(event, ConnectRequested):
            conn.send_connect_response(event.request_id, Status.Success, "1.1.0")
    return out


def test_connect_and_a_request_split_at_every_byte_give_the_same_events() -> None:
    data = client_bytes()
    whole = ServerConnection()
    whole.receive_data(data)
    expected = events(whole)
    assert expected[0] == ConnectRequested(1, "c1", "1.1.0", (), "1.1.2", "t")
    assert isinstance(expected[1], RequestReceived)
    assert expected[1].operation == Operation.AppendMessage.value
    assert expected[1].body["payload"] == b"\x00\xffdata"
    for cut in range(len(data) + 1):
        conn = ServerConnection()
        conn.receive_data(data[:cut])
        got = events(conn)
        conn.receive_data(data[cut:])
        got += events(conn)
        assert got == expected, cut


def test_connect_response_is_what_the_sdk_reads() -> None:
    conn = ServerConnection()
    with pytest.raises(ProtocolError, match="cannot become connected"):
        conn.send_connect_response("c1", Status.Success, "1.1.0")  # nothing received yet
    conn.receive_data(client_bytes())
    assert isinstance(conn.next_event(), ConnectRequested)
    out = conn.send_connect_response("c1", Status.Success, "1.1.0")
    assert out[0] == 1
    length, op = struct.unpack(">iB", out[1:6])
    assert op == Operation.ConnectResponse.value and length == len(out) - 5
    response = ConnectResponse.from_dict(cbor2.loads(out[6:]))
    assert response.status.value == 0 and response.protocol_version == "1.1.0"


def test_a_first_frame_other_than_connect_is_a_protocol_error() -> None:
    conn = ServerConnection()
    conn.receive_data(
        bytes([1]) + sdk_frame(Operation.AppendMessage, AppendMessageRequest("r", "s", b"x"))
    )
    with pytest.raises(ProtocolError, match="Connect frame first"):
        conn.next_event()


def test_oversized_and_non_cbor_frames_are_protocol_errors() -> None:
    conn = ServerConnection(max_frame=100)
    conn.receive_data(bytes([1]) + struct.pack(">iB", 1000, 1))
    with pytest.raises(ProtocolError, match="limit is 100"):
        conn.next_event()
    conn = ServerConnection()
    conn.receive_data(bytes([1]) + struct.pack(">iB", 3, 1) + b"\x1c\x00")
    with pytest.raises(ProtocolError, match="not CBOR"):
        conn.next_event()


def test_protocol_version_is_chosen_from_what_both_sides_speak() -> None:
    ask = ConnectRequested(1, "c", "9.9.9", ("1.0.0",), None, None)
    assert choose_protocol_version(ask) == "1.0.0"
    assert choose_protocol_version(ConnectRequested(1, "c", "9.9.9", (), None, None)) is None


def test_the_server_answers_an_unknown_operation_and_keeps_the_connection(
    tmp_path: Path,
) -> None:
    with running(StreamsSettings(tmp_path)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            connect = ConnectRequest(request_id="c", protocol_version="1.1.0", auth_token=TOKEN)
            s.sendall(bytes([1]) + sdk_frame(Operation.Connect, connect))
            assert read_frame(s, version=True)[0] == Operation.ConnectResponse.value
            unknown = cbor2.dumps({"requestId": "u1"})
            s.sendall(struct.pack(">iB", len(unknown) + 1, 99) + unknown)
            op, body = read_frame(s)
            assert op == Operation.UnknownOperationError.value
            assert body["requestId"] == "u1" and body["status"] == Status.UnknownOperation
            listing = cbor2.dumps({"requestId": "l1"})
            s.sendall(struct.pack(">iB", len(listing) + 1, Operation.ListStreams.value) + listing)
            op, body = read_frame(s)
            assert op == Operation.ListStreamsResponse.value and body["streams"] == []


def read_frame(s: socket.socket, *, version: bool = False) -> tuple[int, dict[str, object]]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            assert chunk, "the server closed the connection"
            data += chunk
        return data

    if version:
        assert exactly(1) == b"\x01"
    length, op = struct.unpack(">iB", exactly(5))
    return op, cbor2.loads(exactly(length - 1))
