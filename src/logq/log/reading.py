"""Shaping a raw read into whole, verified batches, for every storage."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from logq.log.batch import HEADER_SIZE, LENGTH_PREFIX_SIZE, compute_crc, read_header
from logq.log.errors import DamagedDataError
from logq.log.storage import PartitionLog, ReadResult


def cut_whole_batches(
    data: bytes,
    log_end_offset: int,
    *,
    source: str,
    epoch_at: Callable[[int], int | None] | None = None,
) -> ReadResult:
    """Keep the whole batches at the front of `data`, each CRC-checked (and,
    with `epoch_at`, its leader epoch the one the log's epoch cache gives
    its offset: the CRC does not cover that field).

    A batch that fails is never served: if it comes first the read fails
    with DamagedDataError; otherwise the read stops just before it.
    """
    position = 0
    records = 0
    batches = 0
    first_offset = next_offset = -1
    while len(data) - position >= HEADER_SIZE:
        header = read_header(data, position)
        size = header.size
        if header.batch_length < HEADER_SIZE - LENGTH_PREFIX_SIZE or position + size > len(data):
            break
        if batches and header.base_offset != next_offset:
            break  # out of sequence (a damaged offset field): the next read finds out
        expected_epoch = None if epoch_at is None else epoch_at(header.base_offset)
        if compute_crc(data, position, size) != header.crc or (
            expected_epoch is not None and header.leader_epoch != expected_epoch
        ):
            if batches == 0:
                raise DamagedDataError(
                    f"batch at offset {header.base_offset} in {source} fails its CRC"
                    " or its leader epoch",
                    header.base_offset,
                    header.next_offset,
                )
            break
        if batches == 0:
            first_offset = header.base_offset
        next_offset = header.next_offset
        records += header.record_count
        batches += 1
        position += size
    if batches == 0:
        start = read_header(data).base_offset if len(data) >= HEADER_SIZE else log_end_offset
        raise DamagedDataError(f"no whole batch could be read from {source}", start, start + 1)
    served = data if position == len(data) else data[:position]
    return ReadResult(served, first_offset, next_offset, batches, records, log_end_offset)


def read_past_damage(log: PartitionLog, start: int, max_bytes: int) -> Iterator[ReadResult]:
    """Reads from `start` to the log's end for a scan of its own (dedup ids,
    lanes, producers, journals): ranges lost to damage on disk are passed
    over, as the log already logged and counted them."""
    offset = max(start, log.first_offset)
    while offset < log.next_offset:
        try:
            result = log.read(offset, max_bytes)
        except DamagedDataError as error:
            offset = max(error.end, offset + 1)
            continue
        if not result.data:
            return
        yield result
        offset = result.next_offset
