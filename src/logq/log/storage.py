"""The storage interface every partition log implements, and its results.

The broker talks to `PartitionLog` only; `FileLog` keeps batches in segment
files, `MemoryLog` in memory (embedded use and tests), and later backends
(PostgreSQL, replicated logs) join behind the same Protocol and the same
contract test suite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from logq.log.errors import LogError
from logq.log.verify import DamagedRange


@dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int
    last_offset: int

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Whole stored batches, ready to send as they are.

    `data` starts with the batch holding the requested offset, so it may
    begin before it (`first_offset`); readers skip the records they did not
    ask for. Empty `data` means the requested offset is the readable end.
    """

    data: bytes
    first_offset: int
    next_offset: int
    batch_count: int
    record_count: int
    log_end_offset: int  # the readable end of the log when the read happened


@dataclass(frozen=True, slots=True)
class RetentionResult:
    deleted_segments: int
    deleted_bytes: int
    first_offset: int


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening a log found and did; also exported as metrics."""

    segments: int = 0
    scanned_bytes: int = 0
    scanned_batches: int = 0
    cut_bytes: int = 0
    cut_reason: str | None = None
    indexes_rebuilt: int = 0
    duration_ms: float = 0.0


class PartitionLog(Protocol):
    """One partition's append-only log of record batches."""

    @property
    def first_offset(self) -> int:
        """The lowest offset still stored (the log start)."""
        ...

    @property
    def next_offset(self) -> int:
        """The offset the next appended record will get (the log end)."""
        ...

    @property
    def durable_offset(self) -> int:
        """Every offset below this is on disk."""
        ...

    @property
    def size_bytes(self) -> int: ...

    @property
    def segment_count(self) -> int: ...

    @property
    def recovery(self) -> RecoveryReport: ...

    def append(self, batch: bytes) -> AppendResult:
        """Validate, assign offsets and store one batch, honouring the fsync
        policy: under `always` it returns once the batch is durable."""
        ...

    def write(self, batch: bytes) -> AppendResult:
        """Like `append` but never waits for durability; pair with `sync`."""
        ...

    def append_many(self, batches: Sequence[bytes]) -> list[AppendResult | LogError]:
        """Append each batch in order, with one durability wait for them all
        (one fsync under `always`): each gets its result, or the LogError
        that refused it (the others are stored). An fsync failure raises."""
        ...

    def write_copy(self, batch: bytes) -> AppendResult:
        """Write a batch that already carries its offsets, at the log's end."""
        ...

    @property
    def needs_commit(self) -> bool:
        """True when a write waits for a commit (the commit journal's fsync)
        to be durable; False when it is as durable as it gets once written
        (memory) or its policy makes it durable later (interval, never)."""
        ...

    def write_point(self) -> tuple[int, int, int]:
        """Where the writes so far end, for `mark_durable`."""
        ...

    def mark_durable(self, point: tuple[int, int, int]) -> None:
        """Readers may see up to `point`: a commit made it durable."""
        ...

    def sync(self, up_to_offset: int | None = None) -> None:
        """Return once every offset below `up_to_offset` (default: all written)
        is durable. Concurrent callers share one fsync (group commit)."""
        ...

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        """Whole batches from the one holding `offset`, about `max_bytes` of
        them (at least one batch, so a reader always progresses)."""
        ...

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The first offset whose record time is >= `timestamp_ms`, or None."""
        ...

    def truncate_to(self, offset: int) -> int:
        """Remove the batch holding `offset` and everything after; return the new end."""
        ...

    def roll(self) -> None:
        """Seal the active segment and start a new one (no-op when empty)."""
        ...

    def apply_retention(self, now_ms: int) -> RetentionResult:
        """Delete whole old segments past the time or size retention."""
        ...

    def flush_if_due(self) -> None:
        """Under `interval`, fsync when the interval has passed; the owner calls
        this on a timer so quiet logs are flushed too."""
        ...

    def statistics(self) -> dict[str, int | float]: ...

    def damaged_ranges(self) -> list[DamagedRange]:
        """Ranges of offsets found lost to damage on disk, lowest first."""
        ...

    def scrub(self, after_base: int, pace: Callable[[int], None] | None = None) -> int | None:
        """Verify the first sealed segment past `after_base` (calling `pace`
        with the bytes checked as it goes); its base, or None past the last."""
        ...

    def close(self) -> None: ...


def write_each(
    write: Callable[[bytes], AppendResult], batches: Sequence[bytes]
) -> tuple[list[AppendResult | LogError], int | None]:
    """`write` each batch in order: the results (or the LogError refusing a
    batch), and the offset after the last one stored (None if none was)."""
    results: list[AppendResult | LogError] = []
    end: int | None = None
    for batch in batches:
        try:
            result = write(batch)
        except LogError as error:
            results.append(error)
            continue
        results.append(result)
        end = result.next_offset
    return results, end
