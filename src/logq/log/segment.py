"""One segment: a file of batches, named by its 20-digit base offset, with
its sparse offset index (`.index`) and time index (`.timeindex`) beside it.

A segment is appended to while it is the active one, then sealed (fsynced,
indexes flushed) when the log rolls. Reads go through `os.pread`, so readers
never share a file position with the writer.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from logq.log import durable
from logq.log.batch import (
    FORMAT_VERSION,
    HEADER_SIZE,
    LENGTH_PREFIX_SIZE,
    STAMPED_HEAD_SIZE,
    BatchHeader,
    compute_crc,
    read_header,
    stamped_head,
)
from logq.log.file_cache import FileCache
from logq.log.index import OFFSET_ENTRY, SparseIndex
from logq.log.time_index import TimeIndex, TimeIndexDamagedError
from logq.log.verify import Verification, good_batch_after

logger = logging.getLogger(__name__)

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
NO_TIMESTAMP = -1
# Recovery and index rebuilds read the segment in chunks of this size; a
# batch larger than a chunk is read whole on its own.
SCAN_CHUNK_BYTES = 1024 * 1024


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


def parse_segment_name(name: str) -> int | None:
    stem, _, suffix = name.partition(".")
    if len(stem) == 20 and stem.isdigit() and f".{suffix}" == LOG_SUFFIX:
        return int(stem)
    return None


class SuspectSegmentError(Exception):
    """What a read found on disk does not hold together (a damaged batch
    header, an index entry that does not match its batch): the segment needs
    verifying before anything more is read from it."""


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a scan of a segment region found."""

    end_position: int  # position after the last good batch
    batches: int
    cut_bytes: int  # bytes past the last good batch (0 when the region was clean)
    cut_reason: str | None
    # a good batch follows the bad bytes (damage, not a torn tail): nothing was cut
    damaged_inside: bool = False


