"""Delayed and scheduled messages: held back from groups until their time.

A delayed message is stored in its partition at once, like any other (so
it is durable at once and has its id at once), in a batch marked delayed
(attribute bit 7) whose record timestamps are the times the records become
deliverable. Time-based replay therefore finds it at the time it became
deliverable.

Groups never see it early. When a receive reaches such a record before its
time, the group's state takes it back as pending, deliverable from its
time, as a first delivery: the same durable state as a nack with a delay,
journaled and recovered on restart (due ones go out at once, future ones at
their time; none is lost or delivered twice to a group). The ordering rule:
a delayed message is delivered when it is due, not in offset order; the
messages after it in its partition do not wait for it, in ordered groups
too.

Memory follows what groups hold back (one entry per run of consecutive
records due within the same 10 ms step), never the log: the partition log is
the durable delay store.
The broker's hierarchical timing wheel (wheel.py) holds a wake-up per
held-back run, so receives waiting on the topic wake when it comes due.
"""

from __future__ import annotations

from logq.errors import BadArgumentError
from logq.log.batch import DELAYED, HEADER_SIZE, decode_timestamps, iter_headers, read_header

MAX_DELAY_MS_DEFAULT = 7 * 86_400_000
# Held-back records are grouped by due time rounded up to this: never early,
# at most this late, and one pending run per step instead of per message when
# every message has its own time.
DUE_STEP_MS = 10


def held_back(data: bytes, start: int, end: int, now_ms: int) -> dict[int, list[int]]:
    """due time (rounded up to DUE_STEP_MS) -> offsets in [start, end) of the
    batches in `data` not deliverable yet."""
    held: dict[int, list[int]] = {}
    for position, header in iter_headers(data):
        if not header.attributes & DELAYED or header.max_timestamp <= now_ms:
            continue  # the common case: one comparison per batch
        low, high = max(start, header.base_offset), min(end, header.next_offset)
        if low >= high:
            continue
        times = decode_timestamps(data, position)
        base = header.base_offset
        for offset in range(low, high):
            due = times[offset - base]
            if due > now_ms:
                step = -(-due // DUE_STEP_MS) * DUE_STEP_MS
                held.setdefault(step, []).append(offset)
    return held


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
