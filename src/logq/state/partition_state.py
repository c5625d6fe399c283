"""The state log of one data partition: every group's delivery events for it,
with snapshots written as records of the same log.

A partition is the unit that recovers (and, later, moves between brokers)
on its own: its data log and its state log lie side by side, and the state
of every group reading it is the last snapshot in the state log plus the
events after it. Offsets in a state log are continuous like any log's;
once a snapshot is durable, the segments wholly before it are deleted, so
old state goes by retention and recovery reads one snapshot plus the tail.

Each batch of a state log holds one record, whose key says what it is:
`e`, a msgpack list of events (state/events.py), or `s`, a snapshot
(`StateSnapshot`, msgpack). A snapshot replaces whatever state came before
it, so events before it in the log (in the segment it shares) are read and
dropped on recovery; a snapshot that a crash cut short fails its batch's
CRC and was never there.

Held-back delayed messages (`Held` events) are replayed one Python step
per message, so a partition whose state log has gathered many of them since
its snapshot gets a new one sooner: once their packed bytes reach half the
last snapshot's size (at least `HELD_TAIL_BYTES_MIN`). The tail a restart
replays stays short, and writing snapshots costs at most about three times
the bytes of the holds themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from logq.log import PartitionLog, decode_batch, encode_batch, read_past_damage
from logq.log.batch import iter_headers
from logq.state.delivery import PartitionDelivery
from logq.state.events import Event, Held, decode_events, encode_events
from logq.state.snapshots import PartitionSnapshot, restore_partition, snapshot_partition

EVENTS_KEY = b"e"
SNAPSHOT_KEY = b"s"
SNAPSHOT_VERSION = 1
READ_CHUNK_BYTES = 4 << 20
HELD_TAIL_BYTES_MIN = 4 << 20  # about 250,000 held-back messages since the last snapshot


class ProducerSnapshot(msgspec.Struct, array_like=True):
    """One idempotent producer's place in the partition: its last sequence and
    the (base sequence, base offset, last offset) of its last few batches."""

    producer_id: int
    last_sequence: int
    batches: list[tuple[int, int, int]]


class StateSnapshot(msgspec.Struct, array_like=True):
    version: int
    # every group's delivery state of this partition, by group key
    groups: dict[str, PartitionSnapshot]
    # the data log's end when the snapshot was taken: producer and dedup
    # state after it is read from the data log's batches
    data_offset: int = 0
    producers: list[ProducerSnapshot] = []


_snapshot_encoder = msgspec.msgpack.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(StateSnapshot)


class Recovered(msgspec.Struct):
    """What a state log held: the last snapshot's state, and the events after it."""

    groups: dict[str, PartitionDelivery]
    events: list[Event]
    data_offset: int
    producers: list[ProducerSnapshot]
    snapshot_offset: int | None  # where the last snapshot lies, None when none
    tail_bytes: int  # bytes of events after it


class PartitionState:
    """A partition's state log and what the broker needs to keep it short."""

    def __init__(self, log: PartitionLog, log_id: bytes, snapshot_bytes: int) -> None:
        self.log = log
        self.log_id = log_id
        self.snapshot_bytes = snapshot_bytes
        self.bytes_since_snapshot = 0
        self.held_bytes_since_snapshot = 0  # packed bytes of `Held` events
        self.last_snapshot_bytes = 0
        self.snapshot_offset: int | None = None
        self.snapshotting = False  # a snapshot is being written

    # -- recovery --------------------------------------------------------------------

    def recover(self) -> Recovered:
        """Read the log whole (blocking): the last snapshot, then the events after it."""
        found = Recovered({}, [], 0, [], None, 0)
        for base_offset, key, value, size in _records(self.log):
            if key == SNAPSHOT_KEY:
                snapshot = _snapshot_decoder.decode(value)
                found = Recovered(
                    {group: restore_partition(s) for group, s in snapshot.groups.items()},
                    [],
                    snapshot.data_offset,
                    list(snapshot.producers),
                    base_offset,
                    0,
                )
                self.last_snapshot_bytes = size
            else:
                found.events.extend(decode_events(value))
                found.tail_bytes += size
        self.snapshot_offset = found.snapshot_offset
        self.bytes_since_snapshot = found.tail_bytes
        self.held_bytes_since_snapshot = _held_bytes(found.events)
        return found

    # -- writing ---------------------------------------------------------------------

    def events_batch(self, events: list[Event], now_ms: int) -> bytes:
        batch = encode_batch([encode_events(events)], keys=[EVENTS_KEY], timestamp_ms=now_ms)
        self.bytes_since_snapshot += len(batch)
        self.held_bytes_since_snapshot += _held_bytes(events)
        return batch

    @property
    def wants_snapshot(self) -> bool:
        if self.snapshotting:
            return False
        held_bytes_max = max(HELD_TAIL_BYTES_MIN, self.last_snapshot_bytes // 2)
        return (
            self.bytes_since_snapshot >= self.snapshot_bytes
            or self.held_bytes_since_snapshot >= held_bytes_max
        )

    def snapshot_batch(
        self,
        groups: dict[str, PartitionDelivery],
        data_offset: int,
        producers: list[ProducerSnapshot],
        now_ms: int,
    ) -> bytes:
        """The state as it is now, as one batch (write it before any later event)."""
        snapshot = StateSnapshot(
            SNAPSHOT_VERSION,
            {group: snapshot_partition(state) for group, state in groups.items()},
            data_offset,
            producers,
        )
        self.bytes_since_snapshot = self.held_bytes_since_snapshot = 0
        batch = encode_batch(
            [_snapshot_encoder.encode(snapshot)], keys=[SNAPSHOT_KEY], timestamp_ms=now_ms
        )
        self.last_snapshot_bytes = len(batch)
        return batch

    def snapshot_stored(self, offset: int) -> None:
        """A snapshot at `offset` is durable: older segments may go (blocking)."""
        self.snapshot_offset = offset
        self.log.delete_before(offset)


def _held_bytes(events: list[Event]) -> int:
    return sum(len(e.offsets) + len(e.due_ms) for e in events if isinstance(e, Held))


def _records(log: PartitionLog) -> Iterator[tuple[int, bytes, bytes, int]]:
    """(batch base offset, record key, record value, batch size) of every record."""
    for result in read_past_damage(log, log.first_offset, READ_CHUNK_BYTES):
        for position, header in iter_headers(result.data):
            decoded = decode_batch(result.data, position)
            for key, value in zip(decoded.keys, decoded.values, strict=True):
                yield header.base_offset, key or b"", value or b"", header.size
