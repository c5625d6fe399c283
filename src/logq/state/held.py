"""Delayed messages a group holds back: which offsets, and when each is due.

A group that reaches a delayed message before its time holds it back, as a
first delivery, until then. With every message its own due time there may be
millions of them, so no Python object stands for one:

- `OffsetSet` says which offsets are held: offsets cut into chunks of 65,536
  (by their high bits), each chunk a sorted `array('H')` of its low 16 bits
  (2 bytes an offset) or, once it holds more than 4,096, a bitmap of 8 KiB
  (a bit an offset), as roaring bitmaps do. Membership, adding and removing a
  range cost a chunk lookup and a bisect.
- `DueIndex` finds them by due time: (due_ms, offset) pairs in sorted runs of
  two `array('q')` (16 bytes a pair) with a heap of the runs' heads, so the
  next due is the heap's top and taking the due ones costs O(log runs) each.
  New pairs gather in an unsorted inbox (its earliest due kept aside) that
  becomes a run once it is full or once something in it comes due; small runs
  are merged as they pile up (as in a log-structured merge tree), never past
  `RUN_MAX` pairs, so no merge holds the event loop long.

The index never deletes: a pair whose offset is no longer held (leased when
it came due, settled, lost) is dropped when it reaches the top. `HeldBack`
joins the two; the set decides what is held, the index when.
"""

from __future__ import annotations

import bisect
import heapq
import sys
from array import array
from collections.abc import Callable, Iterable, Sequence

import msgspec

Range = tuple[int, int]

CHUNK_BITS = 16
CHUNK_SIZE = 1 << CHUNK_BITS
LOW_MASK = CHUNK_SIZE - 1
ARRAY_MAX = 4096  # more offsets than this in a chunk: a bitmap (8 KiB) is smaller
BITMAP_BYTES = CHUNK_SIZE // 8
INBOX_MAX = 16_384  # pairs gathered before they are sorted into a run
RUN_MAX = 16_384  # a run is not merged past this many pairs (a merge stays short)
PAIR_MASK = (1 << 64) - 1


def _little_endian(values: array) -> bytes:  # type: ignore[type-arg]
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _from_little_endian(typecode: str, data: bytes) -> array:  # type: ignore[type-arg]
    values = array(typecode)
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def pack_offsets(values: Iterable[int]) -> bytes:
    """Offsets or times as little-endian int64s (how a `Held` event carries them)."""
    return _little_endian(array("q", values))


def unpack_offsets(data: bytes) -> array:  # type: ignore[type-arg]
    return _from_little_endian("q", data)


Chunk = array | bytearray  # type: ignore[type-arg]


