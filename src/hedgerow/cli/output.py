"""How every ``hedgerow`` command prints data: human lines by default, JSON with ``--json``.

The cloud, core, thing and broker commands share these, so ``--json`` means the same
everywhere: one JSON document on stdout (``print_json``), or for commands that report as
they run, one JSON object per line (``print_json_line``), and nothing else on stdout.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_json_flag(parser: argparse.ArgumentParser, help: str = "print JSON") -> None:
    parser.add_argument("--json", action="store_true", help=help)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def print_json_line(value: Any) -> None:
    """One JSON object on one line (commands that report as they run: JSON Lines)."""
    print(json.dumps(value, separators=(",", ":")), flush=True)


def print_fields(value: Any, indent: int = 0) -> None:
    """A JSON value for people: ``key: value`` lines, nested objects indented."""
    pad = "  " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict) and item or isinstance(item, list) and _nested(item):
                print(f"{pad}{key}:")
                print_fields(item, indent + 1)
            else:
                print(f"{pad}{key}: {scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                print(f"{pad}-")
                print_fields(item, indent + 1)
            else:
                print(f"{pad}- {scalar(item)}")
    else:
        print(f"{pad}{scalar(value)}")


def _nested(items: list[Any]) -> bool:
    return any(isinstance(i, dict | list) for i in items)


def scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(scalar(v) for v in value) or "(none)"
    if isinstance(value, dict):
        return "(none)"
    text = str(value)
    return text if "\n" not in text else text.splitlines()[0] + " …"


def done(args: argparse.Namespace, result: Any, text: str) -> int:
    """What a command did: a sentence, or its data with ``--json``."""
    if args.json:
        print_json(result)
    else:
        print(text)
    return 0


def show(args: argparse.Namespace, value: Any) -> None:
    """Human output by default, the data as JSON with ``--json``."""
    if args.json:
        print_json(value)
    else:
        print_fields(value)
