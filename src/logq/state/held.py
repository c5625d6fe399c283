"""Delayed messages a group holds back: which offsets, and when each is due.

A group that reaches a delayed message before its time holds it back, as a
first delivery, until then. With every message its own due time there may be
millions of them, so no Python object stands for one, and no step of Python
code runs for one where a loop in C can do the work:

- `OffsetSet` says which offsets are held: offsets cut into chunks of 65,536
  (by their high bits), each chunk a sorted `array('H')` of its low 16 bits
  (2 bytes an offset) or, once it holds more than 4,096, a bitmap of 8 KiB
  (a bit an offset), as roaring bitmaps do. Membership, adding and removing a
  range cost a chunk lookup and a bisect; a run of consecutive offsets is set
  in a bitmap a byte at a time.
- `DueIndex` finds them by due time: (due_ms, offset) pairs in sorted runs,
  each pair kept as its distances from the run's two bases in two
  `array('I')` (8 bytes a pair; 16 when a run spans more than 2^32 ms or
  offsets), with a heap of the runs' heads, so the next due is the heap's
  top and taking the due ones costs O(log runs) each. New pairs gather in an
  inbox of fixed room (made once, reused) that becomes a run once it is
  full or once something in it comes due: sorting `INBOX_MAX` pairs is the
  longest step, well under a millisecond or two, so no hold and no due time
  holds the event loop long. Runs are not merged: a million pairs make a
  heap of about 250 runs.

The index never deletes: a pair whose offset is no longer held (leased when
it came due, settled, lost) is dropped when it reaches the top. `HeldBack`
joins the two; the set decides what is held, the index when.

Snapshots write the arrays as they lie in memory (little-endian), so
taking one copies nothing per message and restoring one is a copy of bytes.
"""

from __future__ import annotations

import bisect
import heapq
import operator
import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from itertools import islice, repeat

import msgspec

from logq.state.ranges import Range, ranges_of

Buffer = bytes | memoryview

CHUNK_BITS = 16
CHUNK_SIZE = 1 << CHUNK_BITS
LOW_MASK = CHUNK_SIZE - 1
ARRAY_MAX = 4096  # more offsets than this in a chunk: a bitmap (8 KiB) is smaller
BITMAP_BYTES = CHUNK_SIZE // 8
INBOX_MAX = 4096  # pairs gathered before they are sorted into a run (about 1 ms of sorting)
PAIR_MASK = (1 << 64) - 1
NARROW_MAX = (1 << 32) - 1  # distances up to this are kept in 4 bytes
_TYPECODE_OF_WIDTH = {4: "I", 8: "q"}
assert array("I").itemsize == 4 and array("q").itemsize == 8


def _little_endian(values: array) -> bytes:  # type: ignore[type-arg]
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _little_endian_view(values: array, start: int = 0) -> memoryview:  # type: ignore[type-arg]
    """`values[start:]` as little-endian bytes: a view of the array itself
    where the machine is little-endian (for arrays that never change size)."""
    if sys.byteorder == "big":
        return memoryview(_little_endian(values[start:]))
    view = memoryview(values).cast("B")
    return view[start * values.itemsize :] if start else view


def _from_little_endian(typecode: str, data: Buffer) -> array:  # type: ignore[type-arg]
    values = array(typecode)
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def _typecode_of_width(width: int) -> str:
    if width not in _TYPECODE_OF_WIDTH:
        raise ValueError(f"a run of {width}-byte values (4 or 8 expected)")
    return _TYPECODE_OF_WIDTH[width]


def pack_offsets(values: Iterable[int]) -> bytes:
    """Offsets or times as little-endian int64s (how a `Held` event carries them)."""
    return _little_endian(array("q", values))


