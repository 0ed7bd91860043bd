"""The Modbus connector against real pymodbus servers: TCP, and RTU over a pseudo-terminal pair."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hedgerow.connectors.config import validate
from hedgerow.connectors.modbus import ModbusConnector
from hedgerow.connectors.modbus_codec import Order
from hedgerow.lifecycle import State

from .modbus_servers import (
    FC_COIL,
    FC_DISCRETE,
    FC_HOLDING,
    FC_INPUT,
    Recorder,
    rtu_server,
    serial_line,
    tcp_server,
)
from .test_modbus_codec import FORMATS, SAMPLES, layout

FAST = {"timeout_s": 0.5, "retries": 0, "backoff_base_s": 0.05, "backoff_cap_s": 0.2}


def connector(
    port: int, tags: list[dict[str, Any]], **extra: Any
) -> tuple[ModbusConnector, Recorder]:
    recorder = Recorder()
    config = validate(
        "modbus-tcp",
        "meter",
        {"host": "127.0.0.1", "port": port, "interval_s": 0.05, **FAST, **extra, "tags": tags},
    )
    return ModbusConnector(config, recorder), recorder


@pytest.fixture
async def running() -> AsyncIterator[list[ModbusConnector]]:
    started: list[ModbusConnector] = []
    yield started
    for c in started:
        await c.stop()
        assert c.state is State.STOPPED


def topic(tag: str) -> str:
    return f"connectors/meter/data/{tag}"


async def test_every_data_type_in_every_order(port: int, running: list[ModbusConnector]) -> None:
    tags: list[dict[str, Any]] = []
    expected: dict[str, Any] = {}
    address = 0
    async with tcp_server(port) as server:
        for data_type, fmt in FORMATS.items():
            value = SAMPLES[data_type][-2]
            for byte_order in Order:
                for word_order in Order:
                    name = f"{data_type.value}-{byte_order.value}-{word_order.value}"
                    registers = layout(struct.pack(fmt, value), byte_order, word_order)
                    await server.set(FC_HOLDING, address, registers)
                    tags.append(
                        {
                            "name": name,
                            "table": "holding_register",
                            "address": address,
                            "type": data_type.value,
                            "byte_order": byte_order.value,
                            "word_order": word_order.value,
                        }
                    )
                    expected[name] = value
                    address += len(registers) + 1
        await server.set(FC_INPUT, 0, [0x5048, 0x2D31, 0])  # "PH-1" then a NUL
        await server.set(FC_INPUT, 10, [0b0000_0100_0000_0000])
        await server.set(FC_INPUT, 11, [650])
        await server.set(FC_COIL, 5, [True])
        await server.set(FC_DISCRETE, 7, [True])
        tags += [
            {
                "name": "model",
                "table": "input_register",
                "address": 0,
                "type": "string",
                "length": 3,
            },
            {"name": "alarm", "table": "input_register", "address": 10, "type": "bit", "bit": 10},
            {
                "name": "temp",
                "table": "input_register",
                "address": 11,
                "type": "int16",
                "scale": 0.1,
                "offset": -40,
            },
            {"name": "pump", "table": "coil", "address": 5},
            {"name": "door", "table": "discrete_input", "address": 7},
            {"name": "door-next", "table": "discrete_input", "address": 8},
        ]
        expected |= {
            "model": "PH-1",
            "alarm": True,
            "temp": pytest.approx(25.0),
            "pump": True,
            "door": True,
            "door-next": False,
        }
        c, recorder = connector(port, tags)
        running.append(c)
        await c.start()
        for name, value in expected.items():
            (message,) = await recorder.wait(topic(name))
            assert message["tag"] == name
            assert abs(message["timestamp"] - time.time()) < 60
            if name.startswith("float32"):
                assert message["value"] == pytest.approx(value, rel=1e-7), name
            else:
                assert message["value"] == value, name
        assert c.state is State.RUNNING
        assert c.counters.errors == 0


async def test_a_hundred_adjacent_registers_are_read_in_one_request(
    port: int, running: list[ModbusConnector]
) -> None:
    requests: list[int] = []
    from pymodbus.server import ModbusTcpServer

    from .modbus_servers import Server, device

    def trace(sending: bool, pdu: Any) -> Any:
        if not sending:
            requests.append(pdu.function_code)
        return pdu

    server = ModbusTcpServer(device(), address=("127.0.0.1", port), trace_pdu=trace)
    await server.serve_forever(background=True)
    try:
        await Server(server, 1).set(FC_HOLDING, 0, list(range(100)))
        tags = [
            {"name": f"r{i}", "table": "holding_register", "address": i, "publish": "every"}
            for i in range(100)
        ]
        c, recorder = connector(port, tags)
        running.append(c)
        await c.start()
        await recorder.wait(topic("r99"), count=3)
        await c.stop()
        assert [m["value"] for m in recorder.on(topic("r42"))][:3] == [42, 42, 42]
        assert c.counters.polls >= 3
        assert requests.count(FC_HOLDING) == c.counters.polls  # one request per round
    finally:
        await server.shutdown()


async def test_deadband_and_change_only(port: int, running: list[ModbusConnector]) -> None:
    async with tcp_server(port) as server:
        await server.set(FC_HOLDING, 0, [1000])
        c, recorder = connector(
            port,
            [
                {"name": "power", "table": "holding_register", "address": 0, "deadband": 5},
                {"name": "state", "table": "holding_register", "address": 1},
                {"name": "tick", "table": "holding_register", "address": 2, "publish": "every"},
            ],
        )
        running.append(c)
        await c.start()
        await recorder.wait(topic("power"))

        async def polls(n: int) -> None:  # every poll publishes "tick": n more polls happened
            await recorder.wait(topic("tick"), count=len(recorder.on(topic("tick"))) + n)

        await server.set(FC_HOLDING, 0, [1004])  # within the deadband
        await polls(3)
        await server.set(FC_HOLDING, 0, [1006])  # beyond it
        await recorder.wait_value(topic("power"), lambda v: v == 1006)
        await server.set(FC_HOLDING, 0, [1002])  # within 5 of the last published (1006)
        await polls(3)
        await server.set(FC_HOLDING, 0, [1000])  # 6 below it
        await recorder.wait(topic("power"), count=3)
        await polls(2)
        assert [m["value"] for m in recorder.on(topic("power"))] == [1000, 1006, 1000]
        assert [m["value"] for m in recorder.on(topic("state"))] == [0]  # never changed


async def test_tag_writes_through_the_request_topic(
    port: int, running: list[ModbusConnector]
) -> None:
    async with tcp_server(port) as server:
        c, recorder = connector(
            port,
            [
                {
                    "name": "setpoint",
                    "table": "holding_register",
                    "address": 20,
                    "type": "float32",
                    "word_order": "little",
                },
                {
                    "name": "speed",
                    "table": "holding_register",
                    "address": 30,
                    "type": "int16",
                    "scale": 0.5,
                },
                {"name": "run", "table": "coil", "address": 3},
                {"name": "measured", "table": "input_register", "address": 0},
            ],
        )
        running.append(c)
        await c.start()
        await c.wait_for_state(State.RUNNING)
        requests = [
            {"id": 1, "write": {"tag": "setpoint", "value": 21.5}},
            {"id": 2, "write": {"tag": "speed", "value": -100}},
            {"id": 3, "write": {"tag": "run", "value": True}},
            {"id": 4, "write": {"tag": "measured", "value": 1}},
            {"id": 5, "write": {"tag": "speed", "value": 1e9}},
            {"id": 6, "write": {"tag": "nope", "value": 1}},
        ]
        for request in requests:
            await c.handle("connectors/meter/request", json.dumps(request).encode())
        answers = {a["id"]: a for a in recorder.on("connectors/meter/response")}
        assert [answers[i]["status"] for i in range(1, 7)] == ["success"] * 3 + ["fail"] * 3
        assert "cannot be written" in answers[4]["error"]
        assert "does not fit int16" in answers[5]["error"]
        assert "unknown tag 'nope'" in answers[6]["error"]
        assert await server.get(FC_HOLDING, 20, 2) == list(
            reversed([int.from_bytes(struct.pack(">f", 21.5)[i : i + 2], "big") for i in (0, 2)])
        )
        assert await server.get(FC_HOLDING, 30, 1) == [0x10000 - 200]
        assert (await server.get(FC_COIL, 3, 1))[0] is True
        await recorder.wait_value(topic("setpoint"), lambda v: v == 21.5)


async def test_v1_adapter_topics_and_shapes(port: int, running: list[ModbusConnector]) -> None:
    async with tcp_server(port) as server:
        await server.set(FC_COIL, 1, [True])
        await server.set(FC_DISCRETE, 1, [True])
        await server.set(FC_HOLDING, 1, [20, 30])
        await server.set(FC_INPUT, 1, [7, 8])
        c, recorder = connector(
            port, [{"name": "x", "table": "holding_register", "address": 0}], v1_adapter=True
        )
        running.append(c)
        assert "modbus/adapter/request" in c.request_topics
        await c.start()
        await c.wait_for_state(State.RUNNING)

        async def v1(request: dict[str, Any]) -> dict[str, Any]:
            before = len(recorder.on("modbus/adapter/response"))
            await c.handle(
                "modbus/adapter/request",
                json.dumps({"request": {"device": 1, **request}, "id": "TestRequest"}).encode(),
            )
            answers = recorder.on("modbus/adapter/response")
            assert len(answers) == before + 1
            assert answers[-1]["id"] == "TestRequest"
            response: dict[str, Any] = answers[-1]["response"]
            assert response["device"] == 1
            assert response["operation"] == request["operation"]
            return response

        r = await v1({"operation": "ReadCoilsRequest", "address": 1, "count": 1})
        assert r == {
            "status": "success",
            "device": 1,
            "operation": "ReadCoilsRequest",
            "payload": {"function_code": 1, "bits": [1]},
        }
        r = await v1({"operation": "ReadDiscreteInputsRequest", "address": 1, "count": 2})
        assert r["payload"] == {"function_code": 2, "bits": [1, 0]}
        r = await v1({"operation": "ReadHoldingRegistersRequest", "address": 1, "count": 2})
        assert r["payload"] == {"function_code": 3, "registers": [20, 30]}
        r = await v1({"operation": "ReadInputRegistersRequest", "address": 1, "count": 2})
        assert r["payload"] == {"function_code": 4, "registers": [7, 8]}
        r = await v1({"operation": "WriteSingleCoilRequest", "address": 9, "value": 1})
        assert r["payload"] == {"function_code": 5, "address": 9, "value": True}
        r = await v1({"operation": "WriteSingleRegisterRequest", "address": 9, "value": 1234})
        assert r["payload"] == {"function_code": 6, "address": 9, "value": 1234}
        r = await v1(
            {"operation": "WriteMultipleCoilsRequest", "address": 16, "values": [1, 0, 0, 1]}
        )
        assert r["payload"] == {"function_code": 15, "address": 16, "count": 4}
        r = await v1(
            {"operation": "WriteMultipleRegistersRequest", "address": 40, "values": [20, 30, 10]}
        )
        assert r["payload"] == {"function_code": 16, "address": 40, "count": 3}
        r = await v1(
            {
                "operation": "MaskWriteRegisterRequest",
                "address": 9,
                "and_mask": 0xF0F0,
                "or_mask": 0x0101,
            }
        )
        assert r["payload"] == {"function_code": 22, "and_mask": 0xF0F0, "or_mask": 0x0101}
        r = await v1(
            {
                "operation": "ReadWriteMultipleRegistersRequest",
                "read_address": 40,
                "read_count": 3,
                "write_address": 50,
                "write_registers": [1, 2],
            }
        )
        assert r["payload"] == {"function_code": 23, "registers": [20, 30, 10]}
        assert (await server.get(FC_COIL, 9, 1))[0] is True
        assert await server.get(FC_COIL, 16, 4) == [True, False, False, True]
        assert await server.get(FC_HOLDING, 9, 1) == [(1234 & 0xF0F0) | (0x0101 & ~0xF0F0 & 0xFFFF)]
        assert await server.get(FC_HOLDING, 50, 2) == [1, 2]

        r = await v1({"operation": "ReadHoldingRegistersRequest", "address": 250, "count": 10})
        assert r["status"] == "fail" and r["error"] == "Exception"
        assert r["payload"] == {"function_code": 131, "exception_code": 2}
        r = await v1({"operation": "ReadCoilsRequest", "address": "1", "count": 1})
        assert r["status"] == "fail" and r["error"] == "No Response"
        assert "Invalid address field" in r["payload"]["error"]
        assert c.state is State.RUNNING  # an exception response does not drop the link


async def test_server_restart_mid_poll(port: int, running: list[ModbusConnector]) -> None:
    tags = [{"name": "energy", "table": "holding_register", "address": 0, "type": "uint32"}]
    async with tcp_server(port) as server:
        await server.set(FC_HOLDING, 0, [0, 100])
        c, recorder = connector(port, tags, v1_adapter=True)
        running.append(c)
        await c.start()
        await recorder.wait_value(topic("energy"), lambda v: v == 100)
    async with asyncio.timeout(10):
        await c.wait_for_state(State.BACKOFF)
    assert c.counters.errors >= 1 and not c.counters.connected
    await c.handle(
        "modbus/adapter/request",
        json.dumps(
            {
                "request": {"operation": "ReadCoilsRequest", "device": 1, "address": 0, "count": 1},
                "id": "away",
            }
        ).encode(),
    )
    (away,) = recorder.on("modbus/adapter/response")
    assert away["response"]["error"] == "No Response"
    assert "No Response received" in away["response"]["error_message"]
    async with tcp_server(port) as server:
        await server.set(FC_HOLDING, 0, [1, 0])
        await recorder.wait_value(topic("energy"), lambda v: v == 65536)
        assert c.state is State.RUNNING
        assert c.counters.reconnects == 1
        # the value after the outage is published even if it equals the last one
        assert [m["value"] for m in recorder.on(topic("energy"))] == [100, 65536]


async def test_rtu_over_a_serial_line(running: list[ModbusConnector]) -> None:
    with serial_line() as (server_tty, client_tty):
        async with rtu_server(server_tty, unit=3) as server:
            await server.set(FC_HOLDING, 4, [0x4049, 0x0FDB])  # pi as float32
            await server.set(FC_INPUT, 0, [0xFFFF])
            recorder = Recorder()
            config = validate(
                "modbus-rtu",
                "meter",
                {
                    "serial_port": client_tty,
                    "baudrate": 115200,
                    "unit": 3,
                    "interval_s": 0.1,
                    "v1_adapter": True,
                    **FAST,
                    "timeout_s": 1.0,
                    "tags": [
                        {
                            "name": "pi",
                            "table": "holding_register",
                            "address": 4,
                            "type": "float32",
                        },
                        {
                            "name": "minus-one",
                            "table": "input_register",
                            "address": 0,
                            "type": "int16",
                        },
                        {"name": "setpoint", "table": "holding_register", "address": 10},
                    ],
                },
            )
            c = ModbusConnector(config, recorder)
            running.append(c)
            await c.start()
            (pi,) = await recorder.wait(topic("pi"))
            assert pi["value"] == pytest.approx(3.1415927)
            (minus_one,) = await recorder.wait(topic("minus-one"))
            assert minus_one["value"] == -1
            await c.handle(
                "connectors/meter/request", b'{"id": 1, "write": {"tag": "setpoint", "value": 77}}'
            )
            assert recorder.on("connectors/meter/response") == [
                {"id": 1, "status": "success", "tag": "setpoint", "value": 77}
            ]
            assert await server.get(FC_HOLDING, 10, 1) == [77]
            await c.handle(
                "modbus/adapter/request",
                json.dumps(
                    {
                        "request": {
                            "operation": "ReadHoldingRegistersRequest",
                            "device": 3,
                            "address": 4,
                            "count": 2,
                        },
                        "id": 5,
                    }
                ).encode(),
            )
            (v1,) = recorder.on("modbus/adapter/response")
            assert v1["response"]["payload"] == {"function_code": 3, "registers": [0x4049, 0x0FDB]}
            await c.stop()


async def test_a_missing_device_backs_off_and_never_breaks(
    running: list[ModbusConnector], tmp_path: Any
) -> None:
    recorder = Recorder()
    for kind, where in (
        ("modbus-rtu", {"serial_port": str(tmp_path / "ttyUSB9")}),
        ("modbus-tcp", {"host": "127.0.0.1", "port": 1}),
    ):
        config = validate(
            kind, "meter", {**where, **FAST, "tags": [{"name": "x", "table": "coil", "address": 0}]}
        )
        c = ModbusConnector(config, recorder)
        running.append(c)
        await c.start()
        async with asyncio.timeout(10):
            await c.wait_for_state(State.BACKOFF)
        assert c.counters.errors >= 1 and "cannot connect" in c.counters.last_error
        assert c.health().value == "pending"
    assert recorder.messages == []


class LosesCancels(ModbusConnector):
    """A read that swallows a cancellation, as ``asyncio.wait_for`` in Python 3.11 does when
    the response arrives in the same loop step. The read takes 0.3 s, so nearly every cancel
    lands in it (at a 5 ms poll, a real stop lands in a request most of the time too)."""

    async def _read(self, table: Any, address: int, count: int, unit: int) -> list[Any]:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.3)
        return await super()._read(table, address, count, unit)


async def test_stop_ends_a_fast_poll_whose_library_loses_the_cancel(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    config = validate("modbus-tcp", "meter", {
        "host": "127.0.0.1", "port": port, "interval_s": 0.001, **FAST,
        "tags": [{"name": "r0", "table": "holding_register", "address": 0, "publish": "every"}],
    })  # fmt: skip
    c = LosesCancels(config, recorder)
    async with tcp_server(port):
        await c.start()
        async with asyncio.timeout(10):
            await c.wait_for_state(State.RUNNING)
            while c.counters.polls < 2:
                await asyncio.sleep(0.01)
        started = time.monotonic()
        await c.stop()
        polls = c.counters.polls
        await asyncio.sleep(0.05)
    assert time.monotonic() - started < 2.0, "stop waited for the cancel to be lost 10 times"
    assert "connectors.stop_timeout" not in caplog.text
    assert c.counters.polls == polls  # nothing polls after stop()
