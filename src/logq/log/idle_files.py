"""What a partition log not opened tells from its files alone.

A broker holds tens of thousands of partitions, most of them idle: opening
one (listing its segments, reading its checkpoint and indexes, maybe a
scan) costs far more than the timed passes over it need. Retention and the
scrubber ask these questions of a log not opened instead, and open it only
when the answer says there may be something to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from logq.log.batch import HEADER_SIZE, read_header, validate_batch
from logq.log.checkpoint import CheckpointDamagedError, read_checkpoint
from logq.log.config import LogConfig
from logq.log.errors import LogError
from logq.log.segment import LOG_SUFFIX, parse_segment_name, segment_name

# A log whose retention has no time limit and whose size is within its
# limit is never due until written (which opens it).
RETENTION_NEVER_MS = 2**63 - 1
# The first batch of a segment is read to learn when it may expire, when
# it is at most this long (a longer one: the log is opened instead).
FIRST_BATCH_READ_BYTES_MAX = 1 << 20


def segment_bases(directory: str) -> list[int]:
    """Base offsets of the segment files in a log's directory, in order
    (none when it has no directory yet)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(base for base in map(parse_segment_name, names) if base is not None)


def stored_figures_from_files(directory: str) -> tuple[int, int, int] | None:
    """(first offset, next offset, size in bytes) of the log in `directory`
    when its recovery checkpoint names the end of its active segment (it was
    closed cleanly, or nothing came after the checkpoint); None otherwise
    (open the log to know)."""
    bases = segment_bases(directory)
    if not bases:
        return None
    try:
        checkpoint = read_checkpoint(Path(directory))
    except CheckpointDamagedError:
        return None  # opening the log reports it and scans instead
    if checkpoint is None or checkpoint.segment != bases[-1]:
        return None
    try:
        sizes = [os.stat(_segment_path(directory, base)).st_size for base in bases]
    except FileNotFoundError:
        return None
    if checkpoint.position != sizes[-1]:
        return None
    return bases[0], checkpoint.next_offset, sum(sizes)


def retention_due_from_files(directory: str, config: LogConfig) -> int:
    """The earliest time retention may delete a segment of the log in
    `directory` (0: it may now; open the log to see). Its oldest segment
    cannot expire before its first batch's newest timestamp (read, its CRC
    checked) plus the retention; by size, only a log holding more than the
    limit in more than one segment may lose one."""
    bases = segment_bases(directory)
    if not bases:
        return 0
    if config.retention_bytes is not None and len(bases) > 1:
        sizes = sum(os.stat(_segment_path(directory, base)).st_size for base in bases)
        if sizes > config.retention_bytes:
            return 0
    if config.retention_ms is None:
        return RETENTION_NEVER_MS
    first = first_batch_max_timestamp(_segment_path(directory, bases[0]), config)
    return 0 if first is None else first + config.retention_ms


def first_batch_max_timestamp(path: str, config: LogConfig) -> int | None:
    """The newest timestamp of the first batch of a segment file, once its
    CRC holds; None when it cannot be read whole or does not verify."""
    try:
        with open(path, "rb") as file:
            head = file.read(HEADER_SIZE)
            if len(head) < HEADER_SIZE:
                return None
            header = read_header(head)
            if not HEADER_SIZE <= header.size <= FIRST_BATCH_READ_BYTES_MAX:
                return None
            batch = head + file.read(header.size - HEADER_SIZE)
        validate_batch(
            batch, size_bytes_max=FIRST_BATCH_READ_BYTES_MAX, records_max=config.batch_records_max
        )
    except (OSError, LogError):
        return None
    return header.max_timestamp


def _segment_path(directory: str, base: int) -> str:
    return os.path.join(directory, f"{segment_name(base)}{LOG_SUFFIX}")