class OffsetSet:
    """A set of offsets, compact: about 2 bytes an offset, a bit when dense."""

    __slots__ = ("_chunks", "_count", "_keys")

    def __init__(self) -> None:
        self._chunks: dict[int, Chunk] = {}
        self._keys: list[int] = []  # the chunks' keys, sorted
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, offset: object) -> bool:
        if not isinstance(offset, int):
            return False
        chunk = self._chunks.get(offset >> CHUNK_BITS)
        if chunk is None:
            return False
        low = offset & LOW_MASK
        if isinstance(chunk, bytearray):
            return bool(chunk[low >> 3] >> (low & 7) & 1)
        index = bisect.bisect_left(chunk, low)
        return index < len(chunk) and chunk[index] == low

    def memory_bytes(self) -> int:
        """Bytes the chunks' contents take (not counting their small headers)."""
        return sum(
            len(c) if isinstance(c, bytearray) else 2 * len(c) for c in self._chunks.values()
        )

    def chunk_count(self) -> int:
        return len(self._chunks)

    def add(self, offsets: Iterable[int]) -> int:
        """Add offsets (any order); returns how many were new."""
        values = sorted(offsets)  # mostly sorted already: linear
        added = start = 0
        while start < len(values):
            key = values[start] >> CHUNK_BITS
            end = bisect.bisect_left(values, (key + 1) << CHUNK_BITS, start)
            added += self._add_to_chunk(key, [value & LOW_MASK for value in values[start:end]])
            start = end
        self._count += added
        return added

    def _add_to_chunk(self, key: int, lows: list[int]) -> int:
        chunk = self._chunks.get(key)
        if chunk is None:
            chunk = self._chunks[key] = array("H")
            bisect.insort(self._keys, key)
        if isinstance(chunk, array):
            before = len(chunk)
            if not chunk or lows[0] > chunk[-1]:  # lows come sorted
                chunk.extend(lows if len(set(lows)) == len(lows) else sorted(set(lows)))
            elif len(lows) <= 16:
                for low in lows:
                    index = bisect.bisect_left(chunk, low)
                    if index == len(chunk) or chunk[index] != low:
                        chunk.insert(index, low)
            else:
                self._chunks[key] = chunk = array("H", sorted(set(chunk).union(lows)))
            if len(chunk) <= ARRAY_MAX:
                return len(chunk) - before
            bitmap = bytearray(BITMAP_BYTES)
            for low in chunk:
                bitmap[low >> 3] |= 1 << (low & 7)
            self._chunks[key] = bitmap
            return len(chunk) - before
        added = 0
        for low in lows:
            bit = 1 << (low & 7)
            if not chunk[low >> 3] & bit:
                chunk[low >> 3] |= bit
                added += 1
        return added

    def _keys_over(self, start: int, end: int) -> list[int]:
        """Keys of the chunks that may hold offsets of [start, end)."""
        low = bisect.bisect_left(self._keys, start >> CHUNK_BITS)
        high = bisect.bisect_right(self._keys, (end - 1) >> CHUNK_BITS)
        return self._keys[low:high]

    def remove(self, start: int, end: int) -> int:
        """Remove [start, end); returns how many offsets went."""
        if start >= end or not self._count:
            return 0
        removed = 0
        for key in self._keys_over(start, end):
            base = key << CHUNK_BITS
            low, high = max(start, base) - base, min(end, base + CHUNK_SIZE) - base
            chunk = self._chunks[key]
            if isinstance(chunk, array):
                first, last = bisect.bisect_left(chunk, low), bisect.bisect_left(chunk, high)
                del chunk[first:last]
                removed += last - first
                left = len(chunk)
            else:
                removed += _clear_bits(chunk, low, high)
                left = int.from_bytes(chunk, "little").bit_count()
                if 0 < left <= ARRAY_MAX // 2:
                    self._chunks[key] = array("H", _bits_of(chunk, 0, CHUNK_SIZE))
            if not left:
                del self._chunks[key]
                del self._keys[bisect.bisect_left(self._keys, key)]
        self._count -= removed
        return removed

    def clear(self) -> None:
        self._chunks.clear()
        self._keys.clear()
        self._count = 0

    def first_at_or_after(self, offset: int) -> int | None:
        """The lowest offset in the set at or above `offset`."""
        position = bisect.bisect_left(self._keys, offset >> CHUNK_BITS)
        for key in self._keys[position:]:
            base = key << CHUNK_BITS
            low = max(offset - base, 0)
            chunk = self._chunks[key]
            if isinstance(chunk, array):
                index = bisect.bisect_left(chunk, low)
                if index < len(chunk):
                    return base + int(chunk[index])
            else:
                for found in _bits_of(chunk, low, CHUNK_SIZE):
                    return base + found
        return None

    def ranges_within(self, start: int, end: int) -> list[Range]:
        """The offsets of the set in [start, end), as sorted [start, end) ranges."""
        ranges: list[Range] = []
        for key in self._keys_over(start, end):
            base = key << CHUNK_BITS
            low, high = max(start, base) - base, min(end, base + CHUNK_SIZE) - base
            chunk = self._chunks[key]
            if isinstance(chunk, array):
                lows: Iterable[int] = chunk[
                    bisect.bisect_left(chunk, low) : bisect.bisect_left(chunk, high)
                ]
            else:
                lows = _bits_of(chunk, low, high)
            for value in lows:
                offset = base + value
                if ranges and ranges[-1][1] == offset:
                    ranges[-1] = (ranges[-1][0], offset + 1)
                else:
                    ranges.append((offset, offset + 1))
        return ranges

    # -- snapshots -----------------------------------------------------------------------

    def chunks(self) -> list[tuple[int, bool, bytes]]:
        """(key, is a bitmap, contents little-endian) of every chunk, by key."""
        return [
            (
                key,
                isinstance(chunk, bytearray),
                bytes(chunk) if isinstance(chunk, bytearray) else _little_endian(chunk),
            )
            for key in self._keys
            for chunk in (self._chunks[key],)
        ]

    @classmethod
    def from_chunks(cls, chunks: Iterable[tuple[int, bool, bytes]]) -> OffsetSet:
        made = cls()
        for key, is_bitmap, data in chunks:
            chunk: Chunk
            if is_bitmap:
                if len(data) != BITMAP_BYTES:
                    raise ValueError(f"a held-offsets bitmap of {len(data)} bytes")
                chunk = bytearray(data)
                count = int.from_bytes(data, "little").bit_count()
            else:
                chunk = _from_little_endian("H", data)
                count = len(chunk)
            if count:
                made._chunks[key] = chunk
                made._count += count
        made._keys = sorted(made._chunks)
        return made


