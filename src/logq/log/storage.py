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
class SealedSegment:
    """A segment that takes no more appends: what an archive copies."""

    base_offset: int
    next_offset: int
    size_bytes: int
    max_timestamp: int


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
    def readable_offset(self) -> int:
        """Readers see the offsets below this and reads stop here: the
        durable end under `fsync: always`, the written end under a policy
        that trades durability away (`interval`, `never`) and in memory."""
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

    def delete_before(self, offset: int) -> RetentionResult:
        """Delete the sealed segments that lie wholly below `offset`."""
        ...

    @property
    def opened(self) -> bool:
        """Whether the log was opened (recovered) since it was made."""
        ...

    def stored_figures(self) -> tuple[int, int, int]:
        """(first offset, next offset, size in bytes), for counting; a log
        not opened may answer from its files without opening."""
        ...

    def ensure_open(self) -> None:
        """Open and recover the log now, if no use did it yet (blocking)."""
        ...

    def apply_retention(self, now_ms: int) -> RetentionResult:
        """Delete whole old segments past the time or size retention."""
        ...

    def sealed_segments(self) -> list[SealedSegment]:
        """Every segment but the active one, oldest first."""
        ...

    def read_sealed(self, base_offset: int) -> bytes:
        """The stored bytes of the sealed segment starting at `base_offset`
        (its batches as stored, offsets and epochs in); OffsetOutOfRangeError
        if no sealed segment starts there (retention deleted it)."""
        ...

    def resume_at(self, offset: int, why: str) -> bool:
        """Go on at `offset` when the log ends below it although offsets up
        to it were handed out before (`why`): the range between is reported
        lost to damage and never given again. False when nothing changed."""
        ...

    def retention_idle(self, now_ms: int) -> bool:
        """True when retention would delete nothing now, known without
        opening the log (False: call `apply_retention` to see)."""
        ...

    def flush_if_due(self) -> None:
        """Under `interval`, fsync when the interval has passed; the owner calls
        this on a timer so quiet logs are flushed too."""
        ...

    @property
    def leader_epoch(self) -> int:
        """The epoch stamped on every batch appended now (0 on a new log);
        kept across restarts, never lowered."""
        ...

    def set_leader_epoch(self, epoch: int) -> None:
        """Make `epoch` (0 .. 2**31 - 1) the log's leader epoch; the same
        epoch again changes nothing, a lower one raises StaleEpochError
        (FENCED), one out of range InvalidEpochError (BADARG)."""
        ...

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch: (the largest epoch of a stored batch
        that is <= `epoch`, the offset where the next epoch after it begins,
        or the log end when it is the latest).

        A follower whose last batch has epoch E asks its leader for E and
        truncates to the offset given (to its own end offset for the epoch
        answered, when that is lower). Edge cases:
        - `epoch` below the first epoch the log holds, or a log with no epoch
          (nothing appended since it was new or truncated fully): (-1, -1).
        - `epoch` above the latest stored epoch (a follower ahead, or the log's
          leader epoch set with no batch in it yet): (latest epoch, log end).
        - an epoch with no batches of its own between two others: the epoch
          below it and the start of the one above.
        - retention moves the first epoch's start up to the log start; after
          truncation the log end bounds the last epoch.
        """
        ...

    def append_replica(self, data: bytes) -> AppendResult:
        """Store one or more whole batches as a leader stored them, byte for
        byte, offsets and epochs kept: the first must start at the log end,
        each follow the one before, no epoch go below the log's last one.
        Headers and CRC32C are checked, bodies are not decompressed; any
        failure stores none of them (BADBATCH, CORRUPT, FENCED). Rolls,
        indexes and honours the fsync policy as `append` does; the log's
        leader epoch rises to the last batch's when that is higher."""
        ...

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Remove every batch and start empty at `offset` (first, next and
        durable offsets all `offset`), epoch cache cleared, leader epoch kept."""
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