def unpack_offsets(data: Buffer) -> array:  # type: ignore[type-arg]
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
        if values and values[0] < 0:
            raise ValueError(f"a negative offset: {values[0]}")
        added = start = 0
        while start < len(values):
            key = values[start] >> CHUNK_BITS
            end = bisect.bisect_left(values, (key + 1) << CHUNK_BITS, start)
            added += self._add_to_chunk(
                key, list(map(LOW_MASK.__and__, islice(values, start, end)))
            )
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
            _set_bits(bitmap, chunk)
            self._chunks[key] = bitmap
            return len(chunk) - before
        return _set_bits(chunk, lows)

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
                cleared = _clear_bits(chunk, low, high)
                if not cleared:
                    continue  # none of them held (a lease of fresh offsets, most often)
                removed += cleared
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

    def chunks(self) -> list[tuple[int, bool, memoryview]]:
        """(key, is a bitmap, contents little-endian) of every chunk, by key
        (copies: a chunk changes size as offsets come and go)."""
        return [
            (
                key,
                isinstance(chunk, bytearray),
                memoryview(bytes(chunk) if isinstance(chunk, bytearray) else _little_endian(chunk)),
            )
            for key in self._keys
            for chunk in (self._chunks[key],)
        ]

    @classmethod
    def from_chunks(cls, chunks: Iterable[tuple[int, bool, Buffer]]) -> OffsetSet:
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


def _set_bits(bitmap: bytearray, lows: Sequence[int]) -> int:
    """Set the bits `lows` (ascending) of `bitmap`, a run of consecutive
    ones a byte at a time; returns how many were not set before."""
    first, last = lows[0] >> 3, (lows[-1] >> 3) + 1
    before = int.from_bytes(bitmap[first:last], "little").bit_count()
    for start, end in ranges_of(lows):
        _fill_bits(bitmap, start, end)
    return int.from_bytes(bitmap[first:last], "little").bit_count() - before


def _fill_bits(bitmap: bytearray, low: int, high: int) -> None:
    """Set bits [low, high) of `bitmap`: the whole bytes among them at once."""
    while low < high and low & 7:
        bitmap[low >> 3] |= 1 << (low & 7)
        low += 1
    whole_end = high >> 3
    if low >> 3 < whole_end:
        bitmap[low >> 3 : whole_end] = b"\xff" * (whole_end - (low >> 3))  # same length
        low = whole_end << 3
    while low < high:
        bitmap[low >> 3] |= 1 << (low & 7)
        low += 1


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
    """(due_ms, offset) pairs sorted by due time, then offset. Each is kept
    as its distance from the run's bases, in 4 bytes when every distance
    fits 32 bits (due times less than 49 days apart, a run's offsets:
    nearly always), else in 8 with the bases 0. `position` is the first pair not taken yet.
    A run never changes once made (snapshots write its arrays as they lie)."""

    __slots__ = ("due_base", "dues", "offset_base", "offsets", "position")

    def __init__(self, due_base: int, dues: array, offset_base: int, offsets: array) -> None:  # type: ignore[type-arg]
        self.due_base = due_base
        self.dues = dues
        self.offset_base = offset_base
        self.offsets = offsets
        self.position = 0

    def __len__(self) -> int:
        return len(self.dues) - self.position

    def pair(self, position: int, run_id: int) -> tuple[int, int, int]:
        """(due_ms, offset, run_id) of the pair at `position`: a heap entry."""
        return (
            self.due_base + self.dues[position],
            self.offset_base + self.offsets[position],
            run_id,
        )

    def memory_bytes(self) -> int:
        return self.dues.itemsize * len(self.dues) + self.offsets.itemsize * len(self.offsets)


Int64s = array | memoryview  # type: ignore[type-arg]


def _narrowed(
    values: Int64s,
    low: int,
    high: int,
    room: array | None = None,  # type: ignore[type-arg]
) -> tuple[int, array]:  # type: ignore[type-arg]
    """(base, the distances of int64 `values` from it) in 4 bytes each when
    they fit (in `room`, an array('I') of their length, when given), else
    (0, the values as an array('q')). When every value has the same high 32
    bits (nearly always) the distances are the low halves, copied in one C
    loop."""
    if low >> 32 == high >> 32:
        narrow = room if room is not None else array("I", [0]) * len(values)
        halves = memoryview(values).cast("B").cast("I")  # (low, high) halves of each
        memoryview(narrow)[:] = halves[0 if sys.byteorder == "little" else 1 :: 2]
        return low >> 32 << 32, narrow
    if high - low <= NARROW_MAX:
        return low, array("I", map(operator.sub, values, repeat(low)))
    return 0, array("q", values)


