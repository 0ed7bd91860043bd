"""The one TOML config loader of the cloud and the core: tables into frozen dataclasses.

A role describes its file as a frozen dataclass whose fields are the file's tables, each
table a frozen dataclass whose fields are its keys (``typing`` annotations say the type,
a default makes a key optional, ``field(metadata=within(0, 65535))`` bounds a number,
``metadata=check(fn)`` adds a check returning a problem or None, ``metadata=hint(text)``
says what to write). ``parse(text, schema, file=...)`` and ``load(path, schema)`` return
the filled-in dataclass or raise ``ConfigFileError`` listing every problem at once:

* an unknown table or key, naming the file, table and key and the nearest valid one
  (``local.prot: unknown key; did you mean "port"?``);
* a wrong value, naming the field and the expected type (``local.port: expected an
  integer within 0..65535, got "8883" (a string)``);
* a key old files have that was renamed or dropped (``Moved``): its migration message;
* a missing required table or key; a file that is not TOML.

Types understood: ``str``, ``int``, ``float`` (an integer is accepted), ``bool``,
``Path`` (from a string), ``tuple[X, ...]`` (a list), ``Literal[...]`` (one of),
``X | None`` (None = absent: TOML has no null), unions such as ``int | Literal["auto"]``,
nested dataclasses (tables), ``tuple[Table, ...]`` (an array of tables, ``[[a.b]]``; each
problem names its index: ``a.b[1].url``) and ``dict[str, str]`` (an inline table of
strings, such as HTTP headers). Pure apart from ``load`` reading the file; stdlib only.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

T = TypeVar("T")

#: Field metadata keys understood here.
LOW: Final = "low"
HIGH: Final = "high"
CHECK: Final = "check"
HINT: Final = "hint"


def within(low: float | None = None, high: float | None = None) -> dict[str, Any]:
    """Field metadata: a number within ``low..high`` (either end open when None)."""
    return {LOW: low, HIGH: high}


def check(fn: Callable[[Any], str | None], **more: Any) -> dict[str, Any]:
    """Field metadata: ``fn(value)`` returns what is wrong with a well-typed value, or None."""
    return {CHECK: fn, **more}


def hint(text: str, **more: Any) -> dict[str, Any]:
    """Field metadata: what to write, appended to a wrong value's message."""
    return {HINT: text, **more}


@dataclass(frozen=True, slots=True)
class Moved:
    """A table or key old files have that this version renamed or dropped.

    ``key`` None means the whole table; ``message`` says what to write instead."""

    table: str
    key: str | None
    message: str

    @property
    def field(self) -> str:
        return self.table if self.key is None else f"{self.table}.{self.key}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a file: ``field`` is ``table.key`` (or ``table``, or ``config``
    for the file as a whole)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ConfigFileError(Exception):
    """A config file that cannot be used; ``problems`` lists every reason.

    ``field`` and ``message`` are the first problem's; ``str()`` names the file and
    every problem."""

    def __init__(self, file: str, problems: Iterable[Problem]) -> None:
        self.file = file
        self.problems = tuple(problems)
        assert self.problems
        self.field = self.problems[0].field
        self.message = self.problems[0].message
        super().__init__(f"{file}: {self.describe()}")

    def describe(self) -> str:
        """Every problem, ``; ``-separated, without the file."""
        return "; ".join(str(p) for p in self.problems)


def load(path: Path, schema: type[T], *, moved: Iterable[Moved] = ()) -> T:
    """Read ``path`` and ``parse`` it; a missing or unreadable file is a ``ConfigFileError``
    whose field is ``config``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(str(path), [Problem("config", "no config file here")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ConfigFileError(str(path), [Problem("config", f"cannot read it: {reason}")]) from exc
    return parse(text, schema, file=str(path), moved=moved)


def parse(text: str, schema: type[T], *, file: str, moved: Iterable[Moved] = ()) -> T:
    """The TOML ``text`` as a ``schema`` instance; ``ConfigFileError`` otherwise."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(file, [Problem("config", f"not valid TOML: {exc}")]) from exc
    return build(data, schema, file=file, moved=moved)


def build(data: Mapping[str, Any], schema: type[T], *, file: str, moved: Iterable[Moved] = ()) -> T:
    """An already parsed TOML document as a ``schema`` instance."""
    reader = _Reader({m.field: m for m in moved})
    value = reader.table(data, schema, "")
    if reader.problems:
        raise ConfigFileError(file, reader.problems)
    return typing.cast(T, value)


# ---- the walk -------------------------------------------------------------------------


