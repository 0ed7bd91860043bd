"""Will messages waiting for their v5 Will Delay Interval to pass."""

from __future__ import annotations

from hedgerow.broker.messages import Message


class DelayedWills:
    def __init__(self) -> None:
        self._pending: dict[str, tuple[float, Message]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def schedule(self, client_id: str, due: float, message: Message) -> None:
        self._pending[client_id] = (due, message)

    def cancel(self, client_id: str) -> bool:
        """The client came back (or its session was taken over): the will is not sent."""
        return self._pending.pop(client_id, None) is not None

    def take(self, client_id: str) -> Message | None:
        """The pending will, now (its session ended before the delay)."""
        entry = self._pending.pop(client_id, None)
        return entry[1] if entry else None

    def due(self, now: float) -> list[Message]:
        ready = [cid for cid, (due, _) in self._pending.items() if due <= now]
        return [self._pending.pop(cid)[1] for cid in ready]