def _run_of(dues: Int64s, offsets: Int64s, rooms: tuple[array, array] | None = None) -> _Run:  # type: ignore[type-arg]
    """A run of int64 pairs already sorted (by due time, then offset), in
    `rooms` (two array('I') of their length) when the distances fit."""
    due_room, offset_room = rooms if rooms is not None else (None, None)
    due_base, narrow_dues = _narrowed(dues, dues[0], dues[-1], due_room)
    offset_base, narrow_offsets = _narrowed(offsets, min(offsets), max(offsets), offset_room)
    return _Run(due_base, narrow_dues, offset_base, narrow_offsets)


def _sorted_run(dues: Int64s, offsets: Int64s) -> _Run:
    """A run of the int64 pairs, sorted. Pairs that come in due order (a
    steady delay, or due times rising with offsets) are taken as they are;
    others are packed into one integer each and sorted, all in C loops.
    The run's own arrays are made first, before any the sorting makes and
    drops, so those do not leave holes between the arrays that stay."""
    rooms = (array("I", [0]) * len(dues), array("I", [0]) * len(dues))
    if not all(map(operator.lt, dues, islice(dues, 1, None))):
        keys = sorted(map(operator.or_, map(operator.lshift, dues, repeat(64)), offsets))
        dues = array("q", map(operator.rshift, keys, repeat(64)))
        offsets = array("q", map(operator.and_, keys, repeat(PAIR_MASK)))
    return _run_of(dues, offsets, rooms)


def _int64s(values: Sequence[int]) -> array:  # type: ignore[type-arg]
    if isinstance(values, array) and values.typecode == "q":
        return values
    return array("q", values)


PackedRun = tuple[int, int, memoryview, int, int, memoryview]


