"""Requests to a Modbus connector and their answers (pure: no I/O).

Two shapes arrive on the connector's request topics:

* the V1 Modbus-RTU Protocol Adapter's (``modbus/adapter/request``)::

      {"request": {"operation": "ReadCoilsRequest", "device": 1, "address": 1, "count": 1},
       "id": "TestRequest"}

  answered on ``modbus/adapter/response`` exactly as the V1 connector did::

      {"response": {"status": "success", "device": 1, "operation": "ReadCoilsRequest",
                    "payload": {"function_code": 1, "bits": [1]}}, "id": "TestRequest"}

  with ``"status": "fail"``, ``"error": "Exception"`` and ``payload`` ``{"function_code":
  fc + 128, "exception_code": n}`` for a Modbus exception, and ``"error": "No Response"``
  for a request refused before it was sent or one the device did not answer;

* Hedgerow's tag write (``connectors/{name}/request``)::

      {"id": "r1", "write": {"tag": "setpoint", "value": 21.5}}

  answered on ``connectors/{name}/response`` with ``{"id", "status": "success" | "fail",
  "error"?}``.

``parse_v1(payload)`` returns a ``V1Request`` or raises ``V1RequestError`` (which carries what
the "No Response" answer needs); the shell executes it and shapes the answer with
``v1_success``, ``v1_exception`` and ``v1_no_response``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .errors import ConnectorError

#: V1 operation name -> Modbus function code
V1_OPERATIONS: Final = {
    "ReadCoilsRequest": 1,
    "ReadDiscreteInputsRequest": 2,
    "ReadHoldingRegistersRequest": 3,
    "ReadInputRegistersRequest": 4,
    "WriteSingleCoilRequest": 5,
    "WriteSingleRegisterRequest": 6,
    "WriteMultipleCoilsRequest": 15,
    "WriteMultipleRegistersRequest": 16,
    "MaskWriteRegisterRequest": 22,
    "ReadWriteMultipleRegistersRequest": 23,
}

#: the fields each operation needs besides ``operation`` and ``device``
_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "ReadCoilsRequest": ("address", "count"),
    "ReadDiscreteInputsRequest": ("address", "count"),
    "ReadHoldingRegistersRequest": ("address", "count"),
    "ReadInputRegistersRequest": ("address", "count"),
    "WriteSingleCoilRequest": ("address", "value"),
    "WriteSingleRegisterRequest": ("address", "value"),
    "WriteMultipleCoilsRequest": ("address", "values"),
    "WriteMultipleRegistersRequest": ("address", "values"),
    "MaskWriteRegisterRequest": ("address", "and_mask", "or_mask"),
    "ReadWriteMultipleRegistersRequest": (
        "read_address",
        "read_count",
        "write_address",
        "write_registers",
    ),
}


class V1RequestError(ConnectorError):
    """A V1 request refused before it was sent (answered with "No Response")."""

    def __init__(
        self, message: str, *, request_id: Any = None, device: Any = None, operation: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.device = device
        self.operation = operation


@dataclass(frozen=True, slots=True)
class V1Request:
    request_id: Any
    operation: str
    device: int
    params: Mapping[str, Any]

    @property
    def function_code(self) -> int:
        return V1_OPERATIONS[self.operation]


def parse_v1(payload: bytes) -> V1Request:
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise V1RequestError(f"Invalid JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("request"), dict):
        raise V1RequestError("Invalid request: expected an object with a 'request' object")
    request = message["request"]
    request_id = message.get("id")
    operation = request.get("operation")
    device = request.get("device")

    def fail(text: str) -> V1RequestError:
        return V1RequestError(text, request_id=request_id, device=device, operation=operation)

    if operation not in V1_OPERATIONS:
        raise fail(f"Invalid operation field: {operation!r} is not supported")
    if not _is_int(device) or not 0 <= device <= 247:
        raise fail(f"Invalid device field. Expected an int in 0..247, got {device!r}")
    params: dict[str, Any] = {}
    for key in _FIELDS[operation]:
        if key not in request:
            raise fail(f"Missing {key} field")
        params[key] = _check(key, request[key], fail)
    return V1Request(request_id=request_id, operation=operation, device=device, params=params)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(key: str, value: Any, fail: Any) -> Any:
    if key in ("values", "write_registers"):
        if not isinstance(value, list) or not value or not all(_is_int(v) for v in value):
            raise fail(f"Invalid {key} field. Expected a non-empty list of ints, got {value!r}")
        if any(not 0 <= v <= 0xFFFF for v in value):
            raise fail(f"Invalid {key} field. Values must be in 0..65535")
        return list(value)
    if not _is_int(value):
        raise fail(f"Invalid {key} field. Expected <class 'int'>, got {type(value)}")
    high = 2000 if key.endswith("count") else 0xFFFF
    low = 1 if key.endswith("count") else 0
    if not low <= value <= high:
        raise fail(f"Invalid {key} field. Expected {low}..{high}, got {value}")
    return value


def v1_success(request: V1Request, result: Mapping[str, Any]) -> bytes:
    """The V1 answer to a request the device completed; ``result`` is the payload's data
    (``bits``, ``registers``, or the write echo), the function code is added."""
    payload = {"function_code": request.function_code, **result}
    return _v1_answer(
        request.request_id,
        {
            "status": "success",
            "device": request.device,
            "operation": request.operation,
            "payload": payload,
        },
    )


def v1_write_echo(request: V1Request) -> dict[str, Any]:
    """What V1 answered for a write: an echo of the request."""
    p = request.params
    op = request.operation
    if op == "WriteSingleCoilRequest":
        return {"address": p["address"], "value": bool(p["value"])}
    if op == "WriteSingleRegisterRequest":
        return {"address": p["address"], "value": p["value"]}
    if op in ("WriteMultipleCoilsRequest", "WriteMultipleRegistersRequest"):
        return {"address": p["address"], "count": len(p["values"])}
    if op == "MaskWriteRegisterRequest":
        return {"and_mask": p["and_mask"], "or_mask": p["or_mask"]}
    return {}


def v1_exception(request: V1Request, exception_code: int) -> bytes:
    """The V1 answer to a Modbus exception response from the device."""
    return _v1_answer(
        request.request_id,
        {
            "status": "fail",
            "error_message": "Internal Error",
            "error": "Exception",
            "device": request.device,
            "operation": request.operation,
            "payload": {
                "function_code": request.function_code + 128,
                "exception_code": exception_code,
            },
        },
    )


def v1_no_response(message: str, *, request_id: Any, device: Any, operation: Any) -> bytes:
    """The V1 answer to a request refused before sending, or one nobody answered."""
    return _v1_answer(
        request_id,
        {
            "status": "fail",
            "error_message": message,
            "error": "No Response",
            "device": device,
            "operation": operation,
            "payload": {"error": message},
        },
    )


def _v1_answer(request_id: Any, response: dict[str, Any]) -> bytes:
    return json.dumps({"response": response, "id": request_id}).encode()


@dataclass(frozen=True, slots=True)
class TagWrite:
    request_id: Any
    tag: str
    value: bool | int | float | str


class TagWriteError(ConnectorError):
    def __init__(self, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


def parse_tag_write(payload: bytes, tags: Sequence[str]) -> TagWrite:
    """A ``{"id", "write": {"tag", "value"}}`` request; ``TagWriteError`` says what is wrong."""
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TagWriteError(f"the request is not JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("write"), dict):
        raise TagWriteError('expected {"id": ..., "write": {"tag": NAME, "value": V}}')
    request_id = message.get("id")
    write = message["write"]
    tag, value = write.get("tag"), write.get("value")
    if tag not in tags:
        raise TagWriteError(f"unknown tag {tag!r}; known: {', '.join(tags)}", request_id)
    if not isinstance(value, bool | int | float | str):
        raise TagWriteError(f"value must be a number, boolean or string, got {value!r}", request_id)
    return TagWrite(request_id=request_id, tag=tag, value=value)


def answer(request_id: Any, error: str | None = None, **extra: Any) -> bytes:
    """Hedgerow's answer on ``connectors/{name}/response``."""
    body: dict[str, Any] = {"id": request_id, "status": "fail" if error else "success", **extra}
    if error:
        body["error"] = error
    return json.dumps(body).encode()
