"""The state log of one data partition: every group's delivery events for it,
with snapshots written as records of the same log.

A partition is the unit that recovers (and, later, moves between brokers)
on its own: its data log and its state log lie side by side, and the state
of every group reading it is the last snapshot in the state log plus the
events after it. Offsets in a state log are continuous like any log's;
once a snapshot is durable, the segments wholly before it are deleted, so
old state goes by retention and recovery reads one snapshot plus the tail.
The snapshot before the last one is kept too (segments go only when wholly
before it): when the last snapshot is found damaged on disk, recovery takes
the one before plus every event since, and says so.

Each batch of a state log holds one record, whose key says what it is:
`e`, a msgpack list of events (state/events.py), `s`, a snapshot
(`StateSnapshot`, msgpack), `d`, a dedup mark (a msgpack integer: a data
offset), or `a`, a change of the partition's archive manifest
(logq/archive/manifest.py; opaque here, as is the manifest a snapshot
carries). A snapshot replaces whatever state came before it, so events,
marks and manifest changes before it in the log (in the segment it shares)
are read and dropped on recovery; a snapshot that a crash cut short fails
its batch's CRC and was never there.

The dedup ids of the partition's window are kept the same way: a snapshot
holds them with where each went and when it expires, and a dedup mark,
written (durably) before the first dedup publish after a snapshot is
stored, says that the data log may hold dedup batches from its offset on.
Recovery reads the data log's tail after the snapshot only when a mark (or
the snapshot itself, for publishes under way as it was taken) says so, and
never the data before the snapshot.

Held-back delayed messages (`Held` events) are replayed at about a
microsecond of CPU per message (state/held.py), so a partition whose state log has gathered many of them since
its snapshot gets a new one sooner: once their packed bytes reach half the
last snapshot's size (at least `HELD_TAIL_BYTES_MIN`). The tail a restart
replays stays short, and writing snapshots costs at most about three times
the bytes of the holds themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import msgspec

from logq.log import PartitionLog, decode_batch, encode_batch, read_past_damage
from logq.log.batch import iter_headers
from logq.state.delivery import PartitionDelivery
from logq.state.events import Event, Held, decode_events, encode_events
from logq.state.snapshots import PartitionSnapshot, restore_partition, snapshot_partition

logger = logging.getLogger(__name__)

EVENTS_KEY = b"e"
SNAPSHOT_KEY = b"s"
DEDUP_MARK_KEY = b"d"
ARCHIVE_KEY = b"a"
SNAPSHOT_VERSION = 1
READ_CHUNK_BYTES = 4 << 20
HELD_TAIL_BYTES_MIN = 4 << 20  # about 250,000 held-back messages since the last snapshot


class ProducerSnapshot(msgspec.Struct, array_like=True):
    """One idempotent producer's place in the partition: its last sequence and
    the (base sequence, base offset, last offset) of its last few batches."""

    producer_id: int
    last_sequence: int
    batches: list[tuple[int, int, int]]


class DedupSeen(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Where the first message with a dedup id went, and when the id expires."""

    partition: int
    offset: int
    expires_ms: int


class StateSnapshot(msgspec.Struct, array_like=True):
    version: int
    # every group's delivery state of this partition, by group key
    groups: dict[str, PartitionSnapshot]
    # the data log's end when the snapshot was taken: producer and dedup
    # state after it is read from the data log's batches
    data_offset: int = 0
    producers: list[ProducerSnapshot] = []
    # the dedup ids stored in this partition within their window, oldest
    # first; None in a snapshot of an earlier release (then the window is
    # read from the data log instead)
    dedup: dict[str, DedupSeen] | None = None
    # dedup publishes were under way as the snapshot was taken: the data
    # log's tail after `data_offset` may hold dedup batches
    dedup_tail: bool = False
    # the archive manifest (logq/archive/manifest.py ManifestState), encoded;
    # empty when the partition is not archived
    archive: bytes = b""


_snapshot_encoder = msgspec.msgpack.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(StateSnapshot)
_mark_decoder = msgspec.msgpack.Decoder(int)