def _bits_of(bitmap: bytearray, low: int, high: int) -> Iterable[int]:
    """The set bits of `bitmap` in [low, high), ascending."""
    for index in range(low >> 3, (high + 7) >> 3):
        byte = bitmap[index]
        if not byte:
            continue
        for bit in range(8):
            if byte >> bit & 1:
                value = index * 8 + bit
                if low <= value < high:
                    yield value


def _clear_bits(bitmap: bytearray, low: int, high: int) -> int:
    """Clear bits [low, high) of `bitmap`; returns how many were set."""
    cleared = 0
    while low < high and low & 7:
        if bitmap[low >> 3] >> (low & 7) & 1:
            bitmap[low >> 3] &= ~(1 << (low & 7)) & 0xFF
            cleared += 1
        low += 1
    whole_end = high >> 3
    if low >> 3 < whole_end:
        cleared += int.from_bytes(bitmap[low >> 3 : whole_end], "little").bit_count()
        bitmap[low >> 3 : whole_end] = bytes(whole_end - (low >> 3))
        low = whole_end << 3
    while low < high:
        if bitmap[low >> 3] >> (low & 7) & 1:
            bitmap[low >> 3] &= ~(1 << (low & 7)) & 0xFF
            cleared += 1
        low += 1
    return cleared


class _Run:
    """(due_ms, offset) pairs sorted by due time then offset; `position` is
    the first not taken yet."""

    __slots__ = ("dues", "offsets", "position")

    def __init__(self, dues: array, offsets: array) -> None:  # type: ignore[type-arg]
        self.dues = dues
        self.offsets = offsets
        self.position = 0

    def __len__(self) -> int:
        return len(self.dues) - self.position


def _sorted_run(dues: Iterable[int], offsets: Iterable[int]) -> _Run:
    """A run of the pairs, sorted (packed into one integer each: the sort runs in C)."""
    keys = [due << 64 | offset for due, offset in zip(dues, offsets, strict=True)]
    keys.sort()
    return _Run(
        array("q", [key >> 64 for key in keys]), array("q", [key & PAIR_MASK for key in keys])
    )


