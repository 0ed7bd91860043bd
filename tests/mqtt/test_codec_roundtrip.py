"""Every packet type round-trips in every version; truncations need data; corruption is typed."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hedgerow.mqtt import Decoder, MQTTError, Packet, ProtocolVersion, encode

from .strategies import VERSIONS, client_bound, connects, server_bound

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decoder(version: ProtocolVersion, server: bool) -> Decoder:
    return Decoder(version, server=server)


def _roundtrip(packet: Packet, version: ProtocolVersion, server: bool) -> None:
    data = encode(packet, version)
    decoder = _decoder(version, server)
    decoder.receive_data(data)
    assert decoder.next_packet() == packet
    assert decoder.next_packet() is None
    assert decoder.buffered == 0


@given(st.data())
@FAST
def test_server_bound_packets_roundtrip(data: st.DataObject) -> None:
    version = data.draw(st.sampled_from(VERSIONS))
    _roundtrip(data.draw(server_bound(version)), version, server=True)


@given(st.data())
@FAST
def test_client_bound_packets_roundtrip(data: st.DataObject) -> None:
    version = data.draw(st.sampled_from(VERSIONS))
    _roundtrip(data.draw(client_bound(version)), version, server=False)


@given(st.data())
@FAST
def test_connect_roundtrip_teaches_the_decoder_its_version(data: st.DataObject) -> None:
    version = data.draw(st.sampled_from(VERSIONS))
    connect = data.draw(connects(version))
    follow = data.draw(server_bound(version))
    decoder = Decoder()
    decoder.receive_data(encode(connect, version) + encode(follow, version))
    assert decoder.packets() == [connect, follow]
    assert decoder.version == version


@given(st.data())
@settings(max_examples=25, deadline=None)
def test_every_truncation_needs_more_data(data: st.DataObject) -> None:
    version = data.draw(st.sampled_from(VERSIONS))
    server = data.draw(st.booleans())
    packet = data.draw(server_bound(version) if server else client_bound(version))
    wire = encode(packet, version)
    for cut in range(len(wire)):
        decoder = _decoder(version, server)
        decoder.receive_data(wire[:cut])
        assert decoder.next_packet() is None
        decoder.receive_data(wire[cut:])
        assert decoder.next_packet() == packet


@given(st.data())
@settings(max_examples=20, deadline=None)
def test_byte_at_a_time_feeding_yields_each_packet_once(data: st.DataObject) -> None:
    version = data.draw(st.sampled_from(VERSIONS))
    packets = data.draw(st.lists(client_bound(version), min_size=1, max_size=5))
    wire = b"".join(encode(packet, version) for packet in packets)
    decoder = _decoder(version, server=False)
    got: list[Packet] = []
    for index in range(len(wire)):
        decoder.receive_data(wire[index : index + 1])
        got.extend(decoder.packets())
    assert got == packets


@given(st.data())
@settings(max_examples=20, deadline=None)
def test_arbitrary_chunking_of_a_stream(data: st.DataObject) -> None:
    version = data.draw(st.sampled_from(VERSIONS))
    packets = data.draw(st.lists(server_bound(version), min_size=1, max_size=8))
    wire = b"".join(encode(packet, version) for packet in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    decoder = _decoder(version, server=True)
    got: list[Packet] = []
    for start, stop in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        decoder.receive_data(wire[start:stop])
        got.extend(decoder.packets())
    assert got == packets


def _decode_all(decoder: Decoder, wire: bytes) -> list[Packet]:
    decoder.receive_data(wire)
    try:
        return decoder.packets()
    except MQTTError:
        return []


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_corrupted_streams_raise_only_mqtt_errors(data: st.DataObject) -> None:
    version = data.draw(st.sampled_from(VERSIONS))
    server = data.draw(st.booleans())
    packets = data.draw(
        st.lists(server_bound(version) if server else client_bound(version), max_size=3)
    )
    wire = bytearray(b"".join(encode(packet, version) for packet in packets))
    if server and data.draw(st.booleans()):
        wire[:0] = encode(data.draw(connects(version)), version)
    for _ in range(data.draw(st.integers(1, 4))):
        if not wire:
            break
        at = data.draw(st.integers(0, len(wire) - 1))
        wire[at] = data.draw(st.integers(0, 255))
    version_given = None if server and data.draw(st.booleans()) else version
    decoded = _decode_all(Decoder(version_given, server=server), bytes(wire))
    assert all(type(packet).__module__ == "hedgerow.mqtt.packets" for packet in decoded)


@given(st.binary(max_size=64), st.sampled_from([None, *VERSIONS]), st.booleans())
@settings(max_examples=150, deadline=None)
def test_random_bytes_raise_only_mqtt_errors(
    wire: bytes, version: ProtocolVersion | None, server: bool
) -> None:
    decoded = _decode_all(Decoder(version, server=server), wire)
    assert isinstance(decoded, list)
