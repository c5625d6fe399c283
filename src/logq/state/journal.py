"""The state journal: delivery events in a log of the storage engine, plus snapshots.

Each call appends one record holding a list of events; under `fsync: always`
it returns once durable (group commit shares fsyncs with concurrent calls).
When a journal generation grows past `snapshot_bytes`, the owner switches to
a new generation and writes a snapshot of every group's state naming it;
recovery loads the snapshot and replays every generation from it on, so a
crash between the switch and the snapshot loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import msgspec

from logq.log import (
    FileLog,
    LogConfig,
    MemoryLog,
    PartitionLog,
    decode_batch,
    durable,
    encode_batch,
)
from logq.state.delivery import Lease, PartitionDelivery, Pending
from logq.state.events import Event, decode_events, encode_events
from logq.state.ranges import RangeSet

logger = logging.getLogger(__name__)
SNAPSHOT_NAME = "snapshot.json"
JOURNAL_PREFIX = "journal-"


class PartitionSnapshot(msgspec.Struct, array_like=True):
    floor: int
    next_offset: int
    settled: list[tuple[int, int]]
    leases: list[tuple[int, int, str, int, int]]
    pending: list[tuple[int, int, int, int]]
    # lease tokens, one per lease and per pending range (absent in snapshots
    # written before tokens: those read as 0, no token)
    lease_tokens: list[int] = []
    pending_tokens: list[int] = []


class Snapshot(msgspec.Struct):
    version: int
    generation: int
    groups: dict[str, dict[int, PartitionSnapshot]]


def snapshot_partition(state: PartitionDelivery) -> PartitionSnapshot:
    return PartitionSnapshot(
        state.floor,
        state.next_offset,
        list(state.settled),
        [(x.start, x.end, x.consumer, x.deadline_ms, x.attempt) for x in state.leases],
        [(x.start, x.end, x.attempt, x.not_before_ms) for x in state.pending],
        [x.token for x in state.leases],
        [x.token for x in state.pending],
    )


def restore_partition(snapshot: PartitionSnapshot) -> PartitionDelivery:
    lease_tokens = snapshot.lease_tokens or [0] * len(snapshot.leases)
    pending_tokens = snapshot.pending_tokens or [0] * len(snapshot.pending)
    leases = [  # leased_ms is not kept
        Lease(*lease, token=token)
        for lease, token in zip(snapshot.leases, lease_tokens, strict=True)
    ]
    pending = [
        Pending(*item, token=token)
        for item, token in zip(snapshot.pending, pending_tokens, strict=True)
    ]
    return PartitionDelivery(
        floor=snapshot.floor,
        next_offset=snapshot.next_offset,
        settled=RangeSet(snapshot.settled),
        leases=leases,
        pending=pending,
        last_token=max([0, *lease_tokens, *pending_tokens]),
    )


class Journal:
    """Durable delivery events for all groups of a broker."""

    def __init__(self, directory: Path | None, config: LogConfig, snapshot_bytes: int) -> None:
        self.directory = directory
        self.config = config
        self.snapshot_bytes = snapshot_bytes
        self.generation = 0
        self._log: PartitionLog = MemoryLog(config)
        self._snapshot: Snapshot | None = None
        self._replay_generations: list[int] = []
        if directory is not None:
            durable.make_directory(directory)
            snapshot_path = directory / SNAPSHOT_NAME
            raw = snapshot_path.read_bytes() if snapshot_path.exists() else None
            if raw is not None:
                self._snapshot = msgspec.json.decode(raw, type=Snapshot)
                self.generation = self._snapshot.generation
            generations = self._generations()
            self._remove_generations([g for g in generations if g < self.generation])
            newest = max([g for g in generations if g >= self.generation], default=self.generation)
            self._replay_generations = [g for g in generations if self.generation <= g < newest]
            self.generation = newest
            self._log = FileLog(self._journal_dir(newest), config)

    def _journal_dir(self, generation: int) -> Path:
        assert self.directory is not None
        return self.directory / f"{JOURNAL_PREFIX}{generation:010d}"

    def _generations(self) -> list[int]:
        assert self.directory is not None
        found = []
        for path in self.directory.iterdir():
            if path.name.startswith(JOURNAL_PREFIX) and path.name[len(JOURNAL_PREFIX) :].isdigit():
                found.append(int(path.name[len(JOURNAL_PREFIX) :]))
        return sorted(found)

    # -- recovery ---------------------------------------------------------------

    def recovered_groups(self) -> dict[str, dict[int, PartitionDelivery]]:
        """State as of the snapshot; replay `events()` on top of it."""
        if self._snapshot is None:
            return {}
        return {
            group: {p: restore_partition(s) for p, s in partitions.items()}
            for group, partitions in self._snapshot.groups.items()
        }

    @property
    def log(self) -> PartitionLog:
        """The log of the current generation (for its statistics)."""
        return self._log

    def events(self) -> Iterator[Event]:
        """Every journaled event after the snapshot, in order."""
        if self.directory is not None:
            for generation in self._replay_generations:
                old = FileLog(self._journal_dir(generation), self.config)
                try:
                    yield from _log_events(old)
                finally:
                    old.close()
        yield from _log_events(self._log)

    # -- writing ----------------------------------------------------------------

    def write(self, events: list[Event]) -> int:
        """Append events (not yet durable); returns the offset to sync to."""
        return self._log.write(encode_batch([encode_events(events)])).next_offset

    def sync(self, offset: int) -> None:
        self._log.sync(offset)

    def sync_all(self) -> None:
        """Make everything written durable (nothing to do when it is)."""
        self._log.sync()

    @property
    def unsynced(self) -> bool:
        """Some events were written without waiting for their fsync."""
        return self._log.durable_offset < self._log.next_offset

    @property
    def wants_snapshot(self) -> bool:
        return self.directory is not None and self._log.size_bytes >= self.snapshot_bytes

    def start_generation(self) -> None:
        """Switch appends to a fresh generation (call, then `write_snapshot`)."""
        assert self.directory is not None
        self._log.close()
        self._replay_generations.append(self.generation)
        self.generation += 1
        self._log = FileLog(self._journal_dir(self.generation), self.config)

    def take_snapshot(self, groups: dict[str, dict[int, PartitionDelivery]]) -> Snapshot:
        """A copy of the state at the start of the current generation (call
        right after `start_generation`, before any other event is applied)."""
        return Snapshot(
            version=1,
            generation=self.generation,
            groups={
                group: {p: snapshot_partition(s) for p, s in parts.items()}
                for group, parts in groups.items()
            },
        )

    def write_snapshot(self, snapshot: Snapshot) -> None:
        """Persist a snapshot (blocking: run it off the event loop), then drop
        the generations it replaces."""
        assert self.directory is not None
        durable.write_atomic(self.directory / SNAPSHOT_NAME, msgspec.json.encode(snapshot))
        self._remove_generations([g for g in self._replay_generations if g < snapshot.generation])
        self._replay_generations = [g for g in self._replay_generations if g >= snapshot.generation]

    def _remove_generations(self, generations: list[int]) -> None:
        """Remove generations a durable snapshot replaces, durably. A failure
        is only logged: the snapshot names its generation, so the next open
        removes what is left and never replays it."""
        if not generations:
            return
        try:
            durable.remove_directories([self._journal_dir(g) for g in generations])
        except OSError as error:
            logger.warning("removing replaced journal generations failed: %s", error)

    def close(self) -> None:
        self._log.close()


def _log_events(log: PartitionLog) -> Iterator[Event]:
    offset = log.first_offset
    while offset < log.next_offset:
        result = log.read(offset, 1 << 20)
        position = 0
        while position < len(result.data):
            decoded = decode_batch(result.data, position)
            position += decoded.header.size
            for value in decoded.values:
                if value:
                    yield from decode_events(value)
        offset = result.next_offset
