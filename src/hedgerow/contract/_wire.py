"""Reading JSON messages field by field (internal): each helper names the field it refused."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import InvalidMessage, UnsupportedSchema


def load_object(data: str | bytes, what: str) -> dict[str, Any]:
    """The JSON object in ``data``; ``InvalidMessage`` (field ``what``) otherwise."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage(what, f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidMessage(what, f"must be a JSON object, not {type(value).__name__}")
    return value


def check_schema(data: Mapping[str, Any], known: int) -> int:
    """The message's ``schema`` version (absent: 1, what every sender wrote before the
    field existed); a version other than ``known`` raises ``UnsupportedSchema``."""
    schema = data.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise InvalidMessage("schema", f"{schema!r}: must be an integer")
    if schema != known:
        raise UnsupportedSchema(
            "schema",
            f"version {schema} is not understood here (this side reads version {known}): "
            "upgrade Hedgerow on this side or on the sender to the same release",
        )
    return schema


def text(data: Mapping[str, Any], key: str, *, required: bool = True, default: str = "") -> str:
    value = data.get(key)
    if value is None and not required:
        return default
    if not isinstance(value, str) or (required and not value):
        raise InvalidMessage(key, f"{value!r}: must be a non-empty string")
    return value


def integer(data: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidMessage(key, f"{value!r}: must be a non-negative integer")
    return value


def number(data: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    value = data.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
        raise InvalidMessage(key, f"{value!r}: must be a number")
    return float(value)


def strings(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidMessage(key, "must be a list of strings")
    return tuple(value)


def objects(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise InvalidMessage(key, "must be a list of objects")
    return value


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
