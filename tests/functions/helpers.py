"""Helpers for function runtime tests: write bundles, record publishes, wait for conditions."""

from __future__ import annotations

import asyncio
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

from hedgerow.functions import FunctionHost

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "functions"


def write_bundle(root: Path, name: str, files: dict[str, str], *, zip_it: bool = False) -> Path:
    """A function bundle directory (or zip) holding ``files`` (dedented)."""
    directory = root / f"src-{name}"
    directory.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    if not zip_it:
        return directory
    archive = root / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(directory).as_posix())
    return archive


class Recorder:
    """The core's publish callback: records (function, topic, payload) and wakes waiters."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, bytes]] = []
        self._changed = asyncio.Condition()

    async def __call__(self, function: str, topic: str, payload: bytes) -> None:
        async with self._changed:
            self.messages.append((function, topic, payload))
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[list[tuple[str, str, bytes]]], bool], timeout: float = 10.0
    ) -> list[tuple[str, str, bytes]]:
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.messages))
        return self.messages

    def on(self, topic: str) -> list[bytes]:
        return [payload for _, t, payload in self.messages if t == topic]


async def eventually(
    host: FunctionHost, predicate: Callable[[FunctionHost], bool], timeout: float = 10.0
) -> None:
    """Wait (bounded) until the host's states or counters satisfy ``predicate``."""
    async with asyncio.timeout(timeout):
        await host.wait_for(predicate)