class Segment:
    """A segment file and its two indexes."""

    def __init__(
        self, directory: Path, base_offset: int, index_interval_bytes: int, files: FileCache
    ) -> None:
        self.base_offset = base_offset
        name = segment_name(base_offset)
        self.log_path = directory / f"{name}{LOG_SUFFIX}"
        self.offset_index = SparseIndex(directory / f"{name}{INDEX_SUFFIX}", OFFSET_ENTRY, files)
        self.time_index = TimeIndex(directory / f"{name}{TIME_INDEX_SUFFIX}", base_offset, files)
        self.index_interval_bytes = index_interval_bytes
        # opened on demand through the broker's descriptor cache (file_cache.py)
        self.file = files.file(self.log_path)
        try:
            self.size = self.log_path.stat().st_size
        except FileNotFoundError:
            with self.file.pinned() as fd:  # a new segment: made now
                self.size = os.fstat(fd).st_size
        self.next_offset = base_offset
        self.first_timestamp = NO_TIMESTAMP  # of the first batch, for rolling by age
        self.max_timestamp = NO_TIMESTAMP
        self._bytes_since_index_entry = 0
        self._time_entry_timestamp = NO_TIMESTAMP
        self.writable = False

    @property
    def paths(self) -> list[Path]:
        return [self.log_path, self.offset_index.path, self.time_index.path]

    @property
    def is_empty(self) -> bool:
        return self.next_offset == self.base_offset

    # -- lifecycle ---------------------------------------------------------

    def open_for_append(self) -> None:
        self.offset_index.open_for_append()
        self.time_index.open_for_append()
        self.writable = True

    def seal(self) -> None:
        """Make everything durable and stop writing; a final time entry at the
        segment's end offset makes the time index's last entry carry the
        segment's max timestamp (and tells an index cut short)."""
        if not self.writable:
            return
        end = self.next_offset - self.base_offset
        last = self.time_index.last()
        if not self.is_empty and (last is None or last[1] != end):
            self.time_index.append(self.max_timestamp, end)
            self._time_entry_timestamp = self.max_timestamp
        with self.file.pinned() as fd:
            durable.sync_data(fd)
        self.offset_index.seal()
        self.time_index.seal()
        self.writable = False

    def close(self) -> None:
        self.file.close()
        self.offset_index.close()
        self.time_index.close()

    def sync(self) -> None:
        with self.file.pinned() as fd:
            durable.sync_data(fd)

    def sync_indexes(self) -> None:
        self.offset_index.sync()
        self.time_index.sync()

    # -- writing -----------------------------------------------------------

    def append(
        self, batch: bytes | memoryview, header: BatchHeader, base_offset: int, leader_epoch: int
    ) -> int:
        """Write `batch` at the end with `base_offset` and `leader_epoch`
        patched in; return its position."""
        assert self.writable
        assert base_offset == self.next_offset
        position = self.size
        parts: list[bytes | memoryview] = [
            stamped_head(header, base_offset, leader_epoch),
            memoryview(batch)[STAMPED_HEAD_SIZE:],
        ]
        with self.file.pinned() as fd:
            written = os.pwritev(fd, parts, position)
            if written != header.size:
                # A short write means the device is full: leave no torn bytes behind.
                os.ftruncate(fd, position)
                raise OSError(errno.ENOSPC, f"short write: {written} of {header.size} bytes")
        self._account(position, header, base_offset)
        return position

    def _account(self, position: int, header: BatchHeader, base_offset: int) -> None:
        """Update sizes, offsets, timestamps and sparse indexes for one batch."""
        relative = base_offset - self.base_offset
        if self.is_empty:
            self.first_timestamp = header.first_timestamp
        if self._bytes_since_index_entry >= self.index_interval_bytes:
            self.offset_index.append(relative, position)
            if self.max_timestamp > self._time_entry_timestamp:
                # Entry (T, o): T is the max timestamp of every batch before o.
                self.time_index.append(self.max_timestamp, relative)
                self._time_entry_timestamp = self.max_timestamp
            self._bytes_since_index_entry = 0
        self._bytes_since_index_entry += header.size
        self.size = position + header.size
        self.next_offset = base_offset + header.record_count
        self.max_timestamp = max(self.max_timestamp, header.max_timestamp)

    def truncate_to_position(self, position: int, next_offset: int) -> None:
        """Cut the file at `position` (a batch boundary) and rebuild state."""
        assert self.writable
        with self.file.pinned() as fd:
            durable.truncate_durably(fd, position)
        relative = next_offset - self.base_offset
        self.offset_index.truncate_entries(self.offset_index.count_at_most(1, position - 1))
        self.time_index.truncate_entries(self.time_index.count_at_most(1, relative - 1))
        self.first_timestamp = NO_TIMESTAMP
        result = self.resume_from_index()
        assert result.end_position == position and result.cut_bytes == 0, result

    # -- reading -----------------------------------------------------------

    def pread(self, position: int, size: int) -> bytes:
        chunks = []
        with self.file.pinned() as fd:
            while size > 0:
                chunk = os.pread(fd, size, position)
                if not chunk:
                    break
                chunks.append(chunk)
                position += len(chunk)
                size -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def file_size(self) -> int:
        """The file's size on disk (the bytes written, good or not)."""
        with self.file.pinned() as fd:
            return os.fstat(fd).st_size

    def header_at(self, position: int) -> BatchHeader:
        return read_header(self.pread(position, HEADER_SIZE))

    def find_position(
        self, offset: int, end_position: int, resume: tuple[int, int] = (0, 0)
    ) -> tuple[int, BatchHeader] | None:
        """Position and header of the batch holding `offset`, or None past the end.

        The walk starts at the index entry below `offset` (or at `resume`, a
        (position, offset) of a known batch start, when that is further on).
        Nothing read is trusted: an entry must point inside the segment at a
        batch with the offset it claims, and each batch must follow the one
        before; otherwise SuspectSegmentError, and nothing is skipped."""
        entry = self.offset_index.floor(0, offset - self.base_offset)
        position, expected = 0, self.base_offset
        if entry is not None:
            position, expected = entry[1], self.base_offset + entry[0]
            if position >= end_position:
                raise SuspectSegmentError(
                    f"index entry ({entry[0]}, {position}) points past byte {end_position}"
                )
        if resume[0] > position and resume[1] <= offset:
            position, expected = resume
        while position < end_position:
            head = self.pread(position, HEADER_SIZE)
            if len(head) < HEADER_SIZE:
                raise SuspectSegmentError(f"torn batch header at byte {position}")
            header = read_header(head)
            if header.base_offset != expected:
                raise SuspectSegmentError(
                    f"batch at byte {position} has offset {header.base_offset}, expected {expected}"
                )
            if header.batch_length < HEADER_SIZE - LENGTH_PREFIX_SIZE or (
                position + header.size > end_position
            ):
                raise SuspectSegmentError(f"bad batch length at byte {position}")
            if header.last_offset >= offset:
                return position, header
            expected = header.next_offset
            position += header.size
        return None

    def tail_fits(self, end_offset: int) -> bool:
        """Whether the batches from the last offset-index entry on run exactly
        to the file's end and to `end_offset` (a sealed segment's cheap check
        on open: it finds a segment cut short, reading a few headers)."""
        last = self.offset_index.last()
        position, expected = (
            (last[1], self.base_offset + last[0]) if last else (0, self.base_offset)
        )
        while position < self.size:
            head = self.pread(position, HEADER_SIZE)
            if len(head) < HEADER_SIZE:
                return False
            header = read_header(head)
            if (
                header.base_offset != expected
                or header.batch_length < HEADER_SIZE - LENGTH_PREFIX_SIZE
            ):
                return False
            expected = header.next_offset
            position += header.size
        return position == self.size and expected == end_offset

    def position_for_time(self, timestamp: int) -> int:
        """A position from which scanning finds the first record at or after
        `timestamp`; SuspectSegmentError when the time index does not verify."""
        try:
            entry = self.time_index.floor(0, timestamp - 1)
        except TimeIndexDamagedError as error:
            raise SuspectSegmentError(f"its time index does not verify ({error})") from None
        if entry is None:
            return 0
        found = self.offset_index.floor(0, entry[1])
        if found is None:
            return 0
        head = self.pread(found[1], HEADER_SIZE)
        if len(head) < HEADER_SIZE or read_header(head).base_offset != self.base_offset + found[0]:
            return 0  # the entry does not match its batch: scan the segment from its start
        return int(found[1])

    # -- recovery ----------------------------------------------------------

    def scan(self, start_position: int) -> ScanResult:
        """Walk batches from `start_position`, checking each one, and account
        them into this segment's state and indexes. Stops at the first batch
        that is torn, corrupt or out of sequence, and reports what follows."""
        position = start_position
        batches = 0
        reason: str | None = None
        file_size = self.file_size()
        while position < file_size:
            chunk = self.pread(position, min(SCAN_CHUNK_BYTES, file_size - position))
            cursor = 0
            while cursor < len(chunk):
                problem, size = self._check_at(chunk, cursor, position + cursor, file_size)
                if problem == "need_more":
                    break
                if problem is not None:
                    reason = problem
                    break
                header = read_header(chunk, cursor)
                self._account(position + cursor, header, header.base_offset)
                cursor += size
                batches += 1
            if reason is not None:
                position += cursor
                break
            if cursor == 0:
                # The next batch is larger than a chunk: read it whole.
                size = self._peek_size(position)
                chunk = self.pread(position, size)
                problem, _ = self._check_at(chunk, 0, position, file_size)
                if problem is not None:
                    reason = "torn batch" if problem == "need_more" else problem
                    break
                header = read_header(chunk)
                self._account(position, header, header.base_offset)
                batches += 1
                cursor = size
            position += cursor
        return ScanResult(position, batches, file_size - position, reason)

    def _peek_size(self, position: int) -> int:
        header = self.pread(position, LENGTH_PREFIX_SIZE)
        return int.from_bytes(header[8:12], "little", signed=True) + LENGTH_PREFIX_SIZE

    def _check_at(
        self, chunk: bytes, cursor: int, position: int, file_size: int
    ) -> tuple[str | None, int]:
        """(problem or None, batch size) for the batch at `cursor` in `chunk`."""
        if len(chunk) - cursor < HEADER_SIZE:
            return ("need_more" if position + HEADER_SIZE <= file_size else "torn header"), 0
        header = read_header(chunk, cursor)
        size = header.size
        if header.batch_length < HEADER_SIZE - LENGTH_PREFIX_SIZE:
            return f"bad batch length {header.batch_length}", 0
        if position + size > file_size:
            return "torn batch", 0
        if cursor + size > len(chunk):
            return "need_more", 0
        if header.version != FORMAT_VERSION:
            return f"unknown batch version {header.version}", 0
        if header.base_offset != self.next_offset:
            return f"batch offset {header.base_offset}, expected {self.next_offset}", 0
        if header.record_count < 1 or header.last_offset_delta != header.record_count - 1:
            return "bad record count", 0
        if compute_crc(chunk, cursor, size) != header.crc:
            return "CRC mismatch", 0
        return None, size

    def resume_from_index(self) -> ScanResult:
        """Rebuild in-memory state from the last offset-index entry onward."""
        last = self.offset_index.last()
        relative, position = (last[0], last[1]) if last else (0, 0)
        try:
            before = self.time_index.floor(1, relative)
        except TimeIndexDamagedError:
            # nothing of the index is trusted: both are rebuilt from the start
            self.offset_index.truncate_entries(0)
            self.time_index.truncate_entries(0)
            return self.recover(0, self.base_offset, NO_TIMESTAMP)
        max_before = before[0] if before else NO_TIMESTAMP
        return self.recover(position, self.base_offset + relative, max_before)

    def recover(
        self, start_position: int, start_offset: int, start_max_timestamp: int
    ) -> ScanResult:
        """Validate and index everything from `start_position` (a batch boundary
        whose offset is `start_offset`), cutting a torn or corrupt tail."""
        self.offset_index.truncate_entries(self.offset_index.count_at_most(1, start_position - 1))
        relative = start_offset - self.base_offset
        self.time_index.truncate_entries(self.time_index.count_at_most(1, relative - 1))
        self.next_offset = start_offset
        self.size = start_position
        self.max_timestamp = start_max_timestamp
        last_time = self.time_index.last()
        self._time_entry_timestamp = last_time[0] if last_time else NO_TIMESTAMP
        last_entry = self.offset_index.last()
        self._bytes_since_index_entry = start_position - (last_entry[1] if last_entry else 0)
        if start_position > 0:
            self.first_timestamp = self.header_at(0).first_timestamp
        result = self.scan(start_position)
        if result.cut_bytes and good_batch_after(self, result.end_position, self.next_offset - 1):
            # a good batch follows: damage between acknowledged batches, not a
            # torn tail; the caller verifies the segment whole, nothing is cut
            return replace(result, damaged_inside=True)
        if result.cut_bytes:
            logger.warning(
                "segment %s: cut %d bytes after position %d (%s)",
                self.log_path,
                result.cut_bytes,
                result.end_position,
                result.cut_reason or "trailing bytes",
            )
            with self.file.pinned() as fd:
                durable.truncate_durably(fd, result.end_position)
        self.size = result.end_position
        return result

    def replace_indexes(self, verification: Verification) -> None:
        """Rebuild both indexes of a sealed segment from a verifying walk."""
        assert not self.writable
        self.offset_index.replace(bytes(verification.offset_entries))
        self.time_index.replace_with(verification.time_entries)
        self.max_timestamp = verification.max_timestamp

    def load_sealed_state(self, next_offset: int) -> None:
        """State of a sealed segment from its indexes, reading no batch data."""
        self.next_offset = next_offset
        try:
            last_time = self.time_index.last()
        except TimeIndexDamagedError:
            last_time = None  # the open's index check finds it and rebuilds the index
        self.max_timestamp = last_time[0] if last_time else NO_TIMESTAMP
        self.first_timestamp = NO_TIMESTAMP  # only the active segment rolls by age
