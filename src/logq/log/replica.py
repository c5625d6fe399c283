"""Checking batches a follower copies from its leader, before any is stored.

A leader validated each batch on append (structure, codecs, limits) and
stamped its offsets and epoch; a follower stores the leader's bytes as they
are. What it checks is that the data is whole batches that hold together
and arrived intact: every header field the log relies on, offsets that run
on without a gap, epochs that never go back, and the CRC32C over each body,
which proves the body is the one the leader validated, so no body is
decompressed. Size limits are the leader's: a limit lowered later must not
stop a follower from copying batches accepted under the old one.
"""

from __future__ import annotations

from logq.log import compression
from logq.log.batch import (
    FORMAT_VERSION,
    HEADER_SIZE,
    KNOWN_ATTRIBUTE_BITS,
    LENGTH_PREFIX_SIZE,
    BatchHeader,
    compute_crc,
    read_header,
)
from logq.log.epochs import EPOCH_MAX, OFFSET_MAX
from logq.log.errors import CorruptBatchError, InvalidBatchError


def check_replica_data(data: bytes | memoryview) -> list[tuple[int, BatchHeader]]:
    """(position, header) of each batch in `data`, which must be one or more
    whole batches, each following the one before (offsets and epochs).
    Raises InvalidBatchError (BADBATCH) or CorruptBatchError (CORRUPT)
    naming the first batch that fails; per batch work only."""
    found: list[tuple[int, BatchHeader]] = []
    position = 0
    while position < len(data):
        header = _check_header(data, position)
        if found:
            before = found[-1][1]
            if header.base_offset != before.next_offset:
                raise InvalidBatchError(
                    f"replica batch at byte {position} starts at offset {header.base_offset},"
                    f" the batch before it ends at {before.next_offset}"
                )
            if header.leader_epoch < before.leader_epoch:
                raise InvalidBatchError(
                    f"replica batch at offset {header.base_offset} has leader epoch"
                    f" {header.leader_epoch}, below {before.leader_epoch} before it"
                )
        if compute_crc(data, position, header.size) != header.crc:
            raise CorruptBatchError(
                f"replica batch at offset {header.base_offset}: CRC32C does not match its bytes"
            )
        found.append((position, header))
        position += header.size
    if not found:
        raise InvalidBatchError("no replica batch given")
    return found


def _check_header(data: bytes | memoryview, position: int) -> BatchHeader:
    left = len(data) - position
    if left < HEADER_SIZE:
        raise InvalidBatchError(f"torn replica batch header at byte {position}")
    header = read_header(data, position)
    where = f"replica batch at byte {position}"
    if header.batch_length < HEADER_SIZE - LENGTH_PREFIX_SIZE or header.size > left:
        raise InvalidBatchError(f"{where}: length field says {header.size} bytes, {left} are left")
    if header.version != FORMAT_VERSION:
        raise InvalidBatchError(f"{where}: version {header.version}, expected {FORMAT_VERSION}")
    if header.attributes & ~KNOWN_ATTRIBUTE_BITS or header.codec not in compression.NAMES:
        raise InvalidBatchError(f"{where}: unknown attributes {header.attributes:#06x}")
    count = header.record_count
    if count < 1 or header.last_offset_delta != count - 1:
        raise InvalidBatchError(
            f"{where}: record count {count} and last offset delta"
            f" {header.last_offset_delta} do not match"
        )
    if header.max_timestamp < header.first_timestamp:
        raise InvalidBatchError(f"{where}: max timestamp is before first timestamp")
    if not 0 <= header.base_offset <= OFFSET_MAX - count:
        raise InvalidBatchError(f"{where}: base offset {header.base_offset} is out of range")
    if not 0 <= header.leader_epoch <= EPOCH_MAX:
        raise InvalidBatchError(f"{where}: leader epoch {header.leader_epoch} is out of range")
    return header
