"""The partition log on disk: an ordered list of segments, the last one active.

Writers append under one lock; durability is a separate step so that
concurrent appenders share an fsync (group commit): the first waiter becomes
the leader, notes how far the file has been written, fsyncs once, and every
append written before that point is durable with it.

Only the active segment can hold unsynced bytes (a roll fsyncs the segment
it seals), and a recovery checkpoint names a durable point inside it, so a
restart scans at most `checkpoint_interval_bytes` of batches, whatever the
size of the log. Readers see only durable data under `fsync: always`, so no
one ever reads a batch that a crash could take back.

A log is opened lazily: the constructor touches no file, and the first
operation that needs the log's state (a write, a read, an offset) opens and
recovers it. So a broker with tens of thousands of partitions starts without
visiting them, and closing a log that was never used costs nothing. Opening
is also cheap when the checkpoint names the end of the active segment (the
log was closed cleanly, or nothing was written after its last checkpoint):
nothing is scanned, fsynced or rewritten then. Segment and index files hold
no descriptor of their own: they are opened through the broker's descriptor
cache (file_cache.py) when an operation needs them.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from logq.log import durable
from logq.log.batch import (
    HEADER_SIZE,
    compute_crc,
    decode_timestamps,
    validate_batch,
)
from logq.log.checkpoint import (
    CHECKPOINT_NAME,
    Checkpoint,
    CheckpointDamagedError,
    drop_checkpoint,
    overwrite_checkpoint_unsynced,
    read_checkpoint,
    write_checkpoint,
)
from logq.log.config import FsyncPolicy, LogConfig
from logq.log.epochs import (
    EPOCH_FILE_NAME,
    EpochState,
    LeaderEpochs,
    check_start_offset,
    finish_fresh_start,
    read_epoch_file,
)
from logq.log.errors import (
    DamagedDataError,
    InvalidBatchError,
    LogClosedError,
    LogError,
    OffsetOutOfRangeError,
)
from logq.log.file_cache import FileCache
from logq.log.idle_files import (
    retention_due_from_files,
    segment_bases,
    stored_figures_from_files,
)
from logq.log.policy import MAX_RELATIVE_OFFSET, expired_prefix, should_roll
from logq.log.reading import cut_whole_batches
from logq.log.replica import check_replica_data
from logq.log.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    NO_TIMESTAMP,
    TIME_INDEX_SUFFIX,
    Segment,
    SuspectSegmentError,
    parse_segment_name,
)
from logq.log.storage import (
    AppendResult,
    ReadResult,
    RecoveryReport,
    RetentionResult,
    SealedSegment,
    write_each,
)
from logq.log.verify import (
    OPEN_END,
    DamagedRange,
    VerifyInterruptedError,
    verify_segment,
)

logger = logging.getLogger(__name__)


# A read that meets damage verifies the segment and tries again, this many times.
READ_VERIFY_ATTEMPTS = 3

Pace = Callable[[int], None]
SCRUB = "scrub"  # the reason a background verification gives

# The counters `statistics()` reports (zero until counted).
STATISTICS = (
    "appended_batches",
    "appended_bytes",
    "appended_records",
    "fsyncs",
    "fsync_failures",
    "fsync_seconds",
    "checkpoints",
    "segments_rolled",
    "segments_deleted",
    "corrupt_reads",
    "damage_found",
    # indexes rebuilt because they did not match their segment,
    # checkpoints and epoch files that did not verify
    "files_repaired",
    "segments_verified",
    "verified_bytes",
    "invalid_batches",
)

# Bounds of the fsync latency histogram (seconds), exported as logq_fsync_seconds.
FSYNC_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class FileLog:
    """A partition log stored as segment files in one directory."""

    def __init__(
        self,
        directory: Path | str,
        config: LogConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        files: FileCache | None = None,
        directory_syncs: durable.DirectorySyncs | None = None,
    ) -> None:
        """`files`: the descriptor cache shared by a broker's logs (a log of
        its own otherwise); `directory_syncs`: the fsyncs of parent
        directories they share (see `_open`). Nothing is read until the log
        is first used."""
        # the directory's name; its Path is made on first use (parsing one
        # per partition at start would cost more than the rest of the log)
        self._directory_name = os.fspath(directory)
        self._directory: Path | None = directory if isinstance(directory, Path) else None
        self.config = config or LogConfig()
        self._clock = clock
        self._files = files if files is not None else FileCache()
        self._directory_syncs = directory_syncs
        self._open_lock = threading.Lock()  # the first use opens the log, once
        self._opened = False
        self._recovery: RecoveryReport | None = None
        self._unmade = False  # seen not to exist yet: empty, at offset 0
        self._lock = threading.Lock()  # segment list and the active segment
        self._sync_lock = threading.Lock()  # one fsync leader; destructive operations
        self._checkpoint_lock = threading.Lock()
        self._closed = False
        # Held while a segment is verified (long, so not under `_lock`); the
        # operations that delete segments take it first.
        self._verify_lock = threading.Lock()
        self._stop_verifying = False  # set by them: a verification gives way
        self._damaged: list[DamagedRange] = []  # known damage, by start offset
        self._segments: list[Segment] = []
        self._bases: list[int] = []
        # Durable point: (offset, base of its segment, position in that segment).
        self._durable = (0, 0, 0)
        # Offset up to which this log's own files were fsynced (the durable
        # point may be ahead of it: held by the commit journal, see writer.py).
        self._synced_offset = 0
        self._checkpoint: Checkpoint | None = None
        self._last_flush = clock()
        # counters, made on first count (an idle log holds no dict of zeros)
        self._stats: defaultdict[str, int | float] = defaultdict(int)
        self._fsync_buckets: list[int] | None = None  # made by the first fsync
        # (the log's configuration it was worked out for, the time before which
        # retention deletes nothing): learnt once for a log not opened
        self._retention_due: tuple[LogConfig, int] | None = None
        # stored_figures() of a log not opened, from its files (None: not learnt)
        self._stored_figures: tuple[int, int, int] | None = None
        self._epochs: LeaderEpochs
        # the epoch file as the open found it (None: missing or bad), which
        # checks batch epochs until the open has loaded the epochs
        self._opening_epochs: EpochState | None = None

    # -- properties ----------------------------------------------------------

    @property
    def directory(self) -> Path:
        if self._directory is None:
            self._directory = Path(self._directory_name)
        return self._directory

    @property
    def directory_name(self) -> str:
        """The directory as a string (no Path made for it)."""
        return self._directory_name

    @property
    def opened(self) -> bool:
        """Whether the log was opened (recovered) since it was made."""
        return self._opened

    def ensure_open(self) -> None:
        """Open and recover the log now, if no use did it yet. An open that
        fails leaves the log unopened: the next use tries again."""
        if self._opened:
            return
        with self._open_lock:
            if self._opened:
                return
            self._check_open()
            self._recovery = self._open()
            self._opened = True

    def _known_empty(self) -> bool:
        """Whether the log, not opened, has no directory yet: a new log, empty
        at offset 0, whose offsets need no open (nor the files it makes)."""
        if self._opened:
            return False
        if not self._unmade:
            self._unmade = not os.access(self._directory_name, os.F_OK)  # no exception raised
        return self._unmade

    @property
    def recovery(self) -> RecoveryReport:
        self.ensure_open()
        assert self._recovery is not None
        return self._recovery

    @property
    def _active(self) -> Segment:
        return self._segments[-1]

    @property
    def first_offset(self) -> int:
        if self._known_empty():
            return 0
        self.ensure_open()
        return self._segments[0].base_offset

    @property
    def next_offset(self) -> int:
        if self._known_empty():
            return 0
        self.ensure_open()
        return self._active.next_offset

    @property
    def durable_offset(self) -> int:
        if self._known_empty():
            return 0
        self.ensure_open()
        return self._durable[0]

    @property
    def size_bytes(self) -> int:
        if self._known_empty():
            return 0
        self.ensure_open()
        return sum(segment.size for segment in self._segments)

    @property
    def segment_count(self) -> int:
        if self._known_empty():
            return 1  # what opening it would make: one empty active segment
        self.ensure_open()
        return len(self._segments)

    @property
    def readable_offset(self) -> int:
        if self._known_empty():
            return 0
        self.ensure_open()
        return self._readable_offset()

    def _readable_offset(self) -> int:
        if self.config.fsync is FsyncPolicy.ALWAYS:
            return self._durable[0]
        return self._active.next_offset

    def _readable_position(self, segment: Segment) -> int:
        if self.config.fsync is not FsyncPolicy.ALWAYS:
            return segment.size
        _, durable_base, durable_position = self._durable
        if segment.base_offset < durable_base:
            return segment.size
        return durable_position if segment.base_offset == durable_base else 0

    # -- opening and recovery --------------------------------------------------

    def _segment(self, base_offset: int) -> Segment:
        return Segment(self.directory, base_offset, self.config.index_interval_bytes, self._files)

    def _open(self) -> RecoveryReport:
        """Open (recover) the log. A new log (no segment, no checkpoint) makes
        its files with the fsyncs its durability needs and no more: its
        directory's name in the topic's (an fsync shared with the other
        partitions opened meanwhile), its checkpoint's content, and one fsync
        of its own directory for the names of its segment files (empty: they
        need no fsync of their own) and of its checkpoint."""
        started = time.perf_counter()
        durable.make_directory(self.directory, self._directory_syncs)
        stored_epochs = read_epoch_file(self.directory)
        self._opening_epochs = stored_epochs
        if stored_epochs is not None and stored_epochs.start_at >= 0:
            finish_fresh_start(self.directory, stored_epochs.start_at)
        bases = self._tidy_directory()
        repaired = int(stored_epochs is None and (self.directory / EPOCH_FILE_NAME).exists())
        try:
            checkpoint = read_checkpoint(self.directory)
        except CheckpointDamagedError as error:
            checkpoint = None
            repaired += 1
            logger.warning(
                "%s does not verify (%s): the active segment is verified whole",
                self.directory / CHECKPOINT_NAME,
                error,
            )
        new = not bases and checkpoint is None
        if not bases:
            start = checkpoint.next_offset if checkpoint else 0
            segment = self._segment(start)
            if not new:
                durable.sync_directory(self.directory)
            bases = [start]
            self._segments = [segment]
        else:
            self._segments = [self._segment(base) for base in bases]
        self._bases = bases
        rebuilt = 0
        for segment, next_base in zip(self._segments, bases[1:], strict=False):
            segment.load_sealed_state(next_base)
            problem = self._index_problem(segment, next_base - segment.base_offset)
            if problem is None and not segment.tail_fits(next_base):
                problem = "its batches do not run to the next segment's base"
            if problem is not None:
                # Sealed segments hold acknowledged data on both sides of any
                # damage: they are verified and reindexed, never cut.
                self._verify_sealed(segment, problem)
                rebuilt += 1
        active = self._active
        active_problem = self._index_problem(active, None)  # before a torn entry is trimmed
        active_sane = active_problem is None
        active.open_for_append()
        clean = False
        if (
            checkpoint is not None
            and checkpoint.segment == active.base_offset
            and checkpoint.position <= active.size
            and active_sane
        ):
            start_position = checkpoint.position
            result = active.recover(
                checkpoint.position, checkpoint.next_offset, checkpoint.max_timestamp
            )
            # Nothing after the checkpoint, and everything before it (indexes
            # too) was fsynced when it was written: no fsync, no new checkpoint.
            clean = result.batches == 0 and result.cut_bytes == 0
        else:
            if not active_sane:
                rebuilt += 1
                repaired += 1
                logger.warning(
                    "segment %s: its indexes do not match it (%s): rebuilt from its batches",
                    active.log_path,
                    active_problem,
                )
            start_position = 0
            active.offset_index.truncate_entries(0)
            active.time_index.truncate_entries(0)
            result = active.recover(0, active.base_offset, NO_TIMESTAMP)
            if checkpoint is not None and checkpoint.segment == active.base_offset:
                self._resume_past_lost_tail(checkpoint)
                active = self._active
        if result.damaged_inside:
            self._seal_damaged_active()
            active = self._active
            result = dataclasses.replace(result, cut_bytes=0, cut_reason=None)
        if clean:
            self._checkpoint = checkpoint
        elif not new:
            active.sync()
            active.sync_indexes()
        self._stats["files_repaired"] += repaired
        self._durable = (active.next_offset, active.base_offset, active.size)
        self._synced_offset = active.next_offset
        self._write_checkpoint_or_drop(sync_parent=not new)
        if new:
            durable.sync_directory(self.directory)
        self._epochs = LeaderEpochs.recovered(self.directory, stored_epochs, self._segments)
        report = RecoveryReport(
            segments=len(self._segments),
            scanned_bytes=result.end_position - start_position,
            scanned_batches=result.batches,
            cut_bytes=result.cut_bytes,
            cut_reason=result.cut_reason,
            indexes_rebuilt=rebuilt,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        if report.cut_bytes:
            logger.warning(
                "log %s: recovery cut %d bytes at offset %d (%s)",
                self.directory,
                report.cut_bytes,
                active.next_offset,
                report.cut_reason,
            )
        return report

    def _epoch_at(self, offset: int) -> int | None:
        """The leader epoch the epoch cache gives the batch at `offset` (None:
        unknown: before the cache's first entry, or no cache to go by)."""
        state = self._epochs.state if self._opened else self._opening_epochs
        if state is None or not state.entries:
            return None
        index = bisect.bisect_right(state.entries, offset, key=lambda entry: entry[1]) - 1
        return state.entries[index][0] if index >= 0 else None

    def _resume_past_lost_tail(self, checkpoint: Checkpoint) -> None:
        """The active segment ends before the durable point its checkpoint
        names (its file was cut short or replaced by an older copy): the
        offsets between were acknowledged and are lost. They are never given
        again: the log goes on at the checkpoint's offset."""
        short = self._active
        if short.next_offset >= checkpoint.next_offset:
            return
        logger.error(
            "segment %s ends at byte %d, before its checkpoint's durable point at byte %d:"
            " the log goes on at offset %d",
            short.log_path,
            short.size,
            checkpoint.position,
            checkpoint.next_offset,
        )
        self._skip_to(checkpoint.next_offset, "it ends before its checkpoint")

    def _seal_damaged_active(self) -> None:
        """The active segment holds bad bytes followed by good batches: damage
        between acknowledged batches, not a torn tail. Only what follows the
        last good batch is cut; the segment is sealed (its verification
        records the damaged ranges) and a new one goes on after it."""
        active = self._active
        verification = verify_segment(
            active,
            OPEN_END,
            index_interval_bytes=self.config.index_interval_bytes,
            epoch_at=self._epoch_at,
        )
        if verification.end_position < active.file_size():
            with active.file.pinned() as fd:
                durable.truncate_durably(fd, verification.end_position)
        active.size = verification.end_position
        active.next_offset = verification.next_offset
        logger.error(
            "segment %s: damaged batches lie between good ones: the segment is kept whole"
            " and sealed, the log goes on at offset %d",
            active.log_path,
            verification.next_offset,
        )
        self._skip_to(verification.next_offset, "damage between its batches")

    def _skip_to(self, offset: int, why: str) -> None:
        """Seal the active segment and start a new one at `offset`; the sealed
        segment's verification records the offsets between as damage (as for
        any sealed segment cut short)."""
        short = self._active
        new = self._segment(offset)
        new.open_for_append()
        durable.sync_directory(self.directory)
        short.seal()
        short.load_sealed_state(new.base_offset)
        with self._lock:
            self._segments.append(new)
            self._bases.append(new.base_offset)
        self._verify_sealed(short, why)

    def resume_at(self, offset: int, why: str) -> bool:
        """Offsets below `offset` were handed out before (`why` says how it is
        known) but the log ends below it: they were lost with the end of the
        active segment. Go on at `offset`, reporting the range lost, so that
        no offset is given twice. False when the log already reaches it."""
        self.ensure_open()
        with self._verifications_stopped(), self._sync_lock:
            with self._lock:
                self._check_open()
                if self.next_offset >= offset:
                    return False
                short = self._active
            logger.error(
                "log %s ends at offset %d, but %s: the log goes on at offset %d",
                self.directory,
                short.next_offset,
                why,
                offset,
            )
            self._skip_to(offset, why)
            with self._lock:
                self._durable = (offset, offset, 0)
                self._synced_offset = offset
            self._write_checkpoint()
        return True

    def _tidy_directory(self) -> list[int]:
        """Base offsets of the segments present; leftovers of interrupted
        writes (temporary files, indexes without a segment) are removed."""
        bases: list[int] = []
        leftovers: list[Path] = []
        names = {path.name for path in self.directory.iterdir()}
        for name in sorted(names):
            base = parse_segment_name(name)
            if base is not None:
                bases.append(base)
            elif name.endswith(durable.TEMP_SUFFIX):
                leftovers.append(self.directory / name)
            elif name.endswith((INDEX_SUFFIX, TIME_INDEX_SUFFIX)):
                stem = name.partition(".")[0]
                if f"{stem}{LOG_SUFFIX}" not in names:
                    leftovers.append(self.directory / name)
        if leftovers:
            durable.remove_files(leftovers)
        return sorted(bases)

    @staticmethod
    def _index_problem(segment: Segment, end_relative: int | None) -> str | None:
        """Why the segment's indexes cannot be used as they are, or None.
        `end_relative`: a sealed segment's offset count (None: the active
        one, whose time index is checked entry by entry, as recovery trusts
        it below the checkpoint)."""
        if segment.size == 0:
            return None
        if not segment.offset_index.is_sane((MAX_RELATIVE_OFFSET, max(segment.size - 1, 0))):
            return "its offset index is missing, cut or out of order"
        problem = segment.time_index.check(end_relative, every_entry=end_relative is None)
        return None if problem is None else f"its time index: {problem}"

    # -- appending ---------------------------------------------------------------

    def write(self, batch: bytes) -> AppendResult:
        self.ensure_open()
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
            active = self._active
            if should_roll(active, header, self.config):
                active = self._roll_locked()
            base = active.next_offset
            active.append(batch, header, base, self._epochs.stamp(base))
            self._stats["appended_batches"] += 1
            self._stats["appended_bytes"] += header.size
            self._stats["appended_records"] += header.record_count
        return AppendResult(base, base + header.record_count - 1)

    def write_copy(self, batch: bytes) -> AppendResult:
        """Write a batch that already carries its offsets and epoch (a copy
        this log lost, given back by the commit journal) at the log's end,
        checked as a replica's data is; durable with the next `sync`."""
        return self._write_replica(batch)

    @property
    def needs_commit(self) -> bool:
        """Writes become durable by a commit (fsync: always), not by themselves."""
        return self.config.fsync is FsyncPolicy.ALWAYS

    def write_point(self) -> tuple[int, int, int]:
        """Where the writes so far end: give it to `mark_durable` once a
        commit journal holds them durably."""
        self.ensure_open()
        with self._lock:
            active = self._active
            return (active.next_offset, active.base_offset, active.size)

    def mark_durable(self, point: tuple[int, int, int]) -> None:
        """Readers may see up to `point` (from `write_point`): it is durable
        in the commit journal, though this file is fsynced later."""
        self.ensure_open()
        with self._lock:
            if point[0] > self._durable[0] and point[0] <= self._active.next_offset:
                self._durable = point

    def append(self, batch: bytes) -> AppendResult:
        result = self.write(batch)
        self._durable_or_discard(result.next_offset)
        return result

    def append_many(self, batches: Sequence[bytes]) -> list[AppendResult | LogError]:
        results, end = write_each(self.write, batches)
        if end is not None:
            self._durable_or_discard(end)
        return results

    def _durable_or_discard(self, offset: int) -> None:
        """Make the writes up to `offset` durable; if the fsync fails (a full
        or failing disk), cut the log back to what is durable, so no batch
        that was never acknowledged sits in the file ahead of later ones (after
        a failed fsync the kernel may have dropped those pages)."""
        try:
            self._durable_to(offset)
        except OSError:
            if self.config.fsync is FsyncPolicy.ALWAYS:
                self._stats["fsync_failures"] += 1
                self.truncate_to(self._durable[0])
            raise

    def _durable_to(self, offset: int) -> None:
        """What the fsync policy asks once data up to `offset` is written."""
        if self.config.fsync is FsyncPolicy.ALWAYS:
            self.sync(offset)
        elif self.config.fsync is FsyncPolicy.INTERVAL:
            self.flush_if_due()

    def _roll_locked(self) -> Segment:
        old = self._active
        # The old segment's data is made durable before the new segment's
        # name is: once that name survives a power cut, recovery takes the
        # old segment as sealed, and the commit journal's copies of its tail
        # as held by it (they end below the new segment's base offset).
        old.sync()
        # The new segment first: if its files cannot be made (a full disk),
        # the old one stays active and writable, and nothing changed.
        new = self._segment(old.next_offset)
        try:
            new.open_for_append()
            durable.sync_directory(self.directory)
            old.seal()
        except OSError:
            new.close()
            for path in new.paths:
                path.unlink(missing_ok=True)
            raise
        self._segments.append(new)
        self._bases.append(new.base_offset)
        if self._durable[0] <= new.base_offset:
            self._durable = (new.base_offset, new.base_offset, 0)
        self._synced_offset = max(self._synced_offset, new.base_offset)  # sealing fsynced it
        self._stats["segments_rolled"] += 1
        self._write_checkpoint()
        return new

    def roll(self) -> None:
        self.ensure_open()
        with self._lock:
            self._check_open()
            if not self._active.is_empty:
                self._roll_locked()

    # -- durability ----------------------------------------------------------------

    def sync(self, up_to_offset: int | None = None) -> None:
        self.ensure_open()
        target = self.next_offset if up_to_offset is None else up_to_offset
        if self._synced_offset >= target:
            return
        with self._sync_lock:
            if self._synced_offset >= target:
                return  # another leader's fsync covered us
            with self._lock:
                self._check_open()
                segment = self._active
                point = (segment.next_offset, segment.base_offset, segment.size)
                max_timestamp = segment.max_timestamp
                # writes only a commit journal holds: the journal's flush, which
                # drops its copies after this fsync (see below)
                journal_held = self._durable[0] > self._synced_offset
            started = time.perf_counter()
            segment.sync()
            took = time.perf_counter() - started
            self._stats["fsyncs"] += 1
            self._stats["fsync_seconds"] += took
            if self._fsync_buckets is None:
                self._fsync_buckets = [0] * (len(FSYNC_BUCKETS_S) + 1)  # the last: above them all
            self._fsync_buckets[bisect.bisect_left(FSYNC_BUCKETS_S, took)] += 1
            with self._lock:
                if point[0] > self._durable[0]:
                    self._durable = point
                self._synced_offset = max(self._synced_offset, point[0])
            self._last_flush = self._clock()
            self._maybe_checkpoint(segment, point, max_timestamp, forced=journal_held)

    def flush_if_due(self) -> None:
        if self.config.fsync is not FsyncPolicy.INTERVAL or not self._opened:
            return
        if (self._clock() - self._last_flush) * 1000 >= self.config.fsync_interval_ms:
            self.sync()

    def _maybe_checkpoint(
        self,
        segment: Segment,
        point: tuple[int, int, int],
        max_timestamp: int,
        *,
        forced: bool = False,
    ) -> None:
        """A checkpoint at `point` once `checkpoint_interval_bytes` passed since
        the last one, or `forced`: when the fsync made durable in this file
        writes the commit journal held, whose copies go once it is done. The
        checkpoint then names how far the log reached, so recovery tells a
        file cut below it (acknowledged offsets lost: reported, never given
        again) from a torn tail; above it the journal still holds the copies."""
        last = self._checkpoint
        if (
            not forced
            and last is not None
            and last.segment == point[1]
            and point[2] - last.position < self.config.checkpoint_interval_bytes
        ):
            return
        segment.sync_indexes()  # entries below the checkpoint must survive a crash
        self._store_checkpoint(Checkpoint(point[1], point[2], point[0], max_timestamp))

    def _checkpoint_at_end(self) -> bool:
        """Whether the last checkpoint names the end of the active segment
        (so everything, indexes included, is durable already)."""
        last, active = self._checkpoint, self._active
        return (
            last is not None
            and (last.segment, last.position) == (active.base_offset, active.size)
            and self._synced_offset >= active.next_offset
        )

    def _write_checkpoint(self, *, sync_parent: bool = True) -> None:
        active = self._active
        if self._durable[1] != active.base_offset:
            return
        self._store_checkpoint(
            Checkpoint(
                active.base_offset, self._durable[2], self._durable[0], active.max_timestamp
            ),
            sync_parent=sync_parent,
        )

    def _write_checkpoint_or_drop(self, *, sync_parent: bool = True) -> None:
        """At open and close a checkpoint only shortens the next recovery, so a
        disk too full to write one (another program filled it) stops neither:
        the old checkpoint is removed instead (it may name a point this
        recovery just cut) and the next open scans the active segment whole."""
        try:
            self._write_checkpoint(sync_parent=sync_parent)
        except OSError as error:
            logger.warning(
                "log %s: no recovery checkpoint written (%s); the next start scans"
                " the active segment",
                self.directory,
                error.strerror or error,
            )
            with self._checkpoint_lock:
                drop_checkpoint(self.directory)
                self._checkpoint = None

    def _store_checkpoint(self, checkpoint: Checkpoint, *, sync_parent: bool = True) -> None:
        with self._checkpoint_lock:
            last = self._checkpoint
            if last is not None and (last.segment, last.position) >= (
                checkpoint.segment,
                checkpoint.position,
            ):
                return
            write_checkpoint(self.directory, checkpoint, sync_parent=sync_parent)
            self._checkpoint = checkpoint
            self._stats["checkpoints"] += 1

    # -- reading ---------------------------------------------------------------------

    def _segment_for(self, offset: int) -> Segment:
        return self._segments[bisect.bisect_right(self._bases, offset) - 1]

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        self.ensure_open()
        max_bytes = max(1, min(max_bytes, self.config.read_bytes_max))
        for _ in range(READ_VERIFY_ATTEMPTS):
            with self._lock:
                self._check_open()
                readable = self._readable_offset()
                if not self.first_offset <= offset <= readable:
                    raise OffsetOutOfRangeError(
                        f"offset {offset} is outside [{self.first_offset}, {readable}]"
                    )
                self._refuse_damaged(offset)
                if offset == readable:
                    return ReadResult(b"", offset, offset, 0, 0, readable)
                segment = self._segment_for(offset)
                end_position = self._readable_position(segment)
                try:
                    found = segment.find_position(
                        offset, end_position, self._resume_point(segment, offset)
                    )
                except SuspectSegmentError as error:
                    found, why = None, str(error)
                else:
                    why = f"offset {offset} is missing from it"
                if found is not None:
                    position, header = found
                    length = min(max(max_bytes, header.size), end_position - position)
                    data = segment.pread(position, length)
            if found is not None:
                try:
                    return cut_whole_batches(
                        data, readable, source=segment.log_path.name, epoch_at=self._epoch_at
                    )
                except DamagedDataError as error:
                    why = str(error)
            self._stats["corrupt_reads"] += 1
            self.verify(segment.base_offset, why)
        raise DamagedDataError(
            f"offset {offset} of {self.directory} fails its checks after verifying it",
            offset,
            offset + 1,
        )

    # -- damage --------------------------------------------------------------------

    def damaged_ranges(self) -> list[DamagedRange]:
        """The damage found so far in the stored offsets, lowest first."""
        if self._known_empty():
            return []
        self.ensure_open()
        with self._lock:
            return list(self._damaged)

    def _refuse_damaged(self, offset: int) -> None:
        for damaged in self._damaged:
            if damaged.start <= offset < damaged.end:
                raise DamagedDataError(
                    f"{damaged.describe()}; the partition's other offsets serve",
                    damaged.start,
                    damaged.end,
                )

    def _resume_point(self, segment: Segment, offset: int) -> tuple[int, int]:
        """(position, offset) of the good batch after the last damage below `offset`."""
        point = (0, 0)
        for damaged in self._damaged:
            if damaged.segment == segment.log_path.name and damaged.end <= offset:
                point = (damaged.resume_position, damaged.end)
        return point

    def verify(self, base_offset: int, why: str = "scrub", pace: Pace | None = None) -> bool:
        """Verify the segment starting at `base_offset` whole: record the
        damage it holds, rebuild its indexes. An active segment is rolled
        first, so no write touches it meanwhile. False if it is gone."""
        self.ensure_open()
        with self._verify_lock:
            with self._lock:
                if self._closed or base_offset not in self._bases:
                    return False
                segment = self._segment_for(base_offset)
                if segment is self._active and not segment.is_empty:
                    try:
                        self._roll_locked()
                    except OSError as error:
                        logger.warning(
                            "log %s: cannot seal %s to verify it: %s",
                            self.directory,
                            segment.log_path.name,
                            error,
                        )
                if segment is self._active:
                    return True  # empty, or could not be sealed: verified on a later read
            if why != SCRUB:
                logger.warning("segment %s: verifying it whole (%s)", segment.log_path, why)
            try:
                return self._verify_sealed(segment, why, pace)
            except VerifyInterruptedError:
                return False

    def scrub(self, after_base: int, pace: Pace | None = None) -> int | None:
        """Verify the first segment whose base offset is above `after_base`
        (a scrubber's cursor) and return that base; None when none lies past
        the cursor. Sealed segments are verified whole; the active one, last,
        up to its durable point (bytes no write touches any more), and only
        in a log already opened. A log not opened whose directory holds one
        segment (its active one) is not opened for that."""
        if not self._opened and len(segment_bases(self._directory_name)) <= 1:
            return None
        self.ensure_open()
        with self._lock:
            self._check_open()
            bases = [s.base_offset for s in self._segments[:-1] if s.base_offset > after_base]
            active = self._active
        if bases:
            self.verify(bases[0], SCRUB, pace)
            return bases[0]
        if active.base_offset > after_base:
            self._scrub_active(active, pace)
            return active.base_offset
        return None

    def _scrub_active(self, active: Segment, pace: Pace | None) -> None:
        """Walk the active segment up to its durable point; damage there (a
        batch below the checkpoint that recovery did not read again) seals
        and verifies it whole, as a read meeting it would."""
        with self._verify_lock:
            with self._lock:
                if self._closed or active is not self._active:
                    return
                _, durable_base, durable_position = self._durable
                end_position = durable_position if durable_base == active.base_offset else 0

            def paced(checked_bytes: int) -> None:
                if self._stop_verifying:
                    raise VerifyInterruptedError(f"{active.log_path}: verification interrupted")
                if pace is not None:
                    pace(checked_bytes)

            try:
                verification = verify_segment(
                    active,
                    OPEN_END,
                    end_position=end_position,
                    index_interval_bytes=self.config.index_interval_bytes,
                    pace=paced,
                    epoch_at=self._epoch_at,
                )
            except VerifyInterruptedError:
                return
            self._stats["verified_bytes"] += verification.checked_bytes
        if verification.damaged:
            found = verification.damaged[0]
            why = f"the scrubber found a bad batch at byte {found.position} ({found.reason})"
            self.verify(active.base_offset, why)

    def _verify_sealed(self, segment: Segment, why: str, pace: Pace | None = None) -> bool:
        def paced(checked_bytes: int) -> None:
            if self._stop_verifying:
                raise VerifyInterruptedError(f"{segment.log_path}: verification interrupted")
            if pace is not None:
                pace(checked_bytes)

        verification = verify_segment(
            segment,
            segment.next_offset,
            end_position=segment.size,
            index_interval_bytes=self.config.index_interval_bytes,
            pace=paced,
            epoch_at=self._epoch_at,
        )
        with self._lock:
            self._stats["segments_verified"] += 1
            self._stats["verified_bytes"] += verification.checked_bytes
            if segment not in self._segments and self._segments:
                return False
            self._record_damage(segment, verification.damaged)
            if why == SCRUB and not verification.damaged:
                # the time index is trusted to skip data: it must be the one
                # the walk built (the offset index is checked at each use)
                why = segment.time_index.disagreement(verification.time_entries) or SCRUB
            if why != SCRUB or verification.damaged:
                segment.replace_indexes(verification)
                self._stats["files_repaired"] += 1
                logger.warning(
                    "segment %s: indexes rebuilt from its batches (%s)", segment.log_path, why
                )
        return True

    def _record_damage(self, segment: Segment, found: list[DamagedRange]) -> None:
        """Keep `found` as the segment's known damage, logging each new range once."""
        name = segment.log_path.name
        known = {(d.start, d.end) for d in self._damaged}
        for damaged in found:
            if (damaged.start, damaged.end) not in known:
                self._stats["damage_found"] += 1
                logger.error("log %s: %s", self.directory, damaged.describe())
        kept = [d for d in self._damaged if d.segment != name]
        self._damaged = sorted([*kept, *found], key=lambda d: d.start)

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The first offset whose record time is >= `timestamp_ms`, or None.
        A segment whose time index does not verify is scanned from its start
        for this lookup, and verified whole (its indexes rebuilt) after it."""
        self.ensure_open()
        suspect: tuple[int, str] | None = None
        found: int | None = None
        with self._lock:
            self._check_open()
            readable = self._readable_offset()
            for segment in self._segments:
                if segment.max_timestamp < timestamp_ms:
                    continue
                try:
                    position = segment.position_for_time(timestamp_ms)
                except SuspectSegmentError as error:
                    suspect, position = (segment.base_offset, str(error)), 0
                found = self._first_at_or_after(segment, position, timestamp_ms)
                if found is not None:
                    found = found if found < readable else None
                    break
        if suspect is not None:
            self._stats["corrupt_reads"] += 1
            self.verify(*suspect)
        return found

    def _first_at_or_after(self, segment: Segment, position: int, timestamp_ms: int) -> int | None:
        """The first offset of `segment` from `position` on whose time is at
        least `timestamp_ms`, or None (damage stops the walk: reads report it)."""
        end_position = self._readable_position(segment)
        while position < end_position:
            header = segment.header_at(position)
            if not HEADER_SIZE <= header.size <= end_position - position:
                return None  # damage: reads report it; the next segment may answer
            if header.max_timestamp >= timestamp_ms:
                data = segment.pread(position, header.size)
                if compute_crc(data, 0, header.size) == header.crc:
                    for index, stamp in enumerate(decode_timestamps(data)):
                        if stamp >= timestamp_ms:
                            return header.base_offset + index
            position += header.size
        return None

    # -- truncation and retention ------------------------------------------------------

    @contextlib.contextmanager
    def _verifications_stopped(self) -> Iterator[None]:
        """Hold off verification (interrupting one under way) while segments may go."""
        self._stop_verifying = True
        with self._verify_lock:
            self._stop_verifying = False
            yield

    def truncate_to(self, offset: int) -> int:
        self.ensure_open()
        with self._verifications_stopped(), self._sync_lock, self._lock:
            self._check_open()
            if offset >= self.next_offset:
                return self.next_offset
            if offset < self.first_offset:
                raise OffsetOutOfRangeError(
                    f"cannot truncate to {offset}, below the log start {self.first_offset}"
                )
            segment = self._segment_for(offset)
            found = segment.find_position(offset, segment.size)
            assert found is not None
            position, header = found
            index = self._segments.index(segment)
            self._delete_segments(self._segments[index + 1 :])
            if not segment.writable:
                segment.open_for_append()
            segment.truncate_to_position(position, header.base_offset)
            segment.sync()
            self._epochs.truncate_from_end(segment.next_offset)
            self._durable = (segment.next_offset, segment.base_offset, segment.size)
            self._synced_offset = segment.next_offset
            self._checkpoint = None
            self._write_checkpoint()
            return segment.next_offset

    def stored_figures(self) -> tuple[int, int, int]:
        """(first offset, next offset, size in bytes). A log not opened answers
        from its files when its checkpoint names its end (learnt once: they
        do not change until it is opened), so counting every partition (a
        scrape, the dashboard) does not open the idle ones."""
        if not self._opened:
            if self._known_empty():
                return 0, 0, 0
            if self._stored_figures is None:
                self._stored_figures = stored_figures_from_files(self._directory_name)
            if self._stored_figures is not None and not self._opened:
                return self._stored_figures
        return self.first_offset, self.next_offset, self.size_bytes

    def retention_idle(self, now_ms: int) -> bool:
        """Whether retention deletes nothing now, known without opening the
        log: always False for an opened log (`apply_retention` decides).

        A log not opened learns once, from its files, the time before which
        its oldest segment cannot expire: the newest timestamp of that
        segment is at least its first batch's (read and CRC-checked), and
        its sizes change only by appends, which open the log. Until that
        time (or a change of its retention) a pass over it costs a
        comparison, so idle partitions are not opened every pass.
        """
        if self._opened or self._closed:
            return False
        config = self.config
        if config.retention_ms is None and config.retention_bytes is None:
            return True
        if self._known_empty():
            return True
        due = self._retention_due
        if due is None or due[0] is not config:
            due = self._retention_due = (
                config,
                retention_due_from_files(self._directory_name, config),
            )
        return now_ms < due[1]

    def apply_retention(self, now_ms: int) -> RetentionResult:
        self.ensure_open()
        with self._verifications_stopped(), self._sync_lock, self._lock:
            self._check_open()
            doomed = self._segments[: expired_prefix(self._segments, now_ms, self.config)]
            if len(doomed) == len(self._segments):
                self._roll_locked()  # the whole log expired: keep an empty active segment
            deleted_bytes = sum(segment.size for segment in doomed)
            self._delete_segments(doomed)
            self._epochs.truncate_from_start(self.first_offset)
            return RetentionResult(len(doomed), deleted_bytes, self.first_offset)

    def delete_before(self, offset: int) -> RetentionResult:
        """Delete the sealed segments that lie wholly below `offset` (what a
        state log no longer needs once a snapshot at `offset` is durable)."""
        with self._verifications_stopped(), self._sync_lock, self._lock:
            self._check_open()
            count = bisect.bisect_right(self._bases[1:], offset)
            doomed = self._segments[:count]
            deleted_bytes = sum(segment.size for segment in doomed)
            self._delete_segments(doomed)
            self._epochs.truncate_from_start(self.first_offset)
            return RetentionResult(len(doomed), deleted_bytes, self.first_offset)

    def sealed_segments(self) -> list[SealedSegment]:
        self.ensure_open()
        with self._lock:
            return [
                SealedSegment(s.base_offset, s.next_offset, s.size, s.max_timestamp)
                for s in self._segments[:-1]
            ]

    def read_sealed(self, base_offset: int) -> bytes:
        self.ensure_open()
        with self._lock:
            self._check_open()
            at = bisect.bisect_left(self._bases, base_offset)
            if at >= len(self._segments) - 1 or self._bases[at] != base_offset:
                raise OffsetOutOfRangeError(f"no sealed segment starts at offset {base_offset}")
            segment = self._segments[at]
            size = segment.size
        return segment.pread(0, size)

    def _delete_segments(self, doomed: list[Segment]) -> None:
        if not doomed:
            return
        paths: list[Path] = []
        for segment in doomed:
            segment.close()
            paths.extend(segment.paths)
            self._segments.remove(segment)
            self._bases.remove(segment.base_offset)
            self._damaged = [d for d in self._damaged if d.segment != segment.log_path.name]
        durable.remove_files(paths)
        self._stats["segments_deleted"] += len(doomed)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Remove every segment and start empty at `offset`. The epoch file
        marks it first, so a crash part way is finished on the next open; a
        failure part way closes the log (reopening finishes it)."""
        self.ensure_open()
        check_start_offset(offset)
        with self._verifications_stopped(), self._sync_lock, self._lock:
            self._check_open()
            self._epochs.begin_fresh_start(offset)
            try:
                self._delete_segments(list(self._segments))
                segment = self._segment(offset)
                self._segments, self._bases = [segment], [offset]
                segment.open_for_append()
                durable.sync_directory(self.directory)
            except OSError:
                self._closed = True
                for segment in self._segments:
                    segment.close()
                raise
            self._durable = (offset, offset, 0)
            self._synced_offset = offset
            self._damaged = []
            self._checkpoint = None
            self._write_checkpoint_or_drop()
            self._epochs.end_fresh_start()

    # -- leader epochs and replicas -----------------------------------------------------

    @property
    def leader_epoch(self) -> int:
        self.ensure_open()
        return self._epochs.leader_epoch

    def set_leader_epoch(self, epoch: int) -> None:
        self.ensure_open()
        with self._lock:
            self._check_open()
            self._epochs.set_leader_epoch(epoch)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        self.ensure_open()
        with self._lock:
            self._check_open()
            return self._epochs.end_offset_for(epoch, self.next_offset)

    def append_replica(self, data: bytes) -> AppendResult:
        result = self._write_replica(data)
        self._durable_or_discard(result.next_offset)
        return result

    def _write_replica(self, data: bytes) -> AppendResult:
        self.ensure_open()
        batches = check_replica_data(data)
        start = batches[0][1].base_offset
        try:
            with self._lock:
                self._check_open()
                if start != self.next_offset:
                    raise InvalidBatchError(
                        f"replica data starts at offset {start}, the log ends at {self.next_offset}"
                    )
                self._epochs.note_replica([header for _, header in batches])
                view = memoryview(data)
                for position, header in batches:
                    active = self._active
                    if should_roll(active, header, self.config):
                        active = self._roll_locked()
                    batch = view[position : position + header.size]
                    active.append(batch, header, header.base_offset, header.leader_epoch)
                    self._stats["appended_batches"] += 1
                    self._stats["appended_bytes"] += header.size
                    self._stats["appended_records"] += header.record_count
        except OSError:
            self.truncate_to(start)  # all or nothing: no batch of them stays
            raise
        return AppendResult(start, batches[-1][1].last_offset)

    # -- lifecycle ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"log {self.directory} is closed")

    def fsync_histogram(self) -> list[int]:
        """How many fsyncs took at most each of FSYNC_BUCKETS_S (not cumulative;
        the last count is of those above the largest bound)."""
        if self._fsync_buckets is None:
            return [0] * (len(FSYNC_BUCKETS_S) + 1)
        return list(self._fsync_buckets)

    def statistics(self) -> dict[str, int | float]:
        """Counters, and the log's figures once it is opened (a log not
        opened yet is not opened for them: only its zero counters)."""
        stats: dict[str, int | float] = {**dict.fromkeys(STATISTICS, 0), **self._stats}
        stats["opened"] = int(self._opened)
        if not self._opened:
            return stats
        stats.update(
            segments=len(self._segments),
            size_bytes=self.size_bytes,
            first_offset=self.first_offset,
            next_offset=self.next_offset,
            durable_offset=self.durable_offset,
            recovery_scanned_bytes=self.recovery.scanned_bytes,
            recovery_cut_bytes=self.recovery.cut_bytes,
            recovery_indexes_rebuilt=self.recovery.indexes_rebuilt,
            recovery_ms=self.recovery.duration_ms,
            damaged_ranges=len(self._damaged),
            damaged_offsets=sum(d.end - d.start for d in self._damaged),
        )
        return stats

    def close(self, *, synced: bool = False) -> None:
        """Flush everything, write a checkpoint at the end, release files.
        A log never opened has nothing to flush; one whose checkpoint names
        its end (nothing written since) is not fsynced again. `synced`: the
        caller made every write of this log durable already and syncs the
        file system again once it is closed (one `durable.sync_filesystem`
        each for many logs): nothing is fsynced here, and the checkpoint is
        overwritten in place, durable with that second sync."""
        if not self._opened:
            with self._open_lock:
                if not self._opened:  # nothing to flush, no verification to stop
                    self._closed = True
                    return
        with self._open_lock, self._verifications_stopped(), self._sync_lock, self._lock:
            if self._closed:
                return
            active = self._active
            at_end = self._checkpoint_at_end()
            if not synced and not at_end:
                active.sync()
                active.sync_indexes()
            self._durable = (active.next_offset, active.base_offset, active.size)
            self._synced_offset = active.next_offset
            if not synced:
                self._write_checkpoint_or_drop()
            elif not at_end:
                self._overwrite_checkpoint(active)
            self._epochs.write(required=False)  # only when its epochs changed
            self._closed = True
            for segment in self._segments:
                segment.close()

    def _overwrite_checkpoint(self, active: Segment) -> None:
        """The checkpoint at the end, in place and not fsynced (see close);
        should that fail, the old one stays (it names a durable point)."""
        checkpoint = Checkpoint(
            active.base_offset, active.size, active.next_offset, active.max_timestamp
        )
        try:
            with self._checkpoint_lock:
                overwrite_checkpoint_unsynced(self._directory_name, checkpoint)
                self._checkpoint = checkpoint
                self._stats["checkpoints"] += 1
        except OSError as error:
            logger.warning(
                "log %s: no recovery checkpoint written at close (%s); the next open"
                " scans from the last one",
                self.directory,
                error.strerror or error,
            )