class DueIndex:
    """(due_ms, offset) pairs, the earliest first; pairs are dropped only
    from the top (see the module's comment)."""

    __slots__ = (
        "_heap",
        "_inbox_dues",
        "_inbox_min",
        "_inbox_offsets",
        "_next_id",
        "_runs",
        "_stack",
    )

    def __init__(self) -> None:
        self._inbox_dues = array("q")
        self._inbox_offsets = array("q")
        self._inbox_min: int | None = None
        self._runs: dict[int, _Run] = {}
        self._stack: list[int] = []  # run ids, oldest first (merges join the newest)
        self._heap: list[tuple[int, int, int]] = []  # (due_ms, offset, run id) of each run's head
        self._next_id = 0

    def __len__(self) -> int:
        """Pairs kept, including those no longer held and not yet dropped."""
        return len(self._inbox_dues) + sum(len(run) for run in self._runs.values())

    def run_count(self) -> int:
        return len(self._runs)

    def memory_bytes(self) -> int:
        """Bytes the pairs' arrays take."""
        arrays = [self._inbox_dues, self._inbox_offsets]
        arrays += [a for run in self._runs.values() for a in (run.dues, run.offsets)]
        return sum(a.itemsize * len(a) for a in arrays)

    def add(self, dues: Sequence[int], offsets: Sequence[int]) -> None:
        if not dues:
            return
        if min(dues) < 0:
            raise ValueError("a due time before the epoch")
        self._inbox_dues.extend(dues)
        self._inbox_offsets.extend(offsets)
        earliest = min(dues)
        self._inbox_min = earliest if self._inbox_min is None else min(self._inbox_min, earliest)
        if len(self._inbox_dues) >= INBOX_MAX:
            self._seal_inbox()

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def _seal_inbox(self) -> None:
        if not self._inbox_dues:
            return
        run = _sorted_run(self._inbox_dues, self._inbox_offsets)
        self._inbox_dues, self._inbox_offsets, self._inbox_min = array("q"), array("q"), None
        self._push(run)
        while len(self._stack) >= 2:
            older, newer = self._runs[self._stack[-2]], self._runs[self._stack[-1]]
            if len(older) > 2 * len(newer) or len(older) + len(newer) > RUN_MAX:
                break
            self._drop(self._stack[-1])
            self._drop(self._stack[-1])
            dues = [*older.dues[older.position :], *newer.dues[newer.position :]]
            offsets = [*older.offsets[older.position :], *newer.offsets[newer.position :]]
            self._push(_sorted_run(dues, offsets))
            heapq.heapify(self._heap)

    def _push(self, run: _Run) -> None:
        if not len(run):
            return
        self._next_id += 1
        self._runs[self._next_id] = run
        self._stack.append(self._next_id)
        heapq.heappush(
            self._heap, (run.dues[run.position], run.offsets[run.position], self._next_id)
        )

    def _drop(self, run_id: int) -> None:
        del self._runs[run_id]
        self._stack.remove(run_id)
        self._heap = [entry for entry in self._heap if entry[2] != run_id]

    def _pop_top(self) -> None:
        _, _, run_id = self._heap[0]
        run = self._runs[run_id]
        run.position += 1
        if run.position < len(run.dues):
            heapq.heapreplace(
                self._heap, (run.dues[run.position], run.offsets[run.position], run_id)
            )
        else:
            heapq.heappop(self._heap)
            del self._runs[run_id]
            self._stack.remove(run_id)

    def tidy(self, held: Callable[[int], bool]) -> None:
        """Drop the pairs at the top whose offsets are no longer held."""
        while self._heap and not held(self._heap[0][1]):
            self._pop_top()

    def next_due_ms(self, held: Callable[[int], bool]) -> int | None:
        """No later than the earliest due of a held offset (None: nothing held)."""
        self.tidy(held)
        top = self._heap[0][0] if self._heap else None
        if self._inbox_min is None:
            return top
        return self._inbox_min if top is None else min(top, self._inbox_min)

    def due(self, now_ms: int, count_max: int, held: Callable[[int], bool]) -> list[int]:
        """Up to `count_max` held offsets due by `now_ms`, the earliest due
        first; nothing is taken (the caller's lease does that)."""
        if self._inbox_min is not None and self._inbox_min <= now_ms:
            self._seal_inbox()
        self.tidy(held)
        if not self._heap or self._heap[0][0] > now_ms or count_max <= 0:
            return []
        heap = list(self._heap)
        positions: dict[int, int] = {}
        found: list[int] = []
        while heap and len(found) < count_max and heap[0][0] <= now_ms:
            _, offset, run_id = heap[0]
            run = self._runs[run_id]
            position = positions.get(run_id, run.position) + 1
            positions[run_id] = position
            if position < len(run.dues):
                heapq.heapreplace(heap, (run.dues[position], run.offsets[position], run_id))
            else:
                heapq.heappop(heap)
            if held(offset):
                found.append(offset)
        return found

    # -- snapshots -----------------------------------------------------------------------

    def runs(self) -> list[tuple[bytes, bytes]]:
        """(due times, offsets) of every run, sorted, then the inbox, each
        as little-endian int64s."""
        parts = [
            (_little_endian(run.dues[run.position :]), _little_endian(run.offsets[run.position :]))
            for run_id in self._stack
            for run in (self._runs[run_id],)
        ]
        if self._inbox_dues:
            run = _sorted_run(self._inbox_dues, self._inbox_offsets)
            parts.append((_little_endian(run.dues), _little_endian(run.offsets)))
        return parts

    @classmethod
    def from_runs(cls, runs: Iterable[tuple[bytes, bytes]]) -> DueIndex:
        """The index from `runs()` (each run sorted as written)."""
        made = cls()
        for dues_data, offsets_data in runs:
            dues, offsets = unpack_offsets(dues_data), unpack_offsets(offsets_data)
            if len(dues) != len(offsets):
                raise ValueError("a run of due times and offsets of different lengths")
            made._push(_Run(dues, offsets))
        return made