class _Reader:
    def __init__(self, moved: dict[str, Moved]) -> None:
        self.moved = moved
        self.problems: list[Problem] = []

    def problem(self, field: str, message: str) -> None:
        self.problems.append(Problem(field, message))

    def table(self, data: Mapping[str, Any], schema: type[Any], prefix: str) -> Any:
        fields = {f.name: f for f in dataclasses.fields(schema)}
        hints = typing.get_type_hints(schema)
        for key in data:
            if key not in fields:
                self.unknown(prefix, key, fields, hints)
        values: dict[str, Any] = {}
        complete = True
        for name, f in fields.items():
            path = f"{prefix}.{name}" if prefix else name
            kind = hints[name]
            if name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    what = f"table [{path}]" if _is_table(kind) else "key"
                    self.problem(path, f"missing: a required {what}")
                    complete = False
                continue
            parsed = self.value(data[name], kind, path, f.metadata)
            if parsed is _BAD:
                complete = False
            else:
                values[name] = parsed
        return schema(**values) if complete else _BAD

    def unknown(
        self,
        prefix: str,
        key: str,
        fields: Mapping[str, dataclasses.Field[Any]],
        hints: Mapping[str, Any],
    ) -> None:
        path = f"{prefix}.{key}" if prefix else key
        moved = self.moved.get(path)
        if moved is not None:
            self.problem(path, moved.message)
            return
        tables = [n for n in fields if _is_table(hints[n])]
        keys = [n for n in fields if not _is_table(hints[n])]
        if not prefix:  # the top level holds tables
            nearest = difflib.get_close_matches(key, tables, n=1)
            message = f"unknown table [{key}]"
            if nearest:
                message += f"; did you mean [{nearest[0]}]?"
            message += f" (tables: {', '.join(f'[{t}]' for t in tables)})"
        else:
            nearest = difflib.get_close_matches(key, list(fields), n=1)
            message = f"unknown key in [{prefix}]"
            if nearest:
                message += f'; did you mean "{nearest[0]}"?'
            message += f" (keys of [{prefix}]: {', '.join(keys + tables)})"
        self.problem(path, message)

    def value(self, raw: Any, kind: Any, path: str, meta: Mapping[str, Any]) -> Any:
        if _is_table_array(kind):
            return self.tables(raw, typing.get_args(kind)[0], path, meta)
        if _is_table(kind):
            if not isinstance(raw, dict):
                self.problem(path, f"expected a table [{path}], got {_shown(raw)}")
                return _BAD
            return self.table(raw, kind, path)
        value = _convert(raw, kind)
        if value is _BAD:
            message = f"expected {_expected(kind, meta)}, got {_shown(raw)}"
            if HINT in meta:
                message += f": {meta[HINT]}"
            self.problem(path, message)
            return _BAD
        wrong = _bounds(value, meta)
        if wrong is None and CHECK in meta:
            wrong = meta[CHECK](value)
        if wrong is not None:
            self.problem(path, wrong + (f": {meta[HINT]}" if HINT in meta else ""))
            return _BAD
        return value

    def tables(self, raw: Any, item: type[Any], path: str, meta: Mapping[str, Any]) -> Any:
        """An array of tables: each read like a table, problems named by index."""
        if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
            self.problem(path, f"expected an array of tables [[{path}]], got {_shown(raw)}")
            return _BAD
        values = [self.table(r, item, f"{path}[{i}]") for i, r in enumerate(raw)]
        if any(v is _BAD for v in values):
            return _BAD
        result = tuple(values)
        wrong = meta[CHECK](result) if CHECK in meta else None
        if wrong is not None:
            self.problem(path, wrong)
            return _BAD
        return result


class _Bad:
    def __repr__(self) -> str:
        return "<bad value>"


_BAD: Final = _Bad()


def _is_table(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _is_table_array(kind: Any) -> bool:
    args = typing.get_args(kind)
    return typing.get_origin(kind) is tuple and len(args) == 2 and _is_table(args[0])


def _convert(raw: Any, kind: Any) -> Any:
    """``raw`` as ``kind``, or ``_BAD``."""
    origin = typing.get_origin(kind)
    if origin is dict:
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            return _BAD
        return dict(raw)
    if origin is Literal:
        return (
            raw if any(raw == c and type(raw) is type(c) for c in typing.get_args(kind)) else _BAD
        )
    if origin in (types.UnionType, typing.Union):
        for member in typing.get_args(kind):
            if member is type(None):
                continue
            value = _convert(raw, member)
            if value is not _BAD:
                return value
        return _BAD
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if not isinstance(raw, list):
            return _BAD
        items = [_convert(v, item) for v in raw]
        if any(v is _BAD or v == "" for v in items):
            return _BAD
        return tuple(items)
    if kind is bool:
        return raw if isinstance(raw, bool) else _BAD
    if kind is int:
        return raw if isinstance(raw, int) and not isinstance(raw, bool) else _BAD
    if kind is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        return _BAD
    if kind is str:
        return raw if isinstance(raw, str) else _BAD
    if kind is Path:
        return Path(raw) if isinstance(raw, str) and raw else _BAD
    raise TypeError(f"tomlconfig cannot read {kind!r}")  # a schema bug, not the user's


def _bounds(value: Any, meta: Mapping[str, Any]) -> str | None:
    low, high = meta.get(LOW), meta.get(HIGH)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        return f"{value} is out of range {_range(low, high)}"
    return None


def _range(low: float | None, high: float | None) -> str:
    return f"{'' if low is None else low}..{'' if high is None else high}"


_NAMES: Final[dict[Any, str]] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    Path: "a path (a non-empty string)",
}


def _expected(kind: Any, meta: Mapping[str, Any] | None = None) -> str:
    origin = typing.get_origin(kind)
    if origin is Literal:
        return "one of " + ", ".join(_toml(c) for c in typing.get_args(kind))
    if origin in (types.UnionType, typing.Union):
        members = [m for m in typing.get_args(kind) if m is not type(None)]
        return " or ".join(_expected(m, meta) for m in members)
    if origin is dict:
        return 'a table of strings (key = "value")'
    if origin is tuple:
        item = _expected(typing.get_args(kind)[0])
        return "a list of " + item.removeprefix("a ").removeprefix("an ") + "s (non-empty)"
    name = _NAMES.get(kind, repr(kind))
    if meta and (meta.get(LOW) is not None or meta.get(HIGH) is not None) and kind in (int, float):
        name += f" within {_range(meta.get(LOW), meta.get(HIGH))}"
    return name


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _shown(raw: Any) -> str:
    kinds = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    kind = kinds.get(type(raw), type(raw).__name__)
    text = _toml(raw) if isinstance(raw, bool | int | float | str) else None
    if text is None or len(text) > 40:
        return kind
    return f"{text} ({kind})"
