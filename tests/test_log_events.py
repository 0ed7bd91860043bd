"""Log lines are structured: ``event_name key=value ...`` (docs/architecture.md, Logging).

Walks the source of the packages below (ast, imports nothing) for logging calls
(``log.info(...)``, ``logger.warning(...)``, ``self.log.debug(...)``, ``log.log(level, ...)``)
and fails on a format string that does not start with an event token — dotted lowercase
words such as ``broker.client.tls_failed`` — followed by the end or by `` key=``, or that
has words outside its key=value pairs (a value that may hold spaces goes in as ``%r``). A format
that is not a plain string literal (an f-string, a variable) fails too: the event name
must be readable in the source.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "hedgerow"

#: The packages held to the convention (streams/ and connectors/ are converted separately).
PACKAGES = ("broker", "client", "thing", "demo", "cli", "mqtt", "cloud", "functions", "core")

EVENT = re.compile(r"[a-z_]+(\.[a-z_]+)*( [a-z_][a-z0-9_]*=|$)")
#: The whole format: key=value pairs whose written parts hold no space (a value that may
#: hold spaces is passed as an argument, %r); a traceback may follow on its own line.
PAIRS = re.compile(r"[a-z_]+(\.[a-z_]+)*( [a-z_][a-z0-9_]*=[^ ]+)*(\n%s)?")
METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical"}
LOGGER_NAMES = re.compile(r"^_?(log|logger|LOG|LOGGER|logging)$")


def _logger_call(node: ast.Call) -> ast.expr | None:
    """The format argument of a logging call, or None if ``node`` is no logging call."""
    func = node.func
    if not isinstance(func, ast.Attribute):
        return None
    receiver = func.value
    name = (
        receiver.id
        if isinstance(receiver, ast.Name)
        else receiver.attr
        if isinstance(receiver, ast.Attribute)
        else None
    )
    if name is None or not LOGGER_NAMES.match(name):
        return None
    if func.attr in METHODS:
        return node.args[0] if node.args else None
    if func.attr == "log":
        return node.args[1] if len(node.args) > 1 else None
    return None


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((SRC / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            fmt = _logger_call(node)
            if fmt is None:
                continue
            where = f"{path.relative_to(SRC.parent)}:{node.lineno}"
            if not (isinstance(fmt, ast.Constant) and isinstance(fmt.value, str)):
                found.append(f"{where}: format is not a string literal")
            elif not EVENT.match(fmt.value):
                found.append(f"{where}: {fmt.value[:60]!r}")
            elif not PAIRS.fullmatch(fmt.value):
                found.append(f"{where}: words outside key=value: {fmt.value[:60]!r}")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_log_lines_start_with_an_event(package: str) -> None:
    bad = violations(package)
    assert not bad, "log format strings must read 'event.name key=%s ...':\n" + "\n".join(bad)


def test_the_check_catches_sentence_style() -> None:
    """The pattern itself: what passes and what does not."""
    good = [
        "broker.client.tls_failed peer=%s error=%s",
        "core.connector.connected host=%s port=%s",
        "cloud.started",
    ]
    bad = [
        "client %s: TLS failed, closing: %s",
        "Broker started",
        "broker.client.tls failed",
        "cloud.data_dir_mode %s",
        "%s connected",
    ]
    assert all(EVENT.match(s) for s in good)
    assert not any(EVENT.match(s) for s in bad)
    assert all(PAIRS.fullmatch(s) for s in good + ["a.b code=0x%02x in=%.2fs at=%s:%s"])
    assert not PAIRS.fullmatch("core.x reason=%s: not applied")
    assert not PAIRS.fullmatch("thing.sensor.simulated reason=no BME680 driver")
    calls = {
        source: _logger_call(ast.parse(source, mode="eval").body)  # type: ignore[arg-type]
        for source in ("log.info(f'x {1}')", "self.log.warning('a b')", "log.log(10, 'x y')")
    }
    assert [type(fmt).__name__ for fmt in calls.values()] == ["JoinedStr", "Constant", "Constant"]
    assert _logger_call(ast.parse("print('a b')", mode="eval").body) is None  # type: ignore[arg-type]