class Recovered(msgspec.Struct):
    """What a state log held: the last snapshot's state, and the events after it."""

    groups: dict[str, PartitionDelivery]
    events: list[Event]
    data_offset: int
    producers: list[ProducerSnapshot]
    snapshot_offset: int | None  # where the last snapshot lies, None when none
    tail_bytes: int  # bytes of events after it
    # the last snapshot's dedup ids; None: no snapshot, or one without them
    dedup: dict[str, DedupSeen] | None = None
    # where the data log may hold dedup batches the snapshot does not: None
    # when it holds none after the snapshot (nor, without one, at all)
    dedup_scan_from: int | None = None
    archive: bytes = b""  # the last snapshot's archive manifest
    archive_records: list[bytes] = []  # the manifest's records after it


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
        self.previous_snapshot_offset: int | None = None
        self.snapshotting = False  # a snapshot is being written
        # the log holds a dedup mark after its last snapshot (or the snapshot
        # says dedup batches may follow it): a dedup publish needs no mark
        self.dedup_marked = False
        self.dedup_ids_since_snapshot = 0
        self.data_bytes_since_mark = 0  # bytes the data log took while marked

    # -- recovery --------------------------------------------------------------------

    def recover(self) -> Recovered:
        """Read the log whole (blocking): the last snapshot, then the events,
        marks and manifest changes after it (only the last snapshot is
        decoded). A snapshot found damaged on disk is passed over: the one
        before it, kept for this, and every record since make the state."""
        last: tuple[int, bytes] | None = None  # the last snapshot's offset and value
        events: list[Event] = []
        archive_records: list[bytes] = []
        tail_bytes = 0
        records = 0  # event records after the last snapshot
        scan_from: int | None = None
        for base_offset, key, value, size in _records(self.log):
            if key == SNAPSHOT_KEY:
                self.previous_snapshot_offset = last[0] if last is not None else None
                last, events, tail_bytes, scan_from = (base_offset, value), [], 0, None
                archive_records, records = [], 0
                self.last_snapshot_bytes = size
            elif key == DEDUP_MARK_KEY:
                offset = _mark_decoder.decode(value)
                scan_from = offset if scan_from is None else min(scan_from, offset)
                tail_bytes += size
            elif key == ARCHIVE_KEY:
                archive_records.append(value)
                tail_bytes += size
            else:
                events.extend(decode_events(value))
                tail_bytes += size
                records += 1
        if last is None:
            found = Recovered(
                {}, events, 0, [], None, tail_bytes, None, scan_from, b"", archive_records
            )
        else:
            snapshot = _snapshot_decoder.decode(last[1])
            if snapshot.dedup_tail:
                tail_from = snapshot.data_offset
                scan_from = tail_from if scan_from is None else min(scan_from, tail_from)
            found = Recovered(
                {group: restore_partition(s) for group, s in snapshot.groups.items()},
                events,
                snapshot.data_offset,
                list(snapshot.producers),
                last[0],
                tail_bytes,
                snapshot.dedup,
                scan_from,
                snapshot.archive,
                archive_records,
            )
        self.snapshot_offset = found.snapshot_offset
        for damaged in self.log.damaged_ranges() if self.log.opened else ():
            logger.error(
                "state log %s: offsets %d..%d lost to damage; the delivery state is the"
                " snapshot at %s and the %d event records after it",
                self.log_id.decode(errors="replace"),
                damaged.start,
                damaged.end - 1,
                "none" if found.snapshot_offset is None else f"offset {found.snapshot_offset}",
                records,
            )
        self.bytes_since_snapshot = found.tail_bytes
        self.dedup_marked = found.dedup_scan_from is not None
        self.held_bytes_since_snapshot = _held_bytes(found.events)
        return found

    # -- writing ---------------------------------------------------------------------

    def events_batch(self, events: list[Event], now_ms: int) -> bytes:
        batch = encode_batch([encode_events(events)], keys=[EVENTS_KEY], timestamp_ms=now_ms)
        self.bytes_since_snapshot += len(batch)
        self.held_bytes_since_snapshot += _held_bytes(events)
        return batch

    def archive_batch(self, record: bytes, now_ms: int) -> bytes:
        batch = encode_batch([record], keys=[ARCHIVE_KEY], timestamp_ms=now_ms)
        self.bytes_since_snapshot += len(batch)
        return batch

    def dedup_mark_batch(self, data_offset: int, now_ms: int) -> bytes:
        """A mark: the data log may hold dedup batches from `data_offset` on
        (durable before any of them is acknowledged)."""
        batch = encode_batch(
            [_snapshot_encoder.encode(data_offset)], keys=[DEDUP_MARK_KEY], timestamp_ms=now_ms
        )
        self.bytes_since_snapshot += len(batch)
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

    def wants_dedup_snapshot(self, dedup_ids_max: int) -> bool:
        """Enough dedup ids (or data, while marked) came since the last
        snapshot that recovery would read a long tail without a new one."""
        return not self.snapshotting and (
            self.dedup_ids_since_snapshot >= dedup_ids_max
            or self.data_bytes_since_mark >= self.snapshot_bytes
        )

    def snapshot_batch(
        self,
        groups: dict[str, PartitionDelivery],
        data_offset: int,
        producers: list[ProducerSnapshot],
        now_ms: int,
        dedup: dict[str, DedupSeen] | None = None,
        dedup_tail: bool = False,
        archive: bytes = b"",
    ) -> bytes:
        """The state as it is now, as one batch (write it before any later
        event). `dedup_tail`: dedup publishes are under way (their batches
        may lie past `data_offset`, their ids are not in `dedup`)."""
        snapshot = StateSnapshot(
            SNAPSHOT_VERSION,
            {group: snapshot_partition(state) for group, state in groups.items()},
            data_offset,
            producers,
            {} if dedup is None else dedup,
            dedup_tail,
            archive,
        )
        self.bytes_since_snapshot = self.held_bytes_since_snapshot = 0
        self.dedup_ids_since_snapshot = 0
        self.data_bytes_since_mark = 0
        self.dedup_marked = dedup_tail
        batch = encode_batch(
            [_snapshot_encoder.encode(snapshot)], keys=[SNAPSHOT_KEY], timestamp_ms=now_ms
        )
        self.last_snapshot_bytes = len(batch)
        return batch

    def snapshot_stored(self, offset: int) -> None:
        """A snapshot at `offset` is durable: the segments wholly before the
        snapshot before it may go (that one stays, for a recovery that finds
        this one damaged), and the log rolls, so the segment this one lies in
        goes once a later snapshot is durable (blocking)."""
        previous = self.snapshot_offset
        self.previous_snapshot_offset = previous
        self.snapshot_offset = offset
        if previous is not None:
            self.log.delete_before(previous)
        self.log.roll()


def _held_bytes(events: list[Event]) -> int:
    return sum(len(e.offsets) + len(e.due_ms) for e in events if isinstance(e, Held))


def _records(log: PartitionLog) -> Iterator[tuple[int, bytes, bytes, int]]:
    """(batch base offset, record key, record value, batch size) of every record."""
    for result in read_past_damage(log, log.first_offset, READ_CHUNK_BYTES):
        for position, header in iter_headers(result.data):
            decoded = decode_batch(result.data, position)
            for key, value in zip(decoded.keys, decoded.values, strict=True):
                yield header.base_offset, key or b"", value or b"", header.size
