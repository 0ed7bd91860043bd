"""Which Modbus read requests fetch a set of tags (pure: no I/O).

``plan(tags, max_gap=, max_registers=)`` groups tags by (unit, table) and merges tags whose
addresses lie within ``max_gap`` registers of each other into one request, up to
``max_registers`` registers (``MAX_READ_BITS`` bits for coils and discrete inputs). Fewer
requests means fewer round trips: 100 adjacent registers are one request, not 100.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .config import MAX_READ_BITS, ModbusTag, Table


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request and the tags it serves."""

    unit: int
    table: Table
    address: int
    count: int
    tags: tuple[ModbusTag, ...]

    def slice_of(self, tag: ModbusTag) -> slice:
        start = tag.address - self.address
        return slice(start, start + tag.count)


def plan(tags: Iterable[ModbusTag], *, max_gap: int, max_registers: int) -> list[ReadBlock]:
    """The read requests for ``tags``, ordered by unit, table and address."""
    by_key: dict[tuple[int, Table], list[ModbusTag]] = {}
    for tag in tags:
        by_key.setdefault((tag.unit, tag.table), []).append(tag)
    blocks: list[ReadBlock] = []
    for (unit, table), group in sorted(by_key.items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
        limit = MAX_READ_BITS if table.is_bits else max_registers
        gap = max_gap * 16 if table.is_bits else max_gap
        current: list[ModbusTag] = []
        start = end = 0
        for tag in sorted(group, key=lambda t: (t.address, t.count)):
            tag_end = tag.address + tag.count
            if current and tag.address - end <= gap and max(end, tag_end) - start <= limit:
                current.append(tag)
                end = max(end, tag_end)
                continue
            if current:
                blocks.append(ReadBlock(unit, table, start, end - start, tuple(current)))
            current, start, end = [tag], tag.address, tag_end
        if current:
            blocks.append(ReadBlock(unit, table, start, end - start, tuple(current)))
    return blocks
