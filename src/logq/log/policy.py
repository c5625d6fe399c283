"""When to roll a segment and which segments retention deletes.

Shared by every storage so that the memory and file logs cut and forget
their data at exactly the same points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from logq.log.batch import BatchHeader
from logq.log.config import LogConfig

# Offsets inside a segment are stored relative to its base in 32 bits.
MAX_RELATIVE_OFFSET = 0xFFFF_FFFF


class SegmentShape(Protocol):
    @property
    def base_offset(self) -> int: ...
    @property
    def next_offset(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def first_timestamp(self) -> int: ...
    @property
    def max_timestamp(self) -> int: ...


def should_roll(active: SegmentShape, header: BatchHeader, config: LogConfig) -> bool:
    """Roll before appending `header`'s batch? Never for an empty segment."""
    if active.next_offset == active.base_offset:
        return False
    if active.size + header.size > config.segment_bytes:
        return True
    if active.next_offset + header.record_count - active.base_offset > MAX_RELATIVE_OFFSET:
        return True
    return header.max_timestamp - active.first_timestamp >= config.segment_ms


def expired_prefix(segments: Sequence[SegmentShape], now_ms: int, config: LogConfig) -> int:
    """How many of the oldest segments retention deletes now.

    By time: a segment goes once its newest record is older than
    `retention_ms` (the active one too; the caller then rolls first). By
    size, as Kafka does: the oldest sealed segment goes while the log would
    still hold at least `retention_bytes` without it. The two rules run
    until neither deletes more, so applying retention twice at the same
    time deletes nothing the second time (timestamps within a log need not
    grow: a segment that size retention uncovers may be expired by time).
    """
    count = 0
    while True:
        start = count
        if config.retention_ms is not None:
            for segment in segments[count:]:
                empty = segment.next_offset == segment.base_offset
                if empty or segment.max_timestamp >= now_ms - config.retention_ms:
                    break
                count += 1
        if config.retention_bytes is not None:
            excess = sum(segment.size for segment in segments[count:]) - config.retention_bytes
            for segment in segments[count:-1]:
                if excess - segment.size < 0:
                    break
                excess -= segment.size
                count += 1
        if count == start:
            return count