class DueIndex:
    """(due_ms, offset) pairs, the earliest first; pairs are dropped only
    from the top (see the module's comment)."""

    __slots__ = (
        "_heap",
        "_inbox_count",
        "_inbox_dues",
        "_inbox_min",
        "_inbox_offsets",
        "_next_id",
        "_runs",
    )

    def __init__(self) -> None:
        # the inbox: INBOX_MAX pairs' room, made at the first add and reused
        self._inbox_dues: array | None = None  # type: ignore[type-arg]
        self._inbox_offsets: array | None = None  # type: ignore[type-arg]
        self._inbox_count = 0
        self._inbox_min: int | None = None
        self._runs: dict[int, _Run] = {}
        self._heap: list[tuple[int, int, int]] = []  # (due_ms, offset, run id) of each run's head
        self._next_id = 0

    def __len__(self) -> int:
        """Pairs kept, including those no longer held and not yet dropped."""
        return self._inbox_count + sum(len(run) for run in self._runs.values())

    def run_count(self) -> int:
        return len(self._runs)

    def memory_bytes(self) -> int:
        """Bytes the pairs' arrays take (the inbox's room included)."""
        inbox = 0 if self._inbox_dues is None else 16 * INBOX_MAX
        return inbox + sum(run.memory_bytes() for run in self._runs.values())

    def add(self, dues: Sequence[int], offsets: Sequence[int]) -> None:
        """Add the pairs (`dues[i]`, `offsets[i]`), in any order."""
        if len(dues) != len(offsets):
            raise ValueError("more due times than offsets or fewer")
        if not len(dues):
            return
        dues, offsets = _int64s(dues), _int64s(offsets)
        earliest = min(dues)
        if earliest < 0 or min(offsets) < 0:
            raise ValueError("a due time before the epoch, or a negative offset")
        start = 0
        while start < len(dues):
            if self._inbox_dues is None or self._inbox_offsets is None:
                self._inbox_dues = array("q", bytes(8 * INBOX_MAX))
                self._inbox_offsets = array("q", bytes(8 * INBOX_MAX))
            at = self._inbox_count
            end = min(len(dues), start + INBOX_MAX - at)
            self._inbox_dues[at : at + end - start] = dues[start:end]  # same length: no resize
            self._inbox_offsets[at : at + end - start] = offsets[start:end]
            if self._inbox_min is None or earliest < self._inbox_min:
                self._inbox_min = earliest
            self._inbox_count += end - start
            start = end
            if self._inbox_count == INBOX_MAX:
                self._seal_inbox()
                if start < len(dues):
                    earliest = min(dues[start:])  # of what goes into the next inbox

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def _seal_inbox(self) -> None:
        count = self._inbox_count
        if not count or self._inbox_dues is None or self._inbox_offsets is None:
            return
        # views of the inbox, not copies (it never changes size)
        run = _sorted_run(
            memoryview(self._inbox_dues)[:count], memoryview(self._inbox_offsets)[:count]
        )
        self._inbox_count, self._inbox_min = 0, None
        self._push(run)

    def _push(self, run: _Run) -> None:
        if not len(run):
            return
        self._next_id += 1
        self._runs[self._next_id] = run
        heapq.heappush(self._heap, run.pair(run.position, self._next_id))

    def _pop_top(self) -> None:
        _, _, run_id = self._heap[0]
        run = self._runs[run_id]
        run.position += 1
        if run.position < len(run.dues):
            heapq.heapreplace(self._heap, run.pair(run.position, run_id))
        else:
            heapq.heappop(self._heap)
            del self._runs[run_id]

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
                heapq.heapreplace(heap, run.pair(position, run_id))
            else:
                heapq.heappop(heap)
            if held(offset):
                found.append(offset)
        return found

    # -- snapshots -----------------------------------------------------------------------

    def packed_runs(self) -> list[PackedRun]:
        """Every pair not taken yet, as runs `(due base, due width, due
        distances, offset base, offset width, offset distances)`: the
        distances little-endian, `width` bytes each (4 or 8). The inbox is
        sorted into a run first; the arrays go out as they lie, not copied."""
        self._seal_inbox()
        return [
            (
                run.due_base,
                run.dues.itemsize,
                _little_endian_view(run.dues, run.position),
                run.offset_base,
                run.offsets.itemsize,
                _little_endian_view(run.offsets, run.position),
            )
            for run in self._runs.values()
        ]

    @classmethod
    def restore(
        cls,
        packed: Iterable[tuple[int, int, Buffer, int, int, Buffer]],
        int64_runs: Iterable[tuple[Buffer, Buffer]] = (),
    ) -> DueIndex:
        """The index from `packed_runs()` (each run sorted as written), and
        from the int64 runs snapshots of earlier releases hold."""
        made = cls()
        for due_base, due_width, dues_data, offset_base, offset_width, offsets_data in packed:
            dues = _from_little_endian(_typecode_of_width(due_width), dues_data)
            offsets = _from_little_endian(_typecode_of_width(offset_width), offsets_data)
            if len(dues) != len(offsets):
                raise ValueError("a run of due times and offsets of different lengths")
            made._push(_Run(due_base, dues, offset_base, offsets))
        for dues_data, offsets_data in int64_runs:
            dues, offsets = unpack_offsets(dues_data), unpack_offsets(offsets_data)
            if len(dues) != len(offsets):
                raise ValueError("a run of due times and offsets of different lengths")
            if dues:
                made._push(_run_of(dues, offsets))
        return made


class HeldSnapshot(msgspec.Struct, array_like=True):
    """Held offsets as snapshots store them: the set's chunks, the index's
    runs (`runs`: int64 pairs, as earlier releases wrote them, now empty;
    `packed_runs`: `DueIndex.packed_runs()`). The bytes are views: decoded,
    of the snapshot record itself, so a restore copies each array once, with
    nothing made and dropped between the arrays it keeps."""

    chunks: list[tuple[int, bool, memoryview]]
    runs: list[tuple[memoryview, memoryview]]
    packed_runs: list[PackedRun] = []


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
        """Hold `offsets[i]` until `dues[i]` (none of them held already);
        bad input (a negative due time or offset) changes nothing."""
        self.index.add(dues, offsets)  # checks both first
        self.offsets.add(offsets)

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
            if len(self.index) or self.index.memory_bytes():
                self.index.clear()  # the inbox's room goes too
            return None
        return self.index.next_due_ms(self.offsets.__contains__)

    def snapshot(self) -> HeldSnapshot:
        """The state as a snapshot stores it; views of the arrays themselves
        where they can be: encode it before anything else changes them."""
        return HeldSnapshot(self.offsets.chunks(), [], self.index.packed_runs())

    @classmethod
    def restore(cls, snapshot: HeldSnapshot) -> HeldBack:
        return cls(
            OffsetSet.from_chunks(snapshot.chunks),
            DueIndex.restore(snapshot.packed_runs, snapshot.runs),
        )
