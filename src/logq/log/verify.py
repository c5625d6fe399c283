"""Verifying a segment whole, without cutting anything.

Recovery cuts a torn tail of the active segment: nothing after it was ever
acknowledged. Damage anywhere else (a flipped byte in a sealed segment, a
segment shortened on disk, a bad batch below the recovery checkpoint) lies
between acknowledged batches, so cutting there would throw away intact data.
Verification walks every batch instead, checking its header, its offset
continuity and its CRC32C; at a batch that fails it searches forward, byte by
byte, for the next batch that passes every check and continues from there.
What is lost is exactly the offsets between the last good batch and the next
one (or the segment's end offset when none follows), each such gap reported
as a `DamagedRange`. The walk also yields fresh index entries, so a damaged
index can be rebuilt from the same pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from logq.log.batch import (
    FORMAT_VERSION,
    HEADER_SIZE,
    LENGTH_PREFIX_SIZE,
    VERSION_AT,
    BatchHeader,
    compute_crc,
    read_header,
)
from logq.log.index import OFFSET_ENTRY

# The walk reads the segment in windows of this size; a larger batch is read whole.
WINDOW_BYTES = 1024 * 1024
NO_TIMESTAMP = -1


@dataclass(frozen=True, slots=True)
class DamagedRange:
    """Offsets [start, end) of a partition lost to damage on disk."""

    start: int
    end: int
    segment: str  # file name of the segment holding the damage
    position: int  # byte position in that file where the damage begins
    resume_position: int  # position of the first good batch after it (file end if none)
    reason: str

    def describe(self) -> str:
        return (
            f"offsets {self.start}..{self.end - 1} lost to damage in {self.segment}"
            f" at byte {self.position} ({self.reason})"
        )


@dataclass(slots=True)
class Verification:
    """What a walk over a segment found."""

    damaged: list[DamagedRange] = field(default_factory=list)
    offset_entries: bytearray = field(default_factory=bytearray)
    time_entries: list[tuple[int, int]] = field(default_factory=list)  # (T, relative offset)
    batches: int = 0
    checked_bytes: int = 0
    end_position: int = 0
    next_offset: int = 0
    max_timestamp: int = NO_TIMESTAMP


class VerifyInterruptedError(Exception):
    """Raised by a pace callback to stop a verification part way."""


class SegmentFile(Protocol):
    @property
    def base_offset(self) -> int: ...
    @property
    def log_path(self) -> os.PathLike[str]: ...

    def pread(self, position: int, size: int) -> bytes: ...

    def file_size(self) -> int: ...


class _Window:
    """A cached window of the file, so the walk reads it in large pieces."""

    def __init__(self, segment: SegmentFile, file_size: int) -> None:
        self._segment = segment
        self._file_size = file_size
        self._start = 0
        self._data = b""

    def get(self, position: int, size: int) -> bytes | None:
        """`size` bytes at `position`, or None when the file is shorter."""
        if position + size > self._file_size:
            return None
        offset = position - self._start
        if offset < 0 or offset + size > len(self._data):
            self._start = position
            self._data = self._segment.pread(position, max(size, WINDOW_BYTES))
            offset = 0
            if len(self._data) < size:
                return None
        return self._data[offset : offset + size]


EpochAt = Callable[[int], int | None]


def check_batch(
    window: _Window,
    position: int,
    expected_offset: int | None,
    end_offset: int,
    epoch_at: EpochAt | None = None,
) -> tuple[BatchHeader | None, str]:
    """The header of the good batch at `position`, or None and why it is not one.

    `expected_offset` None accepts any base offset after nothing (a resync
    candidate then only has to lie inside the segment's offsets).
    `epoch_at(offset)`: the leader epoch the log's epoch cache gives the
    batch at that offset (None: unknown), which its header must carry: the
    CRC does not cover the epoch field, the cache does."""
    head = window.get(position, HEADER_SIZE)
    if head is None:
        return None, "torn batch header"
    header = read_header(head)
    if header.batch_length < HEADER_SIZE - LENGTH_PREFIX_SIZE:
        return None, f"bad batch length {header.batch_length}"
    if header.version != FORMAT_VERSION:
        return None, f"unknown batch version {header.version}"
    if expected_offset is not None and header.base_offset != expected_offset:
        return None, f"batch offset {header.base_offset}, expected {expected_offset}"
    if header.record_count < 1 or header.last_offset_delta != header.record_count - 1:
        return None, "bad record count"
    if header.next_offset > end_offset:
        return None, f"batch ends at offset {header.next_offset}, past {end_offset}"
    body = window.get(position, header.size)
    if body is None:
        return None, "torn batch"
    if compute_crc(body, 0, header.size) != header.crc:
        return None, "CRC mismatch"
    expected_epoch = None if epoch_at is None else epoch_at(header.base_offset)
    if expected_epoch is not None and header.leader_epoch != expected_epoch:
        return None, f"leader epoch {header.leader_epoch}, its epoch cache says {expected_epoch}"
    return header, ""


def _resync(
    window: _Window,
    position: int,
    after_offset: int,
    end_offset: int,
    file_size: int,
    epoch_at: EpochAt | None = None,
) -> tuple[int, BatchHeader] | None:
    """The first good batch past `position` holding offsets past `after_offset`."""
    candidate = position + 1
    version = bytes([FORMAT_VERSION])
    while candidate + HEADER_SIZE <= file_size:
        span = min(WINDOW_BYTES, file_size - candidate)
        chunk = window.get(candidate, span)
        if chunk is None:
            return None
        found = chunk.find(version, VERSION_AT)
        while found != -1:
            start = candidate + found - VERSION_AT
            header, _ = check_batch(window, start, None, end_offset, epoch_at)
            if header is not None and after_offset < header.base_offset:
                return start, header
            found = chunk.find(version, found + 1)
        candidate += max(span - VERSION_AT, 1)
    return None


OPEN_END = 2**62  # the end offset of an active segment, which has none yet


def good_batch_after(segment: SegmentFile, position: int, after_offset: int) -> int | None:
    """Position of the first batch past `position` that passes every check
    and holds offsets past `after_offset` (the file's size bounds the search)."""
    file_size = segment.file_size()
    found = _resync(_Window(segment, file_size), position, after_offset, OPEN_END, file_size)
    return None if found is None else found[0]


def verify_segment(
    segment: SegmentFile,
    end_offset: int,
    *,
    end_position: int | None = None,
    index_interval_bytes: int = 4096,
    pace: Callable[[int], None] | None = None,
    epoch_at: EpochAt | None = None,
) -> Verification:
    """Walk `segment` up to `end_position` (default: its file size), whose
    offsets should run from its base up to `end_offset` (OPEN_END: up to
    wherever its last good batch ends, for an active one). `pace(bytes)` is
    called after each window's worth of batches (a scrubber throttles there)."""
    file_size = segment.file_size() if end_position is None else end_position
    window = _Window(segment, file_size)
    result = Verification(next_offset=segment.base_offset)
    name = os.fspath(segment.log_path).rsplit("/", 1)[-1]
    position = 0
    since_entry = 0
    time_entry_timestamp = NO_TIMESTAMP
    paced = 0
    while position < file_size and result.next_offset < end_offset:
        header, reason = check_batch(window, position, result.next_offset, end_offset, epoch_at)
        if header is None:
            found = _resync(window, position, result.next_offset, end_offset, file_size, epoch_at)
            resume, resume_offset = (file_size, end_offset)
            if found is not None:
                resume, resume_offset = found[0], found[1].base_offset
            result.damaged.append(
                DamagedRange(result.next_offset, resume_offset, name, position, resume, reason)
            )
            result.checked_bytes += resume - position
            position, result.next_offset = resume, resume_offset
            since_entry = index_interval_bytes  # an entry right after the damage
            continue
        relative = header.base_offset - segment.base_offset
        if since_entry >= index_interval_bytes:
            result.offset_entries += OFFSET_ENTRY.pack(relative, position)
            if result.max_timestamp > time_entry_timestamp:
                result.time_entries.append((result.max_timestamp, relative))
                time_entry_timestamp = result.max_timestamp
            since_entry = 0
        since_entry += header.size
        result.max_timestamp = max(result.max_timestamp, header.max_timestamp)
        result.batches += 1
        result.checked_bytes += header.size
        position += header.size
        result.next_offset = header.next_offset
        if pace is not None and result.checked_bytes - paced >= WINDOW_BYTES:
            pace(result.checked_bytes - paced)
            paced = result.checked_bytes
    if result.next_offset < end_offset and end_offset != OPEN_END:
        reason = "the segment ends before its last offsets (truncated)"
        result.damaged.append(
            DamagedRange(result.next_offset, end_offset, name, position, file_size, reason)
        )
        result.next_offset = end_offset
    end_relative = result.next_offset - segment.base_offset
    if end_relative > 0 and end_offset != OPEN_END:
        # the final entry a sealed segment's index ends with (docs/format.md)
        result.time_entries.append((result.max_timestamp, end_relative))
    result.end_position = position
    if pace is not None and result.checked_bytes > paced:
        pace(result.checked_bytes - paced)
    return result
