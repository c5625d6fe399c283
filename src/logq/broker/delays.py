"""Delayed and scheduled messages: held back from groups until their time.

A delayed message is stored in its partition at once, like any other (so
it is durable at once and has its id at once), in a batch marked delayed
(attribute bit 7) whose record timestamps are the times the records become
deliverable. Time-based replay therefore finds it at the time it became
deliverable.

Groups never see it early. When a receive reaches such a record before its
time, the group holds it back until then, as a first delivery: a `Held`
event (state/events.py) journaled with the group's other delivery events
and recovered on restart (due ones go out at once, future ones at their
time; none is lost or delivered twice to a group). The ordering rule: a
delayed message is delivered when it is due, not in offset order; the
messages after it in its partition do not wait for it, in ordered groups
too.

Memory follows what groups hold back, never the log, and no Python object
stands for a held message: the group's `HeldBack` (state/held.py) keeps
about 8 to 10 bytes per message in arrays, and finds the next due one at
the top of a heap of sorted runs; the partition log is the durable store of
the messages themselves. A receive waiting on the topic sleeps until the
earliest due time of its group; a hold-back that brings that time earlier
wakes the waiting receives to sleep again until the new time. The broker's
timing wheel (wheel.py) holds one wake-up per group and partition, for its
earliest due message, as a second way to wake them.
"""

from __future__ import annotations

from itertools import compress

from logq.errors import BadArgumentError
from logq.log.batch import DELAYED, HEADER_SIZE, decode_timestamps, iter_headers, read_header

MAX_DELAY_MS_DEFAULT = 7 * 86_400_000


def held_back(data: bytes, start: int, end: int, now_ms: int) -> tuple[list[int], list[int]]:
    """The offsets in [start, end) of the batches in `data` not deliverable
    yet, ascending, and the due time of each."""
    offsets: list[int] = []
    dues: list[int] = []
    for position, header in iter_headers(data):
        if not header.attributes & DELAYED or header.max_timestamp <= now_ms:
            continue  # the common case: one comparison per batch
        low, high = max(start, header.base_offset), min(end, header.next_offset)
        if low >= high:
            continue
        base = header.base_offset
        times = decode_timestamps(data, position)[low - base : high - base]
        later = list(map(now_ms.__lt__, times))  # the work per record in C loops
        offsets.extend(compress(range(low, high), later))
        dues.extend(compress(times, later))
    return offsets, dues


def check_delay(batch: bytes, now_ms: int, max_delay_ms: int) -> None:
    """Refuse a delayed batch due further ahead than the topic allows (O(1))."""
    if len(batch) < HEADER_SIZE:
        return  # the log refuses it with the right error
    header = read_header(batch)
    if header.attributes & DELAYED and header.max_timestamp - now_ms > max_delay_ms:
        raise BadArgumentError(
            f"a message is due in {header.max_timestamp - now_ms} ms, "
            f"past the topic's max_delay of {max_delay_ms} ms"
        )
