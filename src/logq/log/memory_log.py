"""A partition log held in memory, for the embedded broker and for tests.

It cuts segments, applies retention and truncates at exactly the points the
file log does (the same `policy` functions), so one contract test suite runs
against both. Everything written is immediately "durable": there is no disk.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from logq.log.batch import (
    STAMPED_HEAD_SIZE,
    BatchHeader,
    decode_timestamps,
    read_header,
    stamped_head,
    validate_batch,
)
from logq.log.config import LogConfig
from logq.log.epochs import LeaderEpochs, check_start_offset
from logq.log.errors import InvalidBatchError, LogClosedError, LogError, OffsetOutOfRangeError
from logq.log.policy import expired_prefix, should_roll
from logq.log.reading import cut_whole_batches
from logq.log.replica import check_replica_data
from logq.log.storage import (
    AppendResult,
    ReadResult,
    RecoveryReport,
    RetentionResult,
    SealedSegment,
    write_each,
)
from logq.log.verify import DamagedRange

NO_TIMESTAMP = -1


@dataclass(slots=True)
class MemorySegment:
    base_offset: int
    batches: list[bytes] = field(default_factory=list)
    batch_bases: list[int] = field(default_factory=list)
    next_offset: int = 0
    size: int = 0
    first_timestamp: int = NO_TIMESTAMP
    max_timestamp: int = NO_TIMESTAMP

    def __post_init__(self) -> None:
        self.next_offset = self.base_offset


class MemoryLog:
    """A partition log that keeps its segments as lists of batches."""

    def __init__(self, config: LogConfig | None = None, *, base_offset: int = 0) -> None:
        self.config = config or LogConfig()
        self._lock = threading.Lock()
        self._segments = [MemorySegment(base_offset)]
        self._bases = [base_offset]
        self._closed = False
        self._epochs = LeaderEpochs(None)
        self.recovery = RecoveryReport(segments=1)
        self._stats: dict[str, int | float] = dict.fromkeys(
            ("appended_batches", "appended_bytes", "appended_records", "invalid_batches"), 0
        )

    @property
    def first_offset(self) -> int:
        return self._segments[0].base_offset

    @property
    def next_offset(self) -> int:
        return self._segments[-1].next_offset

    @property
    def durable_offset(self) -> int:
        return self.next_offset

    @property
    def readable_offset(self) -> int:
        return self.next_offset  # written is durable as it gets

    @property
    def size_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError("memory log is closed")

    def write(self, batch: bytes) -> AppendResult:
        try:
            header = validate_batch(
                batch,
                size_bytes_max=self.config.batch_bytes_max,
                records_max=self.config.batch_records_max,
            )
        except Exception:
            self._stats["invalid_batches"] += 1
            raise
        with self._lock:
            self._check_open()
            active = self._segments[-1]
            if should_roll(active, header, self.config):
                active = self._roll_locked()
            base = active.next_offset
            head = stamped_head(header, base, self._epochs.stamp(base))
            self._store(active, head + bytes(batch[STAMPED_HEAD_SIZE:]), header, base)
        return AppendResult(base, base + header.record_count - 1)

    def write_copy(self, batch: bytes) -> AppendResult:
        """Memory loses nothing it was given: there is never a copy to take back."""
        raise InvalidBatchError("a memory log takes no copies back")

    @property
    def needs_commit(self) -> bool:
        return False  # durable as much as it will ever be once written

    def write_point(self) -> tuple[int, int, int]:
        return (self.next_offset, 0, 0)

    def mark_durable(self, point: tuple[int, int, int]) -> None:
        """Memory writes are as durable as they get when written."""

    def _store(self, active: MemorySegment, stored: bytes, header: BatchHeader, base: int) -> None:
        if active.next_offset == active.base_offset:
            active.first_timestamp = header.first_timestamp
        active.batches.append(stored)
        active.batch_bases.append(base)
        active.next_offset = base + header.record_count
        active.size += header.size
        active.max_timestamp = max(active.max_timestamp, header.max_timestamp)
        self._stats["appended_batches"] += 1
        self._stats["appended_bytes"] += header.size
        self._stats["appended_records"] += header.record_count

    def append_replica(self, data: bytes) -> AppendResult:
        batches = check_replica_data(data)
        start = batches[0][1].base_offset
        with self._lock:
            self._check_open()
            if start != self.next_offset:
                raise InvalidBatchError(
                    f"replica data starts at offset {start}, the log ends at {self.next_offset}"
                )
            self._epochs.note_replica([header for _, header in batches])
            for position, header in batches:
                active = self._segments[-1]
                if should_roll(active, header, self.config):
                    active = self._roll_locked()
                stored = bytes(data[position : position + header.size])
                self._store(active, stored, header, header.base_offset)
        return AppendResult(start, batches[-1][1].last_offset)

    @property
    def leader_epoch(self) -> int:
        return self._epochs.leader_epoch

    def set_leader_epoch(self, epoch: int) -> None:
        with self._lock:
            self._check_open()
            self._epochs.set_leader_epoch(epoch)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        with self._lock:
            self._check_open()
            return self._epochs.end_offset_for(epoch, self.next_offset)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        check_start_offset(offset)
        with self._lock:
            self._check_open()
            self._epochs.begin_fresh_start(offset)
            self._segments = [MemorySegment(offset)]
            self._bases = [offset]
            self._epochs.end_fresh_start()

    def append(self, batch: bytes) -> AppendResult:
        return self.write(batch)

    def append_many(self, batches: Sequence[bytes]) -> list[AppendResult | LogError]:
        return write_each(self.write, batches)[0]

    def sync(self, up_to_offset: int | None = None) -> None:
        self._check_open()

    def flush_if_due(self) -> None:
        """Nothing to flush in memory."""

    def resume_at(self, offset: int, why: str) -> bool:
        """Memory loses nothing behind the log's back: nothing to skip."""
        return False

    def _roll_locked(self) -> MemorySegment:
        new = MemorySegment(self._segments[-1].next_offset)
        self._segments.append(new)
        self._bases.append(new.base_offset)
        return new

    def roll(self) -> None:
        with self._lock:
            self._check_open()
            if self._segments[-1].batches:
                self._roll_locked()

    def _locate(self, offset: int) -> tuple[MemorySegment, int]:
        segment = self._segments[bisect.bisect_right(self._bases, offset) - 1]
        return segment, bisect.bisect_right(segment.batch_bases, offset) - 1

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        max_bytes = max(1, min(max_bytes, self.config.read_bytes_max))
        with self._lock:
            self._check_open()
            end = self.next_offset
            if not self.first_offset <= offset <= end:
                raise OffsetOutOfRangeError(
                    f"offset {offset} is outside [{self.first_offset}, {end}]"
                )
            if offset == end:
                return ReadResult(b"", offset, offset, 0, 0, end)
            segment, index = self._locate(offset)
            chosen = [segment.batches[index]]
            total = len(chosen[0])
            for batch in segment.batches[index + 1 :]:
                if total + len(batch) > max_bytes:
                    break
                chosen.append(batch)
                total += len(batch)
        return cut_whole_batches(b"".join(chosen), end, source="memory")

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        with self._lock:
            self._check_open()
            for segment in self._segments:
                if segment.max_timestamp < timestamp_ms:
                    continue
                for batch in segment.batches:
                    header = read_header(batch)
                    if header.max_timestamp < timestamp_ms:
                        continue
                    for index, stamp in enumerate(decode_timestamps(batch)):
                        if stamp >= timestamp_ms:
                            return header.base_offset + index
            return None

    def truncate_to(self, offset: int) -> int:
        with self._lock:
            self._check_open()
            if offset >= self.next_offset:
                return self.next_offset
            if offset < self.first_offset:
                raise OffsetOutOfRangeError(
                    f"cannot truncate to {offset}, below the log start {self.first_offset}"
                )
            segment, index = self._locate(offset)
            position = self._segments.index(segment)
            del self._segments[position + 1 :]
            del self._bases[position + 1 :]
            del segment.batches[index:]
            del segment.batch_bases[index:]
            segment.next_offset = segment.base_offset
            segment.size = 0
            segment.first_timestamp = segment.max_timestamp = NO_TIMESTAMP
            for batch in segment.batches:
                header = read_header(batch)
                if segment.next_offset == segment.base_offset:
                    segment.first_timestamp = header.first_timestamp
                segment.next_offset = header.next_offset
                segment.size += header.size
                segment.max_timestamp = max(segment.max_timestamp, header.max_timestamp)
            self._epochs.truncate_from_end(segment.next_offset)
            return segment.next_offset

    @property
    def opened(self) -> bool:
        return True  # nothing to open

    def ensure_open(self) -> None:
        return

    def stored_figures(self) -> tuple[int, int, int]:
        return self.first_offset, self.next_offset, self.size_bytes

    def retention_idle(self, now_ms: int) -> bool:
        return False  # nothing to open: apply_retention looks at once

    def apply_retention(self, now_ms: int) -> RetentionResult:
        with self._lock:
            self._check_open()
            count = expired_prefix(self._segments, now_ms, self.config)
            if count == len(self._segments):
                self._roll_locked()
            doomed = self._segments[:count]
            del self._segments[:count]
            del self._bases[:count]
            deleted_bytes = sum(segment.size for segment in doomed)
            self._epochs.truncate_from_start(self.first_offset)
            return RetentionResult(count, deleted_bytes, self.first_offset)

    def delete_before(self, offset: int) -> RetentionResult:
        with self._lock:
            self._check_open()
            count = bisect.bisect_right(self._bases[1:], offset)
            doomed = self._segments[:count]
            del self._segments[:count]
            del self._bases[:count]
            self._epochs.truncate_from_start(self.first_offset)
            return RetentionResult(count, sum(s.size for s in doomed), self.first_offset)

    def sealed_segments(self) -> list[SealedSegment]:
        with self._lock:
            return [
                SealedSegment(s.base_offset, s.next_offset, s.size, s.max_timestamp)
                for s in self._segments[:-1]
            ]

    def read_sealed(self, base_offset: int) -> bytes:
        with self._lock:
            self._check_open()
            for segment in self._segments[:-1]:
                if segment.base_offset == base_offset:
                    return b"".join(segment.batches)
        raise OffsetOutOfRangeError(f"no sealed segment starts at offset {base_offset}")

    def damaged_ranges(self) -> list[DamagedRange]:
        return []  # memory is never damaged behind the log's back

    def scrub(self, after_base: int, pace: Callable[[int], None] | None = None) -> int | None:
        return None  # nothing on disk to verify

    def statistics(self) -> dict[str, int | float]:
        stats = dict(self._stats)
        stats.update(
            segments=len(self._segments),
            size_bytes=self.size_bytes,
            first_offset=self.first_offset,
            next_offset=self.next_offset,
            durable_offset=self.durable_offset,
        )
        return stats

    def close(self) -> None:
        self._closed = True
