"""Leader epochs: the epoch each batch is stamped with, and where each began.

Replication fences deposed leaders by epoch: every batch carries the leader
epoch it was appended in (header bytes 12..16, outside the CRC, written by
the log as it writes the base offset), and each log keeps an epoch cache,
Kafka's leader-epoch cache: the offset at which each epoch's batches begin.
A follower asks its new leader where the follower's last epoch ends
(`end_offset_for`) and truncates there, so a log never keeps batches that
the new leader does not hold.

The cache and the log's current leader epoch are kept in `leader-epochs`,
a small file with a CRC32C replaced atomically (`durable.write_atomic`).
It is written ahead of the data: before a batch that starts a new epoch is
written, the file already names that epoch's start, so the file covers every
batch on disk; on open, entries the recovered log no longer holds (a crash
lost the batch, or a truncation or retention did not get to rewrite the
file) are trimmed. A file that is missing (logs of earlier releases) or
does not verify is not trusted: the cache is rebuilt from batch headers.

The same file marks a truncate-fully under way (`start_at`): written before
any segment is removed and cleared before the next batch is written, so an
interrupted one is finished on open and a finished one is never redone.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from crc32c import crc32c

from logq.log import durable
from logq.log.batch import FORMAT_VERSION, HEADER_SIZE, LENGTH_PREFIX_SIZE, BatchHeader, read_header
from logq.log.checkpoint import drop_checkpoint
from logq.log.errors import InvalidEpochError, OffsetOutOfRangeError, StaleEpochError
from logq.log.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    parse_segment_name,
    segment_name,
)

logger = logging.getLogger(__name__)

EPOCH_FILE_NAME = "leader-epochs"
EPOCH_MAX = 2**31 - 1  # the header field is an i32
OFFSET_MAX = 2**63 - 1  # offsets are i64
NO_EPOCH = -1
NO_OFFSET = -1

_MAGIC = b"LQLE"
_FILE_VERSION = 1
# magic, version, leader_epoch, start_at, entry count
_HEAD = struct.Struct("<4sHiqI")
_ENTRY = struct.Struct("<iq")  # epoch, start offset
_CRC = struct.Struct("<I")
# One entry per leader change still in the log: a million is far beyond any
# real history, and bounds what opening a log reads from this file.
ENTRIES_MAX = 1 << 20
EPOCH_FILE_BYTES_MAX = _HEAD.size + ENTRIES_MAX * _ENTRY.size + _CRC.size
# The rebuild reads segments in windows of this size, headers only.
SCAN_WINDOW_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EpochState:
    """A log's leader epoch and epoch cache.

    `entries` are (epoch, start offset) pairs, both strictly increasing: the
    batches from a start offset up to the next entry's start (or the log
    end, for the last) were appended in that epoch. `leader_epoch` is never
    below the last entry's epoch. `start_at` is NO_OFFSET, or the offset of
    a truncate-fully still under way."""

    leader_epoch: int = 0
    entries: tuple[tuple[int, int], ...] = ()
    start_at: int = NO_OFFSET

    @property
    def latest_epoch(self) -> int:
        return self.entries[-1][0] if self.entries else NO_EPOCH

    def with_epoch_from(self, epoch: int, start_offset: int) -> EpochState:
        """Note that a batch of `epoch` starts at `start_offset`: a new entry
        when the epoch is above the latest one (entries starting at or past
        it go, as in Kafka's assign), else unchanged."""
        if epoch <= self.latest_epoch:
            return self
        kept = tuple(entry for entry in self.entries if entry[1] < start_offset)
        return dataclasses.replace(
            self,
            leader_epoch=max(self.leader_epoch, epoch),
            entries=(*kept, (epoch, start_offset)),
        )

    def truncated_from_end(self, end_offset: int) -> EpochState:
        """Entries starting at or past `end_offset` go (the log now ends there)."""
        kept = tuple(entry for entry in self.entries if entry[1] < end_offset)
        return self if kept == self.entries else dataclasses.replace(self, entries=kept)

    def truncated_from_start(self, start_offset: int) -> EpochState:
        """Entries wholly before `start_offset` go; the one holding it starts there."""
        below = bisect.bisect_right([start for _, start in self.entries], start_offset)
        if below == 0:
            return self
        epoch, start = self.entries[below - 1]
        kept = ((epoch, max(start, start_offset)), *self.entries[below:])
        return self if kept == self.entries else dataclasses.replace(self, entries=kept)

    def end_offset_for(self, epoch: int, log_end: int) -> tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch answer; see `PartitionLog.end_offset_for_epoch`."""
        epochs = [entry_epoch for entry_epoch, _ in self.entries]
        index = bisect.bisect_right(epochs, epoch) - 1
        if index < 0:
            return NO_EPOCH, NO_OFFSET
        if index == len(self.entries) - 1:
            return epochs[index], log_end
        return epochs[index], self.entries[index + 1][1]


def check_epoch(epoch: int) -> None:
    if not 0 <= epoch <= EPOCH_MAX:
        raise InvalidEpochError(f"leader epoch {epoch} is outside 0..{EPOCH_MAX}")


def check_start_offset(offset: int) -> None:
    if not 0 <= offset < OFFSET_MAX:
        raise OffsetOutOfRangeError(f"a log cannot start at offset {offset}")


# -- the file ------------------------------------------------------------------------


def encode_state(state: EpochState) -> bytes:
    parts = [
        _HEAD.pack(_MAGIC, _FILE_VERSION, state.leader_epoch, state.start_at, len(state.entries))
    ]
    parts.extend(_ENTRY.pack(epoch, start) for epoch, start in state.entries)
    body = b"".join(parts)
    return body + _CRC.pack(crc32c(body))


def decode_state(data: bytes) -> EpochState | None:
    """The state `data` holds, or None unless every check passes."""
    if not _HEAD.size + _CRC.size <= len(data) <= EPOCH_FILE_BYTES_MAX:
        return None
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if crc32c(memoryview(data)[: -_CRC.size]) != crc:
        return None
    magic, version, leader_epoch, start_at, count = _HEAD.unpack_from(data)
    if magic != _MAGIC or version != _FILE_VERSION:
        return None
    if len(data) != _HEAD.size + count * _ENTRY.size + _CRC.size:
        return None
    entries = tuple(_ENTRY.iter_unpack(data[_HEAD.size : -_CRC.size]))
    pairs = list(itertools.pairwise(entries))
    if (
        not 0 <= leader_epoch <= EPOCH_MAX
        or not NO_OFFSET <= start_at < OFFSET_MAX
        or any(epoch < 0 or start < 0 for epoch, start in entries)
        or any(a[0] >= b[0] or a[1] >= b[1] for a, b in pairs)
        or (entries and entries[-1][0] > leader_epoch)
    ):
        return None
    return EpochState(leader_epoch, entries, start_at)


def read_epoch_file(directory: Path) -> EpochState | None:
    """The state kept in `directory`, or None when the file is missing or bad."""
    path = directory / EPOCH_FILE_NAME
    try:
        with path.open("rb") as file:
            data = file.read(EPOCH_FILE_BYTES_MAX + 1)
    except FileNotFoundError:
        return None
    state = decode_state(data)
    if state is None:
        logger.warning("%s does not verify: the epoch cache is rebuilt from batch headers", path)
    return state


def finish_fresh_start(directory: Path, offset: int) -> None:
    """Finish a truncate-fully that a crash interrupted: remove every segment
    and index, and leave one empty segment named by `offset`."""
    doomed = [
        path
        for path in directory.iterdir()
        if path.suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX)
        and parse_segment_name(f"{path.stem}{LOG_SUFFIX}") is not None
    ]
    durable.remove_files(doomed)
    drop_checkpoint(directory)
    fd = os.open(directory / f"{segment_name(offset)}{LOG_SUFFIX}", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    durable.sync_directory(directory)
    logger.warning("log %s: finished starting afresh at offset %d", directory, offset)


# -- rebuilding from batch headers ---------------------------------------------------------


class HeaderSource(Protocol):
    @property
    def base_offset(self) -> int: ...
    @property
    def next_offset(self) -> int: ...
    @property
    def size(self) -> int: ...

    def pread(self, position: int, size: int) -> bytes: ...


def _headers(segment: HeaderSource) -> Iterator[BatchHeader]:
    """Headers of the segment's batches, in windows, up to the first that
    does not hold together (damage: verification reports it, not this)."""
    position, expected = 0, segment.base_offset
    while segment.size - position >= HEADER_SIZE:
        window = segment.pread(position, min(SCAN_WINDOW_BYTES, segment.size - position))
        cursor = 0
        while len(window) - cursor >= HEADER_SIZE:
            header = read_header(window, cursor)
            if (
                header.base_offset != expected
                or header.version != FORMAT_VERSION
                or header.batch_length < HEADER_SIZE - LENGTH_PREFIX_SIZE
                or header.record_count < 1
                or position + cursor + header.size > segment.size
            ):
                return
            yield header
            expected = header.next_offset
            cursor += header.size
        position += cursor  # the next header may start past this window


def scan_epochs(segments: Sequence[HeaderSource], leader_epoch: int = 0) -> EpochState:
    """The epoch cache rebuilt from batch headers. Epochs never decrease
    along a log, so a sealed segment whose first batch has the epoch of the
    next segment's first batch holds that epoch throughout: only segments
    where the epoch changes (and the active one) are walked."""
    firsts: list[tuple[HeaderSource, int]] = []
    for segment in segments:
        if segment.size >= HEADER_SIZE:
            firsts.append((segment, read_header(segment.pread(0, HEADER_SIZE)).leader_epoch))
    state = EpochState(leader_epoch=leader_epoch)
    for index, (segment, epoch) in enumerate(firsts):
        following = firsts[index + 1][1] if index + 1 < len(firsts) else None
        if following == epoch and 0 <= epoch <= EPOCH_MAX:
            state = state.with_epoch_from(epoch, segment.base_offset)
            continue
        for header in _headers(segment):
            if 0 <= header.leader_epoch <= EPOCH_MAX:
                state = state.with_epoch_from(header.leader_epoch, header.base_offset)
    return state


# -- the live object ----------------------------------------------------------------------


class LeaderEpochs:
    """A log's epochs in memory and, with a directory, in its epoch file.

    Whatever a batch written next depends on is in the file before the batch
    is written (`stamp`, `note_replica`); trims after truncation or
    retention are written at once too, but a failure there is only logged:
    the file still covers the data, opening trims it, and the next batch
    written rewrites it first."""

    def __init__(
        self,
        directory: Path | None,
        state: EpochState | None = None,
        written: EpochState | None = None,
    ) -> None:
        self._directory = directory
        self._state = state or EpochState()
        # What the file holds (None: unknown or bad, so it is rewritten).
        self._written = written
        # No file was found and none written since: a crash that loses the
        # first one written is as good as one that keeps it (see `stamp`).
        self._no_file = False

    @classmethod
    def recovered(
        cls, directory: Path, stored: EpochState | None, segments: Sequence[HeaderSource]
    ) -> LeaderEpochs:
        """The epochs of a log just opened, from its file (`stored`, trimmed
        to what the log holds) or, lacking a good one, from its batches."""
        if stored is None:
            state = scan_epochs(segments)
            bad = (directory / EPOCH_FILE_NAME).exists()
            epochs = cls(directory, state, None if bad else EpochState())
            epochs._no_file = not bad
        else:
            state = dataclasses.replace(stored, start_at=NO_OFFSET)
            state = state.truncated_from_end(segments[-1].next_offset)
            state = state.truncated_from_start(segments[0].base_offset)
            epochs = cls(directory, state, stored)
        epochs.write(required=False)
        return epochs

    @property
    def state(self) -> EpochState:
        return self._state

    @property
    def leader_epoch(self) -> int:
        return self._state.leader_epoch

    def set_leader_epoch(self, epoch: int) -> None:
        check_epoch(epoch)
        if epoch < self._state.leader_epoch:
            raise StaleEpochError(
                f"leader epoch {epoch} is below the log's epoch {self._state.leader_epoch}"
            )
        self._change(dataclasses.replace(self._state, leader_epoch=epoch))

    def stamp(self, base_offset: int) -> int:
        """The epoch for a batch about to be written at `base_offset`, its
        start noted (in the file first) when it begins a new epoch."""
        state = self._state
        if state.leader_epoch > state.latest_epoch or self._written is not state:
            # A log without a file (a new one) writes its first without
            # fsyncing the directory: should a crash lose its name, the
            # cache is rebuilt from the batch headers, which tell the same
            # (this epoch begins at this batch, and no leader epoch was set
            # above it: setting one writes the file durably).
            self._change(
                state.with_epoch_from(state.leader_epoch, base_offset),
                sync_parent=not self._no_file,
            )
        return state.leader_epoch

    def note_replica(self, headers: Sequence[BatchHeader]) -> None:
        """Note the epochs of replica batches about to be written (their
        epochs never decrease: the caller checked), in the file first."""
        first = headers[0].leader_epoch
        if first < self._state.latest_epoch:
            raise StaleEpochError(
                f"replica batch at offset {headers[0].base_offset} has leader epoch {first},"
                f" below the log's last epoch {self._state.latest_epoch}"
            )
        state = self._state
        for header in headers:
            state = state.with_epoch_from(header.leader_epoch, header.base_offset)
        self._change(state)

    def truncate_from_end(self, end_offset: int) -> None:
        self._state = self._state.truncated_from_end(end_offset)
        self.write(required=False)

    def truncate_from_start(self, start_offset: int) -> None:
        self._state = self._state.truncated_from_start(start_offset)
        self.write(required=False)

    def begin_fresh_start(self, offset: int) -> None:
        """Mark a truncate-fully to `offset` in the file before it starts."""
        self._change(EpochState(self._state.leader_epoch, (), offset))

    def end_fresh_start(self) -> None:
        self._state = dataclasses.replace(self._state, start_at=NO_OFFSET)
        self.write(required=False)

    def end_offset_for(self, epoch: int, log_end: int) -> tuple[int, int]:
        return self._state.end_offset_for(epoch, log_end)

    def _change(self, state: EpochState, *, sync_parent: bool = True) -> None:
        """Adopt `state` once the file holds it (nothing changes if it cannot)."""
        previous = self._state
        self._state = state
        try:
            self.write(required=True, sync_parent=sync_parent)
        except OSError:
            self._state = previous
            raise

    def write(self, *, required: bool, sync_parent: bool = True) -> None:
        """Bring the file up to date; on failure raise if `required`, else log."""
        if self._written is self._state:
            return
        if self._written == self._state or self._directory is None:
            self._written = self._state
            return
        try:
            durable.write_atomic(
                self._directory / EPOCH_FILE_NAME,
                encode_state(self._state),
                sync_parent=sync_parent,
            )
        except OSError as error:
            if required:
                raise
            logger.warning(
                "log %s: epoch file not updated (%s); it is rewritten before the next batch",
                self._directory,
                error.strerror or error,
            )
            return
        self._written = self._state
        self._no_file = False
