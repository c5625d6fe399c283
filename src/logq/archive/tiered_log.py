"""A partition log that reaches past its local disk into the archive.

`TieredLog` is the partition log the broker uses for a topic with
`archive: true`: it is the local log in everything (appends, the commit
journal, durability, epochs, truncation), except that its start is the
topic's start, which may lie in the archive, and that reads and time
lookups below the local start are answered from the archive. So every
reader of the broker (groups that fall behind, peek, replay by offset and
by time, raw reads, the trace, the dashboard) reaches archived data without
knowing it is there.

Reads of a log are blocking calls made on the broker's storage threads; an
archive read is asynchronous, so it is handed to the event loop and waited
for there (`RemoteReads`). It must never be made on the loop's own thread,
which would wait for itself: that raises instead. The archive bounds each
of its store requests; a read that still takes longer than
REMOTE_READ_TIMEOUT_S is abandoned as the store being out of reach
(ArchiveUnavailableError, UNAVAILABLE), so no storage thread waits longer.

Retention of an archived partition is the archiver's (three horizons, see
retention.py): `apply_retention` here deletes nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from logq.archive.errors import ArchiveUnavailableError
from logq.log import (
    AppendResult,
    DamagedRange,
    LogError,
    OffsetOutOfRangeError,
    PartitionLog,
    ReadResult,
    RecoveryReport,
    RetentionResult,
    SealedSegment,
)
from logq.log.reading import cut_whole_batches

REMOTE_READ_TIMEOUT_S = 120.0
T = TypeVar("T")


class RemoteReads(Protocol):
    """The archive as a partition's log sees it (async: run on the loop)."""

    def start_offset(self, local_first: int) -> int: ...

    async def read(self, offset: int, max_bytes: int) -> bytes | None: ...

    async def offset_for_time(self, timestamp_ms: int) -> int | None: ...


class TieredLog:
    """The local log, with the archive below it (see the module doc)."""

    def __init__(
        self, local: PartitionLog, remote: RemoteReads, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.local = local
        self.remote = remote
        self._loop = loop

    def _wait(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise LogError("an archive read was made on the event loop's thread")
        future = asyncio.run_coroutine_threadsafe(make(), self._loop)
        try:
            return future.result(REMOTE_READ_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ArchiveUnavailableError(
                f"the archive did not answer within {REMOTE_READ_TIMEOUT_S:g} s"
            ) from None

    # -- what differs: the start, reads and time lookups below the local disk -------------

    @property
    def first_offset(self) -> int:
        return self.remote.start_offset(self.local.first_offset)

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        local_first = self.local.first_offset
        if offset >= local_first:
            return self.local.read(offset, max_bytes)
        if offset < self.first_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside [{self.first_offset}, {self.next_offset}]"
            )
        data = self._wait(lambda: self.remote.read(offset, max_bytes))
        if not data:
            raise OffsetOutOfRangeError(f"offset {offset} is in no archived segment")
        return cut_whole_batches(data, self.local.next_offset, source="the archive")

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        local_first = self.local.first_offset
        if self.first_offset < local_first:
            found = self._wait(lambda: self.remote.offset_for_time(timestamp_ms))
            if found is not None and found < local_first:
                return found
        return self.local.offset_for_time(timestamp_ms)

    def apply_retention(self, now_ms: int) -> RetentionResult:
        return RetentionResult(0, 0, self.first_offset)

    def retention_idle(self, now_ms: int) -> bool:
        return True  # retention here is the archive's, never the log's own

    def stored_figures(self) -> tuple[int, int, int]:
        first, end, stored = self.local.stored_figures()
        return self.remote.start_offset(first), end, stored

    @property
    def opened(self) -> bool:
        return self.local.opened

    def ensure_open(self) -> None:
        self.local.ensure_open()

    # -- the local log in everything else -------------------------------------------------

    @property
    def next_offset(self) -> int:
        return self.local.next_offset

    @property
    def durable_offset(self) -> int:
        return self.local.durable_offset

    @property
    def readable_offset(self) -> int:
        return self.local.readable_offset

    @property
    def size_bytes(self) -> int:
        return self.local.size_bytes

    @property
    def segment_count(self) -> int:
        return self.local.segment_count

    @property
    def recovery(self) -> RecoveryReport:
        return self.local.recovery

    def append(self, batch: bytes) -> AppendResult:
        return self.local.append(batch)

    def write(self, batch: bytes) -> AppendResult:
        return self.local.write(batch)

    def append_many(self, batches: Sequence[bytes]) -> list[AppendResult | LogError]:
        return self.local.append_many(batches)

    def write_copy(self, batch: bytes) -> AppendResult:
        return self.local.write_copy(batch)

    @property
    def needs_commit(self) -> bool:
        return self.local.needs_commit

    def write_point(self) -> tuple[int, int, int]:
        return self.local.write_point()

    def mark_durable(self, point: tuple[int, int, int]) -> None:
        self.local.mark_durable(point)

    def sync(self, up_to_offset: int | None = None) -> None:
        self.local.sync(up_to_offset)

    def truncate_to(self, offset: int) -> int:
        return self.local.truncate_to(offset)

    def roll(self) -> None:
        self.local.roll()

    def delete_before(self, offset: int) -> RetentionResult:
        return self.local.delete_before(offset)

    def sealed_segments(self) -> list[SealedSegment]:
        return self.local.sealed_segments()

    def read_sealed(self, base_offset: int) -> bytes:
        return self.local.read_sealed(base_offset)

    def resume_at(self, offset: int, why: str) -> bool:
        return self.local.resume_at(offset, why)

    def flush_if_due(self) -> None:
        self.local.flush_if_due()

    @property
    def leader_epoch(self) -> int:
        return self.local.leader_epoch

    def set_leader_epoch(self, epoch: int) -> None:
        self.local.set_leader_epoch(epoch)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        return self.local.end_offset_for_epoch(epoch)

    def append_replica(self, data: bytes) -> AppendResult:
        return self.local.append_replica(data)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        self.local.truncate_fully_and_start_at(offset)

    def statistics(self) -> dict[str, int | float]:
        return self.local.statistics()

    def fsync_histogram(self) -> list[int]:
        histogram = getattr(self.local, "fsync_histogram", None)
        return list(histogram()) if histogram is not None else []

    def damaged_ranges(self) -> list[DamagedRange]:
        return self.local.damaged_ranges()

    def scrub(self, after_base: int, pace: Callable[[int], None] | None = None) -> int | None:
        return self.local.scrub(after_base, pace)

    def close(self) -> None:
        self.local.close()
