"""The register codec: every data type in every byte and word order, scale and offset."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedgerow.connectors.errors import CodecError
from hedgerow.connectors.modbus_codec import DataType, Order, decode, encode, register_count

FORMATS = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}
SAMPLES = {
    DataType.INT16: [-32768, -1, 0, 1, 12345, 32767],
    DataType.UINT16: [0, 1, 0x1234, 65535],
    DataType.INT32: [-(2**31), -123456789, 0, 123456789, 2**31 - 1],
    DataType.UINT32: [0, 0x12345678, 2**32 - 1],
    DataType.INT64: [-(2**63), -1, 0x0102030405060708, 2**63 - 1],
    DataType.UINT64: [0, 0x0102030405060708, 2**64 - 1],
    DataType.FLOAT32: [0.0, 1.5, -273.25, 3.4028234663852886e38],
    DataType.FLOAT64: [0.0, 1.5, -273.15, 1e300, math.pi],
}
ORDERS = [(b, w) for b in Order for w in Order]


def layout(big_endian: bytes, byte_order: Order, word_order: Order) -> list[int]:
    """An independent layout: split into words, reverse the words, swap the bytes."""
    words = [big_endian[i : i + 2] for i in range(0, len(big_endian), 2)]
    if word_order is Order.LITTLE:
        words.reverse()
    if byte_order is Order.LITTLE:
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize("data_type", list(FORMATS))
def test_every_numeric_type_in_every_order(
    data_type: DataType, byte_order: Order, word_order: Order
) -> None:
    for value in SAMPLES[data_type]:
        registers = layout(struct.pack(FORMATS[data_type], value), byte_order, word_order)
        assert len(registers) == register_count(data_type)
        got = decode(registers, data_type, byte_order=byte_order, word_order=word_order)
        assert (
            got == pytest.approx(value, rel=1e-7) if data_type is DataType.FLOAT32 else got == value
        )
        assert encode(value, data_type, byte_order=byte_order, word_order=word_order) == registers


def test_the_four_named_layouts_of_a_float32() -> None:
    # 1.5 is 0x3FC00000: ABCD, CDAB (word swap), BADC (byte swap), DCBA (both)
    assert encode(1.5, DataType.FLOAT32) == [0x3FC0, 0x0000]
    assert encode(1.5, DataType.FLOAT32, word_order=Order.LITTLE) == [0x0000, 0x3FC0]
    assert encode(1.5, DataType.FLOAT32, byte_order=Order.LITTLE) == [0xC03F, 0x0000]
    assert encode(1.5, DataType.FLOAT32, byte_order=Order.LITTLE, word_order=Order.LITTLE) == [
        0x0000,
        0xC03F,
    ]
    assert decode([0x0000, 0x3FC0], DataType.FLOAT32, word_order=Order.LITTLE) == 1.5


def test_signed_and_unsigned_read_the_same_registers_differently() -> None:
    assert decode([0xFFFF], DataType.INT16) == -1
    assert decode([0xFFFF], DataType.UINT16) == 65535
    assert decode([0xFFFF, 0xFFFE], DataType.INT32) == -2
    assert decode([0xFFFF, 0xFFFE], DataType.UINT32) == 0xFFFFFFFE


@pytest.mark.parametrize("bit", range(16))
def test_a_bit_of_a_register(bit: int) -> None:
    assert decode([1 << bit], DataType.BIT, bit=bit) is True
    assert decode([0xFFFF ^ (1 << bit)], DataType.BIT, bit=bit) is False


@pytest.mark.parametrize("byte_order", list(Order))
def test_strings(byte_order: Order) -> None:
    registers = encode("PM-2200", DataType.STRING, length=5, byte_order=byte_order)
    assert len(registers) == 5
    if byte_order is Order.BIG:
        assert registers[0] == ord("P") << 8 | ord("M")
    else:
        assert registers[0] == ord("M") << 8 | ord("P")
    assert decode(registers, DataType.STRING, byte_order=byte_order) == "PM-2200"
    # word order does not apply to strings
    assert (
        decode(registers, DataType.STRING, byte_order=byte_order, word_order=Order.LITTLE)
        == "PM-2200"
    )


def test_scale_and_offset_apply_on_read_and_are_undone_on_write() -> None:
    # a temperature in tenths of a degree, offset by -40
    assert decode([650], DataType.INT16, scale=0.1, offset=-40.0) == pytest.approx(25.0)
    assert encode(25.0, DataType.INT16, scale=0.1, offset=-40.0) == [650]
    assert encode(25.04, DataType.UINT16, scale=0.1) == [250]  # rounded to the nearest step


@pytest.mark.parametrize(
    ("value", "data_type", "match"),
    [
        (70000, DataType.INT16, "does not fit int16"),
        (-1, DataType.UINT16, "does not fit uint16"),
        (2**64, DataType.UINT64, "does not fit uint64"),
        (1e39, DataType.FLOAT32, "does not fit float32"),
        ("12", DataType.INT32, "expects a number"),
        (True, DataType.UINT16, "expects a number"),
        (float("nan"), DataType.INT32, "not a finite number"),
        (5, DataType.STRING, "expects a string"),
        ("too long for two registers", DataType.STRING, "do not fit"),
        (1, DataType.BIT, "cannot be written"),
    ],
)
def test_values_that_do_not_fit_are_refused_with_the_tag(
    value: object, data_type: DataType, match: str
) -> None:
    with pytest.raises(CodecError, match=match) as info:
        encode(value, data_type, tag="setpoint", length=2)  # type: ignore[arg-type]
    assert info.value.tag == "setpoint"


def test_decode_refuses_the_wrong_register_count_and_out_of_range_registers() -> None:
    with pytest.raises(CodecError, match="needs 2 register"):
        decode([1], DataType.FLOAT32, tag="t")
    with pytest.raises(CodecError, match="16-bit"):
        decode([70000], DataType.UINT16, tag="t")


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from(list(Order)), st.sampled_from(list(Order)))
def test_int32_round_trips(value: int, byte_order: Order, word_order: Order) -> None:
    registers = encode(value, DataType.INT32, byte_order=byte_order, word_order=word_order)
    assert decode(registers, DataType.INT32, byte_order=byte_order, word_order=word_order) == value


@given(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(list(Order)),
    st.sampled_from(list(Order)),
)
def test_float64_round_trips(value: float, byte_order: Order, word_order: Order) -> None:
    registers = encode(value, DataType.FLOAT64, byte_order=byte_order, word_order=word_order)
    assert (
        decode(registers, DataType.FLOAT64, byte_order=byte_order, word_order=word_order) == value
    )
