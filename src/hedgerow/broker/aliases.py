"""Outbound topic aliases towards one v5 client (pure: no I/O).

A client that sends a Topic Alias Maximum above 0 in its CONNECT lets the broker replace
repeated topics by a number. The first PUBLISH on a topic carries the topic and its new
alias; later ones carry the alias and an empty topic. Aliases are handed out first come,
first served, never above the client's maximum (nor above ``MAX_OUTBOUND_ALIASES``, so a
client cannot make the broker remember 65535 topics for it); topics beyond that are sent
in full. A client that allows 0 never gets an alias (it gets no ``OutboundAliases``).
"""

from __future__ import annotations

#: Aliases the broker uses towards one client at most, whatever the client allows.
MAX_OUTBOUND_ALIASES = 256


class OutboundAliases:
    __slots__ = ("maximum", "_aliases")

    def __init__(self, client_maximum: int) -> None:
        if client_maximum < 1:
            raise ValueError("a client allowing no topic alias gets no OutboundAliases")
        self.maximum = min(client_maximum, MAX_OUTBOUND_ALIASES)
        self._aliases: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._aliases)

    def alias_for(self, topic: str) -> tuple[int | None, bool]:
        """The alias to send with ``topic`` and whether the client already knows it
        (then the topic itself is left out); (None, False) when no alias is free."""
        aliases = self._aliases
        alias = aliases.get(topic)
        if alias is not None:
            return alias, True
        if len(aliases) >= self.maximum:
            return None, False
        alias = aliases[topic] = len(aliases) + 1
        return alias, False

    def forget(self, topic: str) -> None:
        """Undo the last new alias (its PUBLISH was never sent)."""
        alias = self._aliases.get(topic)
        if alias == len(self._aliases):
            del self._aliases[topic]
