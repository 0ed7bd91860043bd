"""The framed IPC codec: round-trips, every truncation, batching, malformed frames."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedgerow.functions import protocol as p
from hedgerow.functions.errors import IPCProtocolError

ids = st.integers(min_value=0, max_value=2**32 - 1)
text = st.text(max_size=40)
blobs = st.binary(max_size=200)

messages = st.one_of(
    st.builds(p.Ready, pid=ids, looping=st.booleans()),
    st.builds(p.Fatal, message=text),
    st.builds(
        p.Invoke,
        id=ids,
        topic=text,
        source=text,
        payload=blobs,
        want_result=st.booleans(),
        client_context=blobs,
    ),
    st.builds(p.Result, id=ids, payload=blobs),
    st.builds(
        p.Error,
        id=ids,
        kind=st.sampled_from(list(p.ErrorKind)),
        error_type=text,
        message=text,
        traceback=text,
    ),
    st.builds(p.Publish, topic=text, payload=blobs),
    st.builds(p.Call, id=ids, function=text, payload=blobs),
    st.builds(p.CallResult, id=ids, payload=blobs),
    st.builds(p.CallError, id=ids, message=text),
    st.builds(p.LogLevel, level=st.integers(min_value=0, max_value=50)),
)


@settings(deadline=None)  # CPU-bound on a shared machine: no per-example deadline
@given(messages)
def test_round_trip_and_every_truncation(message: p.Message) -> None:
    data = p.encode(message)
    for cut in range(len(data)):
        decoder = p.Decoder()
        decoder.receive_data(data[:cut])
        assert decoder.events() == []
        decoder.receive_data(data[cut:])
        assert decoder.events() == [message]
        assert decoder.buffered == 0


@settings(deadline=None)
@given(st.lists(messages, max_size=20), st.integers(min_value=1, max_value=64))
def test_many_frames_in_arbitrary_chunks(batch: list[p.Message], chunk: int) -> None:
    data = b"".join(p.encode(m) for m in batch)
    decoder = p.Decoder()
    out: list[p.Message] = []
    for start in range(0, len(data), chunk):
        decoder.receive_data(data[start : start + chunk])
        out.extend(decoder.events())
    assert out == batch


def test_malformed_frames_raise() -> None:
    decoder = p.Decoder(max_frame=100)
    decoder.receive_data(p.HEADER.pack(101, p.Kind.RESULT, 1))
    with pytest.raises(IPCProtocolError, match="exceeds"):
        decoder.events()
    for body, kind in [
        (b"\x00", p.Kind.INVOKE),
        (struct.pack("!BHHI", 1, 50, 0, 0), p.Kind.INVOKE),
        (b"\x00", p.Kind.PUBLISH),
        (b"\x00\x09ab", p.Kind.CALL),
        (b"not json", p.Kind.ERROR),
        (b"", 99),
    ]:
        decoder = p.Decoder()
        decoder.receive_data(p.HEADER.pack(len(body), kind, 1) + body)
        with pytest.raises(IPCProtocolError):
            decoder.events()


def test_encode_rejects_non_messages() -> None:
    with pytest.raises(TypeError):
        p.encode("hello")  # type: ignore[arg-type]
