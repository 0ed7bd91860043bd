"""The Modbus TCP and RTU connector: polls tags, publishes values, executes requests.

The I/O shell around the pure parts: ``modbus_plan`` (which requests), ``modbus_codec``
(registers ⇄ values), ``publishing`` (change-only with deadbands), ``modbus_requests``
(V1 adapter and tag-write shapes). ``pymodbus`` is imported when a connector starts, never
when this module is imported (the core's idle footprint).

Link supervision: connect; poll every interval group in one TaskGroup; a request that times
out (after pymodbus' own ``retries``) or a dropped connection ends the round, the client is
closed and a new one connects after a ``hedgerow.backoff`` delay (full jitter, capped). A
Modbus exception response (an illegal address, say) is counted and logged but does not drop
the link. Requests from the request topics are serialized with the polls (one at a time on
the line, which RTU requires).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from hedgerow.backoff import Backoff, BackoffPolicy, Uniform

from .config import V1_REQUEST_TOPIC, V1_RESPONSE_TOPIC, ModbusConfig, ModbusTag, Table
from .errors import CodecError, ConnectorIOError, MissingLibraryError
from .modbus_codec import DataType, Value, decode, encode
from .modbus_plan import ReadBlock, plan
from .modbus_requests import (
    TagWriteError,
    V1Request,
    V1RequestError,
    answer,
    parse_tag_write,
    parse_v1,
    v1_exception,
    v1_no_response,
    v1_success,
    v1_write_echo,
)
from .model import ConnectorBase, Publish
from .publishing import ChangeFilter

log = logging.getLogger(__name__)

NO_RESPONSE = "[Input/Output] No Response received from the remote unit"


class ModbusExceptionResponse(ConnectorIOError):
    """The device answered with a Modbus exception (``exception_code``)."""

    def __init__(self, function_code: int, exception_code: int) -> None:
        super().__init__(f"exception response {exception_code} to function {function_code}")
        self.function_code = function_code
        self.exception_code = exception_code


def value_payload(tag: str, value: Value, timestamp: float) -> bytes:
    """A published value: ``{"tag", "value", "timestamp"}`` (seconds since the epoch: the
    field the example ``window_aggregate`` function windows by)."""
    return json.dumps({"tag": tag, "value": value, "timestamp": round(timestamp, 3)}).encode()


def values_of(
    block: ReadBlock, raw: Sequence[int] | Sequence[bool]
) -> list[tuple[ModbusTag, Value]]:
    """Each tag's value from a block's raw registers or bits (pure)."""
    out: list[tuple[ModbusTag, Value]] = []
    for tag in block.tags:
        part = raw[block.slice_of(tag)]
        if tag.table.is_bits:
            out.append((tag, bool(part[0])))
            continue
        out.append(
            (
                tag,
                decode(
                    [int(r) for r in part],
                    tag.type,
                    tag=tag.name,
                    byte_order=tag.byte_order,
                    word_order=tag.word_order,
                    bit=tag.bit,
                    scale=tag.scale,
                    offset=tag.offset,
                ),
            )
        )
    return out


class ModbusConnector(ConnectorBase):
    kind = "modbus"

    def __init__(
        self,
        config: ModbusConfig,
        publish: Publish,
        *,
        uniform: Uniform | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config.name, publish)
        self.config = config
        self._wall = wall
        self._filter = ChangeFilter()
        self._client: Any = None
        self._line = asyncio.Lock()
        self._backoff = Backoff(
            BackoffPolicy(
                base=config.backoff_base_s,
                cap=config.backoff_cap_s,
                stable_after=max(config.backoff_cap_s, 5.0),
            ),
            uniform=uniform,
        )
        self._tags = {t.name: t for t in config.tags}
        groups: dict[float, list[ModbusTag]] = {}
        for tag in config.tags:
            groups.setdefault(tag.interval_s, []).append(tag)
        self._rounds = {
            interval: plan(tags, max_gap=config.max_gap, max_registers=config.max_registers)
            for interval, tags in sorted(groups.items())
        }

    @property
    def request_topics(self) -> tuple[str, ...]:
        topics = [self.config.request_topic]
        if self.config.v1_adapter:
            topics.append(V1_REQUEST_TOPIC)
        return tuple(topics)

    def blocks(self) -> list[ReadBlock]:
        return [b for blocks in self._rounds.values() for b in blocks]

    # -- the link ------------------------------------------------------------------------

    def _new_client(self) -> Any:
        try:
            from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
        except ImportError as exc:
            raise MissingLibraryError("pymodbus") from exc
        c = self.config
        if c.kind == "modbus-tcp":
            return AsyncModbusTcpClient(
                c.host, port=c.port, timeout=c.timeout_s, retries=c.retries, reconnect_delay=0
            )
        return AsyncModbusSerialClient(
            c.serial_port,
            baudrate=c.baudrate,
            parity=c.parity,
            stopbits=c.stopbits,
            bytesize=c.bytesize,
            timeout=c.timeout_s,
            retries=c.retries,
            reconnect_delay=0,
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        first = True
        while True:
            client = self._new_client()
            try:
                try:
                    connected = await client.connect()
                except OSError as exc:  # a serial port that cannot be opened, say
                    raise ConnectorIOError(f"cannot connect to {self._where()}: {exc}") from exc
                if not connected:
                    raise ConnectorIOError(f"cannot connect to {self._where()}")
                self._client = client
                if not first:
                    self.counters.reconnects += 1
                first = False
                self._backoff.connected(loop.time())
                self._linked()
                log.info("connectors.modbus.connected name=%s where=%s", self.name, self._where())
                async with asyncio.TaskGroup() as group:
                    for interval, blocks in self._rounds.items():
                        group.create_task(
                            self._poll_every(interval, blocks),
                            name=f"connector:{self.name}:poll:{interval}",
                        )
            except* ConnectorIOError as eg:
                error = str(eg.exceptions[0])
                self.counters.errors += 1
                self._unlinked(error)
                log.warning(
                    "connectors.modbus.link_lost name=%s where=%s error=%s",
                    self.name,
                    self._where(),
                    error,
                )
            finally:
                self._client = None
                client.close()
            self._backoff.disconnected(loop.time())
            for tag in self.config.tags:
                self._filter.forget(tag.name)
            if self.stopping:  # stopped while a request turned the cancel into an error
                raise asyncio.CancelledError
            await asyncio.sleep(self._backoff.next_delay())

    def _where(self) -> str:
        c = self.config
        return f"{c.host}:{c.port}" if c.kind == "modbus-tcp" else c.serial_port

    async def _poll_every(self, interval: float, blocks: Sequence[ReadBlock]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            if self.stopping:  # a cancel the client library swallowed
                raise asyncio.CancelledError
            await self.poll_once(blocks)
            deadline += interval
            now = loop.time()
            if deadline < now:  # overran: skip the missed rounds rather than burst
                deadline = now
            await asyncio.sleep(deadline - now)

    async def poll_once(self, blocks: Sequence[ReadBlock]) -> None:
        """Read each block once, publish what the filter lets through."""
        loop = asyncio.get_running_loop()
        for block in blocks:
            started = loop.time()
            try:
                raw = await self._read(block.table, block.address, block.count, block.unit)
            except ModbusExceptionResponse as exc:
                self.counters.errors += 1
                self.counters.last_error = str(exc)
                log.warning(
                    "connectors.modbus.read_refused name=%s unit=%s table=%s address=%s error=%s",
                    self.name,
                    block.unit,
                    block.table.value,
                    block.address,
                    exc,
                )
                continue
            self.counters.record_latency(loop.time() - started)
            now = self._wall()
            for tag, value in values_of(block, raw):
                if self._filter.offer(tag.name, value, tag.publish, tag.deadband):
                    await self._publish(
                        self.config.data_topic(tag.name), value_payload(tag.name, value, now)
                    )
                    self.counters.values += 1
        self.counters.polls += 1

    # -- requests on the line ------------------------------------------------------------

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        client = self._client
        if client is None:
            raise ConnectorIOError(NO_RESPONSE)
        from pymodbus.exceptions import ModbusException

        async with self._line:
            try:
                result = await getattr(client, method)(*args, **kwargs)
            except ModbusException as exc:
                raise ConnectorIOError(f"{NO_RESPONSE}: {exc}") from exc
        if result.isError():
            code = getattr(result, "exception_code", 0)
            raise ModbusExceptionResponse(getattr(result, "function_code", 0) & 0x7F, int(code))
        return result

    async def _read(self, table: Table, address: int, count: int, unit: int) -> list[Any]:
        method = {
            Table.COIL: "read_coils",
            Table.DISCRETE_INPUT: "read_discrete_inputs",
            Table.HOLDING_REGISTER: "read_holding_registers",
            Table.INPUT_REGISTER: "read_input_registers",
        }[table]
        result = await self._call(method, address, count=count, device_id=unit)
        return list(result.bits[:count] if table.is_bits else result.registers[:count])

    async def handle(self, topic: str, payload: bytes) -> None:
        self.counters.requests += 1
        if topic == V1_REQUEST_TOPIC and self.config.v1_adapter:
            await self._publish(V1_RESPONSE_TOPIC, await self._v1(payload))
        elif topic == self.config.request_topic:
            await self._publish(self.config.response_topic, await self._tag_write(payload))

    async def _v1(self, payload: bytes) -> bytes:
        try:
            request = parse_v1(payload)
        except V1RequestError as exc:
            return v1_no_response(
                exc.message, request_id=exc.request_id, device=exc.device, operation=exc.operation
            )
        try:
            result = await self._execute_v1(request)
        except ModbusExceptionResponse as exc:
            self.counters.errors += 1
            return v1_exception(request, exc.exception_code)
        except ConnectorIOError as exc:
            self.counters.errors += 1
            return v1_no_response(
                str(exc),
                request_id=request.request_id,
                device=request.device,
                operation=request.operation,
            )
        return v1_success(request, result)

    async def _execute_v1(self, request: V1Request) -> dict[str, Any]:
        p, unit, op = request.params, request.device, request.operation
        if op in ("ReadCoilsRequest", "ReadDiscreteInputsRequest"):
            table = Table.COIL if op == "ReadCoilsRequest" else Table.DISCRETE_INPUT
            bits = await self._read(table, p["address"], p["count"], unit)
            return {"bits": [int(b) for b in bits]}
        if op in ("ReadHoldingRegistersRequest", "ReadInputRegistersRequest"):
            table = (
                Table.HOLDING_REGISTER
                if op == "ReadHoldingRegistersRequest"
                else Table.INPUT_REGISTER
            )
            return {"registers": await self._read(table, p["address"], p["count"], unit)}
        if op == "WriteSingleCoilRequest":
            await self._call("write_coil", p["address"], bool(p["value"]), device_id=unit)
        elif op == "WriteSingleRegisterRequest":
            await self._call("write_register", p["address"], p["value"], device_id=unit)
        elif op == "WriteMultipleCoilsRequest":
            await self._call(
                "write_coils", p["address"], [bool(v) for v in p["values"]], device_id=unit
            )
        elif op == "WriteMultipleRegistersRequest":
            await self._call("write_registers", p["address"], p["values"], device_id=unit)
        elif op == "MaskWriteRegisterRequest":
            await self._call(
                "mask_write_register",
                address=p["address"],
                and_mask=p["and_mask"],
                or_mask=p["or_mask"],
                device_id=unit,
            )
        else:  # ReadWriteMultipleRegistersRequest
            result = await self._call(
                "readwrite_registers",
                read_address=p["read_address"],
                read_count=p["read_count"],
                write_address=p["write_address"],
                values=p["write_registers"],
                device_id=unit,
            )
            return {"registers": list(result.registers[: p["read_count"]])}
        return v1_write_echo(request)

    async def _tag_write(self, payload: bytes) -> bytes:
        try:
            write = parse_tag_write(payload, list(self._tags))
        except TagWriteError as exc:
            return answer(exc.request_id, exc.message)
        tag = self._tags[write.tag]
        try:
            await self.write_tag(tag, write.value)
        except (CodecError, ConnectorIOError) as exc:
            self.counters.errors += 1
            return answer(write.request_id, str(exc), tag=tag.name)
        return answer(write.request_id, tag=tag.name, value=write.value)

    async def write_tag(self, tag: ModbusTag, value: Value) -> None:
        """Write ``value`` to ``tag`` (a coil or holding register(s))."""
        if not tag.table.writable:
            raise CodecError(tag.name, f"a {tag.table.value} cannot be written")
        if tag.table is Table.COIL:
            if not isinstance(value, bool | int) or value not in (0, 1):
                raise CodecError(tag.name, f"a coil takes true or false, got {value!r}")
            await self._call("write_coil", tag.address, bool(value), device_id=tag.unit)
            return
        if tag.type is DataType.BIT:
            raise CodecError(tag.name, "a bit inside a register cannot be written on its own")
        registers = encode(
            value,
            tag.type,
            tag=tag.name,
            byte_order=tag.byte_order,
            word_order=tag.word_order,
            length=tag.length,
            scale=tag.scale,
            offset=tag.offset,
        )
        await self._call("write_registers", tag.address, registers, device_id=tag.unit)
        self._filter.forget(tag.name)
