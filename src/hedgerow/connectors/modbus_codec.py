"""Modbus register values to Python values and back (pure: no I/O).

A register is 16 bits. A multi-register value is laid out by two choices:

* ``byte_order`` — the order of the two bytes inside each register: ``big`` (AB, the Modbus
  standard) or ``little`` (BA, "byte swapped");
* ``word_order`` — the order of the registers: ``big`` (the most significant register first,
  ABCD) or ``little`` (the least significant first, CDAB — common on PLCs for 32-bit values).

Strings are the registers' bytes in address order (``byte_order`` applies, ``word_order``
does not), trailing NULs and spaces stripped. A ``bit`` read from a register picks bit
``bit`` (0 = least significant). Numbers are scaled on the way in: ``value * scale +
offset``, and unscaled on the way out (rounded for integer types, range-checked).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from enum import Enum
from typing import Final

from .errors import CodecError


class DataType(Enum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BIT = "bit"
    STRING = "string"


class Order(Enum):
    BIG = "big"
    LITTLE = "little"


#: struct format (big-endian) and register count of each numeric type
_NUMERIC: Final[dict[DataType, tuple[str, int]]] = {
    DataType.INT16: (">h", 1),
    DataType.UINT16: (">H", 1),
    DataType.INT32: (">i", 2),
    DataType.UINT32: (">I", 2),
    DataType.INT64: (">q", 4),
    DataType.UINT64: (">Q", 4),
    DataType.FLOAT32: (">f", 2),
    DataType.FLOAT64: (">d", 4),
}
_FLOATS: Final = frozenset({DataType.FLOAT32, DataType.FLOAT64})

Value = bool | int | float | str


def register_count(data_type: DataType, length: int = 1) -> int:
    """How many registers a value occupies (``length`` registers for a string)."""
    if data_type is DataType.BIT:
        return 1
    if data_type is DataType.STRING:
        return length
    return _NUMERIC[data_type][1]


def is_integer(data_type: DataType) -> bool:
    return data_type in _NUMERIC and data_type not in _FLOATS


def _to_bytes(registers: Sequence[int], byte_order: Order) -> bytes:
    out = bytearray()
    for register in registers:
        high, low = (register >> 8) & 0xFF, register & 0xFF
        out += bytes((high, low)) if byte_order is Order.BIG else bytes((low, high))
    return bytes(out)


def _from_bytes(data: bytes, byte_order: Order) -> list[int]:
    registers = []
    for i in range(0, len(data), 2):
        first, second = data[i], data[i + 1]
        registers.append(first << 8 | second if byte_order is Order.BIG else second << 8 | first)
    return registers


def decode(
    registers: Sequence[int],
    data_type: DataType,
    *,
    tag: str = "value",
    byte_order: Order = Order.BIG,
    word_order: Order = Order.BIG,
    bit: int = 0,
    scale: float = 1.0,
    offset: float = 0.0,
) -> Value:
    """The value held in ``registers`` (exactly ``register_count`` of them)."""
    if any(not 0 <= r <= 0xFFFF for r in registers):
        raise CodecError(tag, f"registers must be 16-bit unsigned, got {list(registers)}")
    if data_type is DataType.BIT:
        _expect(tag, registers, 1)
        return bool(registers[0] >> bit & 1)
    if data_type is DataType.STRING:
        raw = _to_bytes(registers, byte_order)
        return raw.rstrip(b"\x00 ").decode("utf-8", errors="replace")
    fmt, count = _NUMERIC[data_type]
    _expect(tag, registers, count)
    words = list(registers) if word_order is Order.BIG else list(reversed(registers))
    number: int | float = struct.unpack(fmt, _to_bytes(words, byte_order))[0]
    return _scaled(number, scale, offset)


def _scaled(number: int | float, scale: float, offset: float) -> int | float:
    if scale == 1.0 and offset == 0.0:
        return number
    return number * scale + offset


def _expect(tag: str, registers: Sequence[int], count: int) -> None:
    if len(registers) != count:
        raise CodecError(tag, f"needs {count} register(s), got {len(registers)}")


def encode(
    value: Value,
    data_type: DataType,
    *,
    tag: str = "value",
    byte_order: Order = Order.BIG,
    word_order: Order = Order.BIG,
    length: int = 1,
    scale: float = 1.0,
    offset: float = 0.0,
) -> list[int]:
    """The registers that hold ``value`` (the inverse of ``decode``); ``CodecError`` when
    the value has the wrong type or does not fit."""
    if data_type is DataType.BIT:
        raise CodecError(tag, "a bit inside a register cannot be written on its own")
    if data_type is DataType.STRING:
        if not isinstance(value, str):
            raise CodecError(tag, f"expects a string, got {type(value).__name__}")
        raw = value.encode("utf-8")
        if len(raw) > 2 * length:
            raise CodecError(tag, f"{len(raw)} bytes do not fit {length} register(s)")
        return _from_bytes(raw.ljust(2 * length, b"\x00"), byte_order)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodecError(tag, f"expects a number, got {type(value).__name__}")
    fmt, _count = _NUMERIC[data_type]
    raw_number: float = (value - offset) / scale if (scale, offset) != (1.0, 0.0) else value
    if not math.isfinite(raw_number) and data_type not in _FLOATS:
        raise CodecError(tag, f"{value} is not a finite number")
    number: int | float = raw_number
    if data_type not in _FLOATS:
        number = round(raw_number)
    try:
        packed = struct.pack(fmt, number)
    except (struct.error, OverflowError) as exc:
        raise CodecError(tag, f"{value} does not fit {data_type.value}") from exc
    words = _from_bytes(packed, byte_order)
    return words if word_order is Order.BIG else list(reversed(words))
