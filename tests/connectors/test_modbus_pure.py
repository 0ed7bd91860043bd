"""The request planner, the change filter and the V1 adapter's shapes (pure)."""

from __future__ import annotations

import json

import pytest

from hedgerow.connectors.config import ModbusTag, PublishMode, Table
from hedgerow.connectors.modbus_codec import DataType
from hedgerow.connectors.modbus_plan import plan
from hedgerow.connectors.modbus_requests import (
    TagWriteError,
    V1RequestError,
    parse_tag_write,
    parse_v1,
    v1_exception,
    v1_no_response,
    v1_success,
    v1_write_echo,
)
from hedgerow.connectors.publishing import ChangeFilter


def tag(
    name: str,
    address: int,
    type_: DataType = DataType.UINT16,
    *,
    unit: int = 1,
    table: Table = Table.HOLDING_REGISTER,
) -> ModbusTag:
    return ModbusTag(name=name, table=table, address=address, type=type_, unit=unit)


def test_adjacent_tags_are_one_request() -> None:
    tags = [tag(f"t{i}", i) for i in range(100)]
    (block,) = plan(tags, max_gap=0, max_registers=125)
    assert (block.address, block.count, len(block.tags)) == (0, 100, 100)


def test_a_gap_larger_than_max_gap_splits() -> None:
    blocks = plan(
        [tag("a", 0, DataType.FLOAT32), tag("b", 5), tag("c", 20)], max_gap=3, max_registers=125
    )
    assert [(b.address, b.count) for b in blocks] == [(0, 6), (20, 1)]


def test_the_register_limit_splits() -> None:
    blocks = plan(
        [tag(f"t{i}", i * 2, DataType.INT32) for i in range(100)], max_gap=0, max_registers=125
    )
    assert [b.count for b in blocks] == [124, 76]
    assert all(b.count <= 125 for b in blocks)


def test_units_and_tables_never_share_a_request() -> None:
    blocks = plan(
        [
            tag("a", 0),
            tag("b", 1, unit=2),
            tag("c", 1, table=Table.INPUT_REGISTER),
            tag("d", 2, DataType.BIT, table=Table.COIL),
        ],
        max_gap=8,
        max_registers=125,
    )
    assert sorted((b.unit, b.table.value, b.address) for b in blocks) == [
        (1, "coil", 2),
        (1, "holding_register", 0),
        (1, "input_register", 1),
        (2, "holding_register", 1),
    ]


def test_overlapping_tags_share_registers() -> None:
    # a 32-bit value and its low word read as a uint16
    (block,) = plan(
        [tag("whole", 10, DataType.UINT32), tag("low", 11)], max_gap=0, max_registers=125
    )
    assert (block.address, block.count) == (10, 2)
    assert [block.slice_of(t) for t in block.tags] == [slice(0, 2), slice(1, 2)]


def test_change_filter_with_deadband() -> None:
    f = ChangeFilter()
    offered = [
        f.offer("p", v, PublishMode.CHANGE, 0.5) for v in (10.0, 10.3, 10.6, 10.4, 9.9, 10.2)
    ]
    # each value is compared with the last *published* one, not the last read one
    assert offered == [True, False, True, False, True, False]


def test_change_filter_without_deadband_and_every_poll() -> None:
    f = ChangeFilter()
    assert [f.offer("s", v, PublishMode.CHANGE, 0) for v in ("a", "a", "b", True)] == [
        True,
        False,
        True,
        True,
    ]
    assert [f.offer("e", 1, PublishMode.EVERY, 5) for _ in range(3)] == [True, True, True]
    f.offer("x", 1, PublishMode.CHANGE, 0)
    f.forget("x")
    assert f.offer("x", 1, PublishMode.CHANGE, 0) is True


def test_v1_request_parsed_and_answered_in_v1_shape() -> None:
    request = parse_v1(
        json.dumps(
            {
                "request": {"operation": "ReadCoilsRequest", "device": 1, "address": 1, "count": 1},
                "id": "TestRequest",
            }
        ).encode()
    )
    assert request.function_code == 1
    assert json.loads(v1_success(request, {"bits": [1]})) == {
        "response": {
            "status": "success",
            "device": 1,
            "operation": "ReadCoilsRequest",
            "payload": {"function_code": 1, "bits": [1]},
        },
        "id": "TestRequest",
    }
    assert json.loads(v1_exception(request, 2)) == {
        "response": {
            "status": "fail",
            "error_message": "Internal Error",
            "error": "Exception",
            "device": 1,
            "operation": "ReadCoilsRequest",
            "payload": {"function_code": 129, "exception_code": 2},
        },
        "id": "TestRequest",
    }


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (
            {"operation": "ReadCoilsRequest", "device": 1, "address": "1", "count": 1},
            "Invalid address field",
        ),
        ({"operation": "ReadCoilsRequest", "device": 1, "address": 1}, "Missing count field"),
        (
            {"operation": "ReadCoilsRequest", "device": 300, "address": 1, "count": 1},
            "Invalid device field",
        ),
        ({"operation": "FormatDiskRequest", "device": 1}, "Invalid operation field"),
        (
            {
                "operation": "WriteMultipleRegistersRequest",
                "device": 1,
                "address": 1,
                "values": [70000],
            },
            "Invalid values field",
        ),
    ],
)
def test_v1_requests_refused_before_sending(request_: dict[str, object], words: str) -> None:
    with pytest.raises(V1RequestError) as info:
        parse_v1(json.dumps({"request": request_, "id": "r9"}).encode())
    assert words in info.value.message
    answer = json.loads(
        v1_no_response(
            info.value.message,
            request_id=info.value.request_id,
            device=info.value.device,
            operation=info.value.operation,
        )
    )
    assert answer["id"] == "r9"
    assert answer["response"]["status"] == "fail"
    assert answer["response"]["error"] == "No Response"
    assert answer["response"]["payload"] == {"error": info.value.message}


def test_v1_write_echoes() -> None:
    def req(op: str, **params: object) -> bytes:
        return json.dumps({"request": {"operation": op, "device": 1, **params}, "id": 1}).encode()

    assert v1_write_echo(parse_v1(req("WriteSingleCoilRequest", address=1, value=1))) == {
        "address": 1,
        "value": True,
    }
    assert v1_write_echo(
        parse_v1(req("WriteMultipleRegistersRequest", address=1, values=[20, 30, 10]))
    ) == {"address": 1, "count": 3}
    assert v1_write_echo(
        parse_v1(req("MaskWriteRegisterRequest", address=1, and_mask=0xAF, or_mask=1))
    ) == {"and_mask": 0xAF, "or_mask": 1}


def test_tag_write_requests() -> None:
    write = parse_tag_write(b'{"id": 7, "write": {"tag": "sp", "value": 21.5}}', ["sp"])
    assert (write.request_id, write.tag, write.value) == (7, "sp", 21.5)
    with pytest.raises(TagWriteError, match="unknown tag 'x'"):
        parse_tag_write(b'{"id": 7, "write": {"tag": "x", "value": 1}}', ["sp"])
    with pytest.raises(TagWriteError, match="not JSON"):
        parse_tag_write(b"{", ["sp"])
