"""Micro-benchmark of the MQTT codec: PUBLISH decode and encode rates on one core.

Run: .venv/bin/python bench/codec.py
"""

from __future__ import annotations

import time

from hedgerow.mqtt import Decoder, ProtocolVersion, Publish, encode, encode_publish

PAYLOAD = b'{"temperature": 21.5, "humidity": 40.1, "pressure": 1013.2, "sensor": "bme680-1"}'
PAYLOAD = (PAYLOAD * 2)[:100]
TOPIC = "sensors/bme680-1/env"
COUNT = 200_000
CHUNK = 65536


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds / 1e6:.2f} M/s"


def decode_rate(version: ProtocolVersion, qos: int) -> float:
    packet = encode_publish(TOPIC, PAYLOAD, qos, packet_id=1 if qos else None, version=version)
    stream = packet * COUNT
    chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]
    decoder = Decoder(version)
    got = 0
    started = time.perf_counter()
    for chunk in chunks:
        decoder.receive_data(chunk)
        got += len(decoder.packets())
    elapsed = time.perf_counter() - started
    assert got == COUNT, got
    return elapsed


def decode_large_rate() -> float:
    packet = encode_publish(TOPIC, PAYLOAD * 10, 1, packet_id=1)
    stream = packet * (COUNT // 10)
    decoder = Decoder(ProtocolVersion.V311)
    started = time.perf_counter()
    for i in range(0, len(stream), CHUNK):
        decoder.receive_data(stream[i : i + CHUNK])
        decoder.packets()
    return time.perf_counter() - started


def encode_rate(version: ProtocolVersion) -> float:
    started = time.perf_counter()
    for _ in range(COUNT):
        encode_publish(TOPIC, PAYLOAD, 0, False, False, None, version)
    return time.perf_counter() - started


def encode_generic_rate(version: ProtocolVersion) -> float:
    packet = Publish(TOPIC, PAYLOAD, 1, packet_id=5)
    started = time.perf_counter()
    for _ in range(COUNT):
        encode(packet, version)
    return time.perf_counter() - started


def main() -> None:
    size = len(encode_publish(TOPIC, PAYLOAD))
    print(f"PUBLISH of {size} bytes (payload {len(PAYLOAD)}), {COUNT} packets, best of 3")
    for version in (ProtocolVersion.V311, ProtocolVersion.V5):
        for qos in (0, 1):
            best = min(decode_rate(version, qos) for _ in range(3))
            print(f"decode {version.name} QoS{qos}: {_rate(COUNT, best)}")
        best = min(encode_rate(version) for _ in range(3))
        print(f"encode_publish {version.name} QoS0: {_rate(COUNT, best)}")
        best = min(encode_generic_rate(version) for _ in range(3))
        print(f"encode(Publish) {version.name} QoS1: {_rate(COUNT, best)}")
    best = min(decode_large_rate() for _ in range(3))
    print(f"decode V311 QoS1 with 1000-byte payload: {_rate(COUNT // 10, best)}")


if __name__ == "__main__":
    main()
