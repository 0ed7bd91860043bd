"""Request bodies as frozen dataclasses, parsed once at the edge, and their JSON Schema.

``parse(Model, data)`` checks a decoded JSON value against the model's type hints
(``str``, ``int``, ``float``, ``bool``, ``list[X]``, ``dict[str, X]``, ``X | None``,
``Literal[...]``, nested models, ``Any``) and returns the model. A field may carry a
domain check (``checked(fn)``): ``fn`` gets the raw value (``None`` when absent) and
returns the typed one, so the names, limits and messages of ``hedgerow.cloud.domain``
stay the rule. A value of the wrong JSON type is a ``BodyError`` (422) whose ``field`` is
the path (``endpoints[0].port``); a domain check's ``InvalidInput`` (400) gets the path
when it names none. ``json_schema(Model)`` describes the same model for OpenAPI.

Pure: no HTTP, no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from hedgerow.cloud.errors import InvalidInput

T = TypeVar("T")
_CHECK = "check"
_ALIASES = "aliases"
_DOC = "doc"


class Unset(enum.Enum):
    """The default of a field whose absence differs from ``null`` (a PATCH leaves it as is)."""

    UNSET = "unset"


UNSET = Unset.UNSET


class BodyError(InvalidInput):
    """A body field of the wrong JSON type or missing (422, ``field`` is its path)."""

    status = 422


def checked(
    check: Callable[[object], Any],
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    aliases: tuple[str, ...] = (),
    doc: str = "",
) -> Any:
    """A field whose raw value goes through ``check`` (a domain validator)."""
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        metadata={_CHECK: check, _ALIASES: aliases, _DOC: doc},
    )


def described(
    doc: str,
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    aliases: tuple[str, ...] = (),
) -> Any:
    """A plain typed field with a description (and optional aliases) for the schema."""
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        metadata={_ALIASES: aliases, _DOC: doc},
    )


def present(body: Any) -> dict[str, Any]:
    """The fields of a parsed model that the body set (those not ``UNSET``)."""
    return {
        f.name: getattr(body, f.name)
        for f in dataclasses.fields(body)
        if getattr(body, f.name) is not UNSET
    }


def forbids_extra(model: type[Any]) -> bool:
    return bool(getattr(model, "forbid_extra", False))


def parse(model: type[T], data: object, path: str = "") -> T:
    """``data`` (decoded JSON) as ``model``; ``BodyError``/``InvalidInput`` naming the field."""
    if not isinstance(data, Mapping):
        raise BodyError(f"{path or 'the body'} must be a JSON object", field=path or None)
    fields = dataclasses.fields(model)  # type: ignore[arg-type]
    known = {f.name for f in fields}
    for f in fields:
        known.update(f.metadata.get(_ALIASES, ()))
    if forbids_extra(model):
        unknown = set(data) - known
        if unknown:
            allowed = sorted(f.name for f in fields)
            raise InvalidInput(
                f"unknown fields: {', '.join(sorted(unknown))}; allowed: {', '.join(allowed)}",
                field=_join(path, sorted(unknown)[0]),
            )
    hints = typing.get_type_hints(model)
    values: dict[str, Any] = {}
    for f in fields:
        where = _join(path, f.name)
        key = next((k for k in (f.name, *f.metadata.get(_ALIASES, ())) if k in data), None)
        check = f.metadata.get(_CHECK)
        if key is None:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            if check is None:
                raise BodyError(f"{where} is required", field=where)
            values[f.name] = _checked(check, None, where)
            continue
        raw = data[key]
        values[f.name] = (
            _checked(check, raw, where) if check is not None else _value(hints[f.name], raw, where)
        )
    return model(**values)


def _checked(check: Callable[[object], Any], raw: object, where: str) -> Any:
    try:
        return check(raw)
    except InvalidInput as exc:
        if exc.field is None:
            exc.field = where
        raise


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _value(hint: Any, raw: object, where: str) -> Any:
    origin = get_origin(hint)
    if hint is Any or hint is object:
        return raw
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if raw is None and type(None) in options:
            return None
        for option in options:
            if option is type(None) or option is Unset:
                continue
            try:
                return _value(option, raw, where)
            except InvalidInput:
                continue
        raise BodyError(f"{where} must be {describe(hint)}", field=where)
    if origin is Literal:
        if raw in get_args(hint):
            return raw
        raise BodyError(f"{where} must be {describe(hint)}", field=where)
    if origin is list:
        (item,) = get_args(hint)
        if not isinstance(raw, list):
            raise BodyError(f"{where} must be {describe(hint)}", field=where)
        return [_value(item, v, f"{where}[{i}]") for i, v in enumerate(raw)]
    if origin is dict:
        _, item = get_args(hint)
        if not isinstance(raw, dict):
            raise BodyError(f"{where} must be {describe(hint)}", field=where)
        return {str(k): _value(item, v, f"{where}.{k}") for k, v in raw.items()}
    if dataclasses.is_dataclass(hint):
        return parse(hint, raw, where)  # type: ignore[arg-type]
    if hint is bool:
        if isinstance(raw, bool):
            return raw
    elif hint is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
    elif hint is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
    elif hint is str:
        if isinstance(raw, str):
            return raw
    else:  # pragma: no cover - a model declared with a type this layer does not know
        raise TypeError(f"unsupported field type {hint!r} at {where}")
    raise BodyError(f"{where} must be {describe(hint)}", field=where)


def describe(hint: Any) -> str:
    """``hint`` in words, for error messages."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(hint) if a is not Unset)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is list:
        return f"a list of {describe(get_args(hint)[0])}"
    if origin is dict:
        return f"an object of {describe(get_args(hint)[1])}"
    if dataclasses.is_dataclass(hint):
        return "an object"
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        type(None): "null",
    }.get(hint, "a JSON value")


# ---- JSON Schema -----------------------------------------------------------------------


def json_schema(model: type[Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """A ``$ref`` to ``model``'s schema, which (with nested models) lands in ``definitions``."""
    name = model.__name__
    if name not in definitions:
        definitions[name] = {}  # reserve the name (recursive models)
        hints = typing.get_type_hints(model)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for f in dataclasses.fields(model):
            prop = _schema(hints[f.name], definitions)
            if doc := f.metadata.get(_DOC):
                prop = {**prop, "description": doc}
            properties[f.name] = prop
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if forbids_extra(model):
            schema["additionalProperties"] = False
        if model.__doc__ and not model.__doc__.startswith(f"{name}("):
            schema["description"] = " ".join(model.__doc__.split())
        definitions[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def _schema(hint: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    origin = get_origin(hint)
    if hint is Any or hint is object:
        return {}
    if origin in (Union, types.UnionType):
        options = [_schema(a, definitions) for a in get_args(hint) if a is not Unset]
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin is Literal:
        return {"enum": list(get_args(hint))}
    if origin is list:
        return {"type": "array", "items": _schema(get_args(hint)[0], definitions)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(get_args(hint)[1], definitions)}
    if dataclasses.is_dataclass(hint):
        return json_schema(hint, definitions)  # type: ignore[arg-type]
    return {
        str: {"type": "string"},
        int: {"type": "integer"},
        float: {"type": "number"},
        bool: {"type": "boolean"},
        type(None): {"type": "null"},
    }[hint]
