"""A set of integers kept as sorted, disjoint, half-open ranges.

Acked offsets arrive mostly in order, so a partition's settled set is a
floor plus a few ranges above it: memory follows the gaps, not the number
of messages.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Iterable, Iterator
from itertools import compress, islice

Range = tuple[int, int]  # [start, end)


class RangeSet:
    """Sorted disjoint [start, end) ranges with merge on insert."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[Range] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def __len__(self) -> int:
        """Number of ranges (not of integers)."""
        return len(self._starts)

    def __iter__(self) -> Iterator[Range]:
        return iter(zip(self._starts, self._ends, strict=True))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"

    def count(self) -> int:
        """Number of integers in the set."""
        return sum(end - start for start, end in self)

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        # First range whose end >= start (touching ranges merge).
        low = bisect.bisect_left(self._ends, start)
        # Last range whose start <= end.
        high = bisect.bisect_right(self._starts, end)
        if low < high:
            start = min(start, self._starts[low])
            end = max(end, self._ends[high - 1])
        self._starts[low:high] = [start]
        self._ends[low:high] = [end]

    def remove(self, start: int, end: int) -> None:
        if start >= end:
            return
        low = bisect.bisect_right(self._ends, start)
        high = bisect.bisect_left(self._starts, end)
        if low >= high:
            return
        pieces_start: list[int] = []
        pieces_end: list[int] = []
        if self._starts[low] < start:
            pieces_start.append(self._starts[low])
            pieces_end.append(start)
        if self._ends[high - 1] > end:
            pieces_start.append(end)
            pieces_end.append(self._ends[high - 1])
        self._starts[low:high] = pieces_start
        self._ends[low:high] = pieces_end

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        index = bisect.bisect_right(self._starts, value) - 1
        return index >= 0 and value < self._ends[index]

    def covers(self, start: int, end: int) -> bool:
        """True when every integer of [start, end) is in the set."""
        if start >= end:
            return True
        index = bisect.bisect_right(self._starts, start) - 1
        return index >= 0 and self._ends[index] >= end

    def missing(self, start: int, end: int) -> list[Range]:
        """The parts of [start, end) that are not in the set."""
        gaps: list[Range] = []
        cursor = start
        index = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while cursor < end and index < len(self._starts):
            range_start, range_end = self._starts[index], self._ends[index]
            if range_end <= cursor:
                index += 1
                continue
            if range_start >= end:
                break
            if range_start > cursor:
                gaps.append((cursor, range_start))
            cursor = max(cursor, range_end)
            index += 1
        if cursor < end:
            gaps.append((cursor, end))
        return gaps

    def first_range(self) -> Range | None:
        return (self._starts[0], self._ends[0]) if self._starts else None

    def last_range(self) -> Range | None:
        return (self._starts[-1], self._ends[-1]) if self._starts else None

    def drop_below(self, floor: int) -> None:
        """Forget everything below `floor`."""
        self.remove(-(2**63), floor)

    def copy(self) -> RangeSet:
        clone = RangeSet()
        clone._starts = list(self._starts)
        clone._ends = list(self._ends)
        return clone


def ranges_of(values: Iterable[int]) -> list[Range]:
    """Sorted values (any order in) collapsed into [start, end) ranges; the
    work per value runs in C loops, only the work per range in Python."""
    ordered = sorted(set(values))
    if not ordered:
        return []
    if ordered[-1] - ordered[0] == len(ordered) - 1:
        return [(ordered[0], ordered[-1] + 1)]  # one run: the common case
    # the positions of the values that do not follow the one before them
    breaks = list(
        compress(
            range(1, len(ordered)),
            map(operator.ne, islice(ordered, 1, None), map((1).__add__, ordered)),
        )
    )
    starts = [ordered[0], *map(ordered.__getitem__, breaks)]
    ends = [*(ordered[index - 1] + 1 for index in breaks), ordered[-1] + 1]
    return list(zip(starts, ends, strict=True))
