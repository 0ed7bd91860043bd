"""When a polled value is published: every poll, or on change beyond a deadband (pure).

``ChangeFilter`` remembers the last *published* value of each tag (not the last read one, so
a slow drift still gets published once it adds up to more than the deadband). Numbers
compare by absolute difference (``> deadband``); strings and booleans by equality. The first
value of a tag, and any value after a read error (``forget``), is always published.
"""

from __future__ import annotations

from .config import PublishMode

Value = bool | int | float | str


def changed(last: Value | None, value: Value, deadband: float) -> bool:
    """Whether ``value`` differs from ``last`` enough to publish."""
    if last is None:
        return True
    numeric = (int, float)
    if (
        isinstance(value, numeric)
        and not isinstance(value, bool)
        and isinstance(last, numeric)
        and not isinstance(last, bool)
    ):
        return abs(value - last) > deadband if deadband > 0 else value != last
    return value != last


class ChangeFilter:
    def __init__(self) -> None:
        self._last: dict[str, Value] = {}

    def offer(self, tag: str, value: Value, mode: PublishMode, deadband: float) -> bool:
        """True if the value should be published now (and remember it as published)."""
        if mode is PublishMode.EVERY or changed(self._last.get(tag), value, deadband):
            self._last[tag] = value
            return True
        return False

    def forget(self, tag: str) -> None:
        self._last.pop(tag, None)
