"""The dedup window: a second publish of the same `dedup_id` is not stored.

A message with a dedup id travels alone in its batch, marked with
attribute bit 8, its id in the header `logq-dedup-id`: the check then costs
one header block per such batch, and a batch is either stored whole or not
at all. Within the topic's `dedup_window` (5 minutes by default), a batch
whose id was seen answers with the first message's partition and offset
and stores nothing. Concurrent publishes of one id wait for the first.

Memory follows the ids seen within the window. After a restart the table is
rebuilt, on the first dedup publish to the topic, from the batches of the
last window (found through the time index): the messages themselves are
the durable record. One rebuild runs at a time; publishes that come
meanwhile wait for it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

from logq.errors import BadBatchError
from logq.log import PartitionLog, read_past_damage
from logq.log.batch import (
    DEDUP,
    HEADER_SIZE,
    decode_batch,
    decode_headers,
    iter_headers,
    read_header,
    validate_batch,
)

HEADER_DEDUP_ID = "logq-dedup-id"
DEDUP_WINDOW_MS_DEFAULT = 5 * 60_000
DEDUP_ID_LENGTH_MAX = 256
SCAN_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Seen:
    partition: int
    offset: int
    expires_ms: int


def dedup_id_of(batch: bytes, size_bytes_max: int, records_max: int) -> str | None:
    """The dedup id of a batch marked with one (which must hold one record);
    a marked batch is validated whole (CRC, structure) before it is read."""
    if len(batch) < HEADER_SIZE or not read_header(batch).attributes & DEDUP:
        return None
    header = validate_batch(batch, size_bytes_max=size_bytes_max, records_max=records_max)
    if header.record_count != 1:
        raise BadBatchError(
            f"a batch with a dedup id holds one record, this one holds {header.record_count}"
        )
    blocks = decode_batch(batch).header_blocks
    dedup_id = decode_headers(blocks[0]).get(HEADER_DEDUP_ID) if blocks[0] else None
    if not dedup_id or len(dedup_id) > DEDUP_ID_LENGTH_MAX:
        raise BadBatchError(
            f"a batch marked for dedup needs a {HEADER_DEDUP_ID} header of 1..{DEDUP_ID_LENGTH_MAX} characters"
        )
    return dedup_id


class DedupTable:
    """dedup id -> where the first message with it went, for one topic."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, Seen] = OrderedDict()
        self._claims: dict[str, asyncio.Future[Seen]] = {}
        self.loaded = False
        self.loading: asyncio.Future[None] | None = None  # the one rebuild under way

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now_ms: int) -> None:
        while self._seen:
            key, seen = next(iter(self._seen.items()))
            if seen.expires_ms > now_ms:
                break
            del self._seen[key]

    def lookup(self, dedup_id: str, now_ms: int) -> Seen | asyncio.Future[Seen] | None:
        """The first message, a publish of it still in progress, or None."""
        self._expire(now_ms)
        seen = self._seen.get(dedup_id)
        if seen is not None and seen.expires_ms > now_ms:
            return seen
        return self._claims.get(dedup_id)

    def claim(self, dedup_id: str) -> asyncio.Future[Seen]:
        future: asyncio.Future[Seen] = asyncio.get_running_loop().create_future()
        self._claims[dedup_id] = future
        return future

    def settle(self, dedup_id: str, seen: Seen | None, error: BaseException | None = None) -> None:
        """End a claim: stored at `seen`, or failed with `error` (then forgotten)."""
        future = self._claims.pop(dedup_id)
        if seen is not None:
            self.remember(dedup_id, seen)
            future.set_result(seen)
        else:
            future.set_exception(error or RuntimeError("publish failed"))
            future.exception()

    def remember(self, dedup_id: str, seen: Seen) -> None:
        self._seen[dedup_id] = seen
        self._seen.move_to_end(dedup_id)


def scan_recent(
    log: PartitionLog, partition: int, since_ms: int, window_ms: int
) -> list[tuple[str, Seen]]:
    """(id, where) of the dedup-marked batches stored since `since_ms` (blocking)."""
    start = log.offset_for_time(since_ms)
    found: list[tuple[str, Seen]] = []
    offset = log.first_offset if start is None else max(start, log.first_offset)
    if start is None:
        return found
    for result in read_past_damage(log, offset, SCAN_CHUNK_BYTES):
        data = result.data
        for position, header in iter_headers(data):
            if header.attributes & DEDUP and header.max_timestamp >= since_ms:
                blocks = decode_batch(data, position).header_blocks
                dedup_id = decode_headers(blocks[0]).get(HEADER_DEDUP_ID) if blocks[0] else None
                if dedup_id:
                    seen = Seen(partition, header.base_offset, header.max_timestamp + window_ms)
                    found.append((dedup_id, seen))
    return found
