"""Log files of a running core: one per component, rotated.

``logs/core.log`` gets every record; ``logs/<component>.log`` the records of one component,
named by the logger (``hedgerow.core.connector`` → ``connector``, ``hedgerow.broker.hub``
→ ``broker``, ``hedgerow.functions.pool`` → ``functions``). Each function's own output is
written by the function runtime to ``functions/logs/<function>.log`` (also rotated).
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def component_of(logger_name: str) -> str:
    parts = logger_name.split(".")
    if parts[0] != "hedgerow" or len(parts) < 2:
        return "other"
    if parts[1] == "core" and len(parts) > 2:
        return parts[2]
    return parts[1]


class ComponentFiles(logging.Handler):
    """Routes each record to its component's rotating file (created on first use)."""

    def __init__(self, directory: Path, max_bytes: int, backups: int) -> None:
        super().__init__()
        self.directory = directory
        self.max_bytes = max_bytes
        self.backups = backups
        self._files: dict[str, logging.Handler] = {}

    def _file(self, component: str) -> logging.Handler:
        handler = self._files.get(component)
        if handler is None:
            handler = logging.handlers.RotatingFileHandler(
                self.directory / f"{component}.log",
                maxBytes=self.max_bytes,
                backupCount=self.backups,
            )
            handler.setFormatter(self.formatter or logging.Formatter(FORMAT))
            self._files[component] = handler
        return handler

    def emit(self, record: logging.LogRecord) -> None:
        self._file(component_of(record.name)).emit(record)

    def close(self) -> None:
        for handler in self._files.values():
            handler.close()
        self._files.clear()
        super().close()


def file_handlers(directory: Path, max_bytes: int, backups: int) -> list[logging.Handler]:
    """``core.log`` (everything) and the per-component files."""
    directory.mkdir(parents=True, exist_ok=True)
    everything = logging.handlers.RotatingFileHandler(
        directory / "core.log", maxBytes=max_bytes, backupCount=backups
    )
    components = ComponentFiles(directory, max_bytes, backups)
    for handler in (everything, components):
        handler.setFormatter(logging.Formatter(FORMAT))
    return [everything, components]
