"""Log lines are structured: ``event_name key=value ...``, the event named under its
package (``streams.created``, ``connectors.modbus.connected``), every argument a key=value
pair. Checked on the source of each package listed here (more join as they are converted)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "hedgerow"
#: package directory → the prefix its events carry
PACKAGES = {"streams": "streams", "connectors": "connectors"}
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
#: ``key=%s``, ``key=%d``, ``key=%r``, ``key=%.1f``; keys in snake_case
PAIR = r"[a-z][a-z0-9_]*=(%(\.\d+)?[sdrf]|[a-z0-9_]+)"


def log_calls(path: Path) -> list[tuple[int, str, int]]:
    """(line, format string, argument count or -1 for ``*args``) of every ``log.<level>``
    call."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LEVELS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "log"
        ):
            first = node.args[0] if node.args else None
            text = first.value if isinstance(first, ast.Constant) else None
            assert isinstance(text, str), f"{path}:{node.lineno}: the event must be a literal"
            starred = any(isinstance(a, ast.Starred) for a in node.args)
            calls.append((node.lineno, text, -1 if starred else len(node.args) - 1))
    return calls


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_log_line_is_an_event_with_key_value_pairs(package: str) -> None:
    shape = re.compile(rf"^{PACKAGES[package]}(\.[a-z0-9_]+)+( {PAIR})*$")
    checked = 0
    for path in sorted((SRC / package).rglob("*.py")):
        for line, text, arguments in log_calls(path):
            where = f"{path.relative_to(SRC)}:{line}: {text!r}"
            assert shape.match(text), f"{where} is not 'event key=value ...'"
            if arguments >= 0:  # (``*args``: counted at run time)
                assert text.count("%") == arguments, f"{where}: one %-value per argument"
            checked += 1
    assert checked > 10  # the packages do log


def test_the_shape_refuses_what_it_should() -> None:
    shape = re.compile(rf"^streams(\.[a-z0-9_]+)+( {PAIR})*$")
    assert shape.match("streams.created stream=%s max_size=%d retry_in=%.1f reason=full")
    for bad in ("created stream=%s", "streams.waiting stream=%s: no subscription",
                "streams.failed %s", "connectors.x name=%s"):  # fmt: skip
        assert not shape.match(bad), bad
