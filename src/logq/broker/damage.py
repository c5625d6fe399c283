"""Reading a group's planned offsets around damage on disk.

The log refuses offsets lost to damage with DamagedDataError, naming the
range [start, end) lost. A delivery that meets one is cut around it: the
stored batches before and after go out as usual, and the damaged offsets
come back apart, so the group records them as lost (never as delivered,
acked or dead-lettered) and one partition's damage never fails a receive
that other partitions could serve.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from logq.errors import OutOfRangeError
from logq.log import DamagedDataError, LogError, PartitionLog, ReadResult
from logq.state.ranges import Range

T = TypeVar("T")
Run = Callable[[Callable[[], T]], Awaitable[T]]


@dataclass(slots=True)
class AroundDamage:
    """The readable parts of [start, end) with their stored batches, and the damaged ranges."""

    parts: list[tuple[int, int, bytes]] = field(default_factory=list)
    damaged: list[Range] = field(default_factory=list)


async def read_around_damage(
    run: Run[ReadResult], log: PartitionLog, start: int, end: int, chunk_bytes: int
) -> AroundDamage:
    """Read [start, end) from `log` in chunks of about `chunk_bytes`."""
    found = AroundDamage()
    chunks: list[bytes] = []
    part_start = start
    offset = max(start, log.first_offset)
    while offset < end:
        try:
            result = await run(lambda at=offset: log.read(at, chunk_bytes))  # type: ignore[misc]
        except DamagedDataError as error:
            lost_end = min(max(error.end, offset + 1), end)
            if part_start < offset:
                found.parts.append((part_start, offset, b"".join(chunks)))
            found.damaged.append((offset, lost_end))
            chunks = []
            part_start = offset = lost_end
            continue
        except LogError as error:
            raise OutOfRangeError(str(error)) from None
        if not result.data:
            break
        chunks.append(result.data)
        offset = result.next_offset
    if part_start < end:
        found.parts.append((part_start, end, b"".join(chunks)))
    return found


def without(ranges: list[Range], holes: list[Range]) -> list[Range]:
    """`ranges` less the offsets in `holes` (both sorted, disjoint)."""
    kept: list[Range] = []
    for start, end in ranges:
        at = start
        for hole_start, hole_end in holes:
            if hole_end <= at or hole_start >= end:
                continue
            if at < hole_start:
                kept.append((at, hole_start))
            at = max(at, hole_end)
        if at < end:
            kept.append((at, end))
    return kept
