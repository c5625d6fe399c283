"""The dedup window: a second publish of the same `dedup_id` is not stored.

A message with a dedup id travels alone in its batch, marked with
attribute bit 8, its id in the header `logq-dedup-id`: the check then costs
one header block per such batch, and a batch is either stored whole or not
at all. Within the topic's `dedup_window` (5 minutes by default), a batch
whose id was seen answers with the first message's partition and offset
and stores nothing. Concurrent publishes of one id wait for the first.

Memory follows the ids seen within the window. Each partition's ids are
kept with its state (state/partition_state.py): a snapshot of the
partition's state holds them, and recovery, when the broker opens, reads
that snapshot and, only where a dedup mark says the data log may hold
dedup batches after it, the data log's tail from there (reading the header
block of the dedup-marked batches only). A partition whose snapshot came
from an earlier release, without ids, reads the batches of its last window
instead (found through the time index), once: its next snapshot has them.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

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
from logq.state.partition_state import DedupSeen, Recovered

HEADER_DEDUP_ID = "logq-dedup-id"
DEDUP_WINDOW_MS_DEFAULT = 5 * 60_000
DEDUP_ID_LENGTH_MAX = 256
SCAN_CHUNK_BYTES = 1 << 20


Seen = DedupSeen  # where the first message with an id went, until when


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
    """dedup id -> where the first message with it went, for one topic; the
    ids of each partition apart too, for its state snapshots.

    Ids remembered since the broker opened are kept oldest first, so the
    expired ones go from the front. Ids recovered at open are kept apart, as
    the recovery built them (no per-id work on the event loop), and go
    together once the last of them has expired: within one window."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, Seen] = OrderedDict()  # since open, oldest first
        self._by_partition: dict[int, dict[str, Seen]] = {}
        self._restored: dict[str, Seen] = {}  # recovered at open, every partition's
        self._restored_by_partition: dict[int, dict[str, Seen]] = {}
        self._restored_until_ms = 0  # when the last recovered id expires
        self._claims: dict[str, asyncio.Future[Seen]] = {}
        self.batches_read_at_open = 0  # of the data logs, to recover the ids

    def __len__(self) -> int:
        """Ids held (one published again after it expired may count twice)."""
        return len(self._seen) + len(self._restored)

    def _expire(self, now_ms: int) -> None:
        if self._restored and self._restored_until_ms <= now_ms:
            self._restored, self._restored_by_partition = {}, {}
        while self._seen:
            key, seen = next(iter(self._seen.items()))
            if seen.expires_ms > now_ms:
                break
            del self._seen[key]
            self._by_partition[seen.partition].pop(key, None)

    def lookup(self, dedup_id: str, now_ms: int) -> Seen | asyncio.Future[Seen] | None:
        """The first message, a publish of it still in progress, or None."""
        self._expire(now_ms)
        seen = self._seen.get(dedup_id) or self._restored.get(dedup_id)
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
        earlier = self._seen.get(dedup_id)
        if earlier is not None:  # expired, not yet swept: it may sit in another partition
            self._by_partition[earlier.partition].pop(dedup_id, None)
        self._seen[dedup_id] = seen
        self._seen.move_to_end(dedup_id)
        self._by_partition.setdefault(seen.partition, {})[dedup_id] = seen

    def restore(self, partition: int, found: dict[str, Seen], until_ms: int) -> None:
        """Take a partition's ids as recovery found them (at open, before any
        publish); `until_ms`: when the last of them expires."""
        assert not self._claims
        self._restored_by_partition[partition] = found
        self._restored.update(found)
        self._restored_until_ms = max(self._restored_until_ms, until_ms)

    def partition_ids(self, partition: int) -> dict[str, Seen]:
        """The ids stored in `partition`, oldest first (a state snapshot
        encodes them as they are, in the same turn of the event loop)."""
        restored = self._restored_by_partition.get(partition)
        since_open = self._by_partition.get(partition)
        if restored and since_open:
            return {**restored, **since_open}
        return restored or since_open or {}


def keeps_no_ids(found: Recovered) -> bool:
    """Whether a recovered state log's snapshot came from a release that
    kept no dedup ids in it (its partition reads its window instead)."""
    return found.snapshot_offset is not None and found.dedup is None


def recover_partition_ids(
    log: PartitionLog,
    partition: int,
    found: Recovered,
    now_ms: int,
    window_ms: int,
    *,
    read_window: bool = False,
) -> tuple[dict[str, Seen], int]:
    """A partition's dedup ids within their window, from its recovered state
    and, where needed, its data log; and how many batches of the data log
    were read for them (blocking). `read_window`: the state came from a
    release that kept no ids, so the last window's batches are read."""
    since_ms = now_ms - window_ms
    if read_window:
        return scan_recent(log, partition, since_ms, window_ms, log.first_offset)
    ids = {key: seen for key, seen in (found.dedup or {}).items() if seen.expires_ms > now_ms}
    if found.dedup_scan_from is None:
        return ids, 0
    tail, read = scan_recent(log, partition, since_ms, window_ms, found.dedup_scan_from)
    ids.update(tail)
    return ids, read


def expires_last_ms(ids: dict[str, Seen]) -> int:
    """When the last of `ids` expires (0: none)."""
    return max(ids.values(), key=_expiry).expires_ms if ids else 0


def _expiry(seen: Seen) -> int:
    return seen.expires_ms


def scan_recent(
    log: PartitionLog, partition: int, since_ms: int, window_ms: int, start: int
) -> tuple[dict[str, Seen], int]:
    """(id -> where) of the dedup-marked batches stored from `start` on and
    since `since_ms` (found through the time index), and how many batches
    were read (blocking). Only the marked batches' header blocks are decoded."""
    found: dict[str, Seen] = {}
    in_window = log.offset_for_time(since_ms)
    if in_window is None:
        return found, 0
    offset = max(in_window, start, log.first_offset)
    batches = 0
    for result in read_past_damage(log, offset, SCAN_CHUNK_BYTES):
        data = result.data
        batches += result.batch_count
        for position, header in iter_headers(data):
            if header.attributes & DEDUP and header.max_timestamp >= since_ms:
                blocks = decode_batch(data, position).header_blocks
                dedup_id = decode_headers(blocks[0]).get(HEADER_DEDUP_ID) if blocks[0] else None
                if dedup_id:
                    found.pop(dedup_id, None)  # kept in the order stored
                    found[dedup_id] = Seen(
                        partition, header.base_offset, header.max_timestamp + window_ms
                    )
    return found, batches