class HeldSnapshot(msgspec.Struct, array_like=True):
    """Held offsets as snapshots store them: the set's chunks, the index's runs."""

    chunks: list[tuple[int, bool, bytes]]
    runs: list[tuple[bytes, bytes]]


class HeldBack:
    """Offsets held back until their due times (first deliveries of delayed messages)."""

    __slots__ = ("index", "offsets")

    def __init__(self, offsets: OffsetSet | None = None, index: DueIndex | None = None) -> None:
        self.offsets = offsets if offsets is not None else OffsetSet()
        self.index = index if index is not None else DueIndex()

    def __len__(self) -> int:
        return len(self.offsets)

    def __contains__(self, offset: object) -> bool:
        return offset in self.offsets

    def hold(self, offsets: Sequence[int], dues: Sequence[int]) -> None:
        """Hold `offsets[i]` until `dues[i]` (none of them held already)."""
        self.offsets.add(offsets)
        self.index.add(dues, offsets)

    def release(self, start: int, end: int) -> int:
        """[start, end) is no longer held (leased, settled, handed back)."""
        return self.offsets.remove(start, end) if self.offsets else 0

    def clear(self) -> None:
        self.offsets.clear()
        self.index.clear()

    def due(self, now_ms: int, count_max: int) -> list[int]:
        return self.index.due(now_ms, count_max, self.offsets.__contains__)

    def next_due_ms(self) -> int | None:
        if not self.offsets:
            if len(self.index):
                self.index.clear()
            return None
        return self.index.next_due_ms(self.offsets.__contains__)

    def snapshot(self) -> HeldSnapshot:
        return HeldSnapshot(self.offsets.chunks(), self.index.runs())

    @classmethod
    def restore(cls, snapshot: HeldSnapshot) -> HeldBack:
        return cls(OffsetSet.from_chunks(snapshot.chunks), DueIndex.from_runs(snapshot.runs))
