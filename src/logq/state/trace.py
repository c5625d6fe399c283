"""The trace journal: what happened to messages, kept in a log of the storage engine.

Each record says what happened to a *range* of offsets of one partition
(delivered to this consumer as attempt n, acked, nacked until, expired...),
so tracing costs one record per receive or ack call, never one per message.
Records are buffered and appended as one batch per delivery-state commit.
The trace log has its own retention (time and bytes), and is fsynced by
interval: a process crash loses nothing (the bytes are in the page cache),
a power loss at most the last interval of trace, never any message or
delivery state.

A message's timeline is found by scanning the trace from its publish time
(`offset_for_time` on the trace log) and keeping the records whose ranges
hold its offset. The publish itself is not traced: the message's own batch
says when and by whom it was published.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec

from logq.log import FileLog, LogConfig, MemoryLog, PartitionLog, decode_batch, encode_batch

SCAN_BYTES_MAX = 256 << 20  # one query reads at most this much trace
READ_CHUNK_BYTES = 1 << 20


class TraceRecord(msgspec.Struct, frozen=True, array_like=True):
    at_ms: int
    kind: str  # see broker/tracing.py for the kinds
    topic: str
    partition: int
    ranges: list[tuple[int, int]]
    group: str = ""
    consumer: str = ""
    attempt: int = 0
    detail: str = ""
    until_ms: int = 0  # deliverable again / delayed until, when it applies

    def holds(self, offset: int) -> bool:
        return any(start <= offset < end for start, end in self.ranges)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[TraceRecord])


class TraceLog:
    """Append trace records; find the ones about one offset."""

    def __init__(self, directory: Path | None, config: LogConfig) -> None:
        self.config = config
        self._log: PartitionLog = (
            MemoryLog(config) if directory is None else FileLog(directory, config)
        )

    def append(self, records: list[TraceRecord], now_ms: int) -> None:
        """Write one batch (fsynced by the log's interval policy, not now)."""
        self._log.write(encode_batch([_encoder.encode(records)], timestamp_ms=now_ms))

    def flush_if_due(self) -> None:
        self._log.flush_if_due()

    def apply_retention(self, now_ms: int) -> None:
        self._log.apply_retention(now_ms)

    def close(self) -> None:
        self._log.sync(self._log.next_offset)
        self._log.close()

    @property
    def size_bytes(self) -> int:
        return self._log.size_bytes

    @property
    def log(self) -> PartitionLog:
        """The partition log underneath, for its storage statistics."""
        return self._log

    def find(
        self, topic: str, partition: int, offset: int, since_ms: int
    ) -> tuple[list[TraceRecord], bool]:
        """Records about `offset` of `topic`/`partition` written at `since_ms`
        or later, oldest first; and whether the scan stopped at its limit."""
        truncated: list[bool] = []  # set by the scan if it stops at its limit
        found = [
            record
            for record in self._scan(since_ms, truncated)
            if record.partition == partition and record.topic == topic and record.holds(offset)
        ]
        return found, bool(truncated)

    def _scan(self, since_ms: int, truncated: list[bool]) -> Iterator[TraceRecord]:
        log = self._log
        position = log.offset_for_time(since_ms)
        if position is None:
            return
        position = max(position, log.first_offset)
        scanned = 0
        while position < log.next_offset:
            result = log.read(position, READ_CHUNK_BYTES)
            if not result.data:
                return
            scanned += len(result.data)
            for batch in decode_batch_stream(result.data):
                yield from batch
            position = result.next_offset
            if scanned >= SCAN_BYTES_MAX:
                truncated.append(True)
                return


def decode_batch_stream(data: bytes) -> Iterator[list[TraceRecord]]:
    position = 0
    while position < len(data):
        batch = decode_batch(data, position)
        for value in batch.values:
            if value is not None:
                yield _decoder.decode(value)
        position += batch.header.size
