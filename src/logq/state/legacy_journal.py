"""Reading the delivery state of data directories written by earlier releases.

Those kept every group's delivery state in one place: `state/snapshot.json`
(the state at the start of a journal generation) and `state/journal-<g>/`
(a log of event records per generation since then). The broker now keeps a
state log per data partition (partition_state.py); on the first open of
such a directory it reads the old state here, writes it as a snapshot into
every partition's state log, and only then removes `state/` (see
`Broker._migrate_legacy_state`). A crash before the removal repeats the
migration at the next open, which gives the same result.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import msgspec

from logq.log import FileLog, LogConfig, PartitionLog, decode_batch, durable
from logq.log.config import FsyncPolicy
from logq.state.delivery import PartitionDelivery
from logq.state.events import Event, decode_events
from logq.state.snapshots import PartitionSnapshot, restore_partition

SNAPSHOT_NAME = "snapshot.json"
JOURNAL_PREFIX = "journal-"


class Snapshot(msgspec.Struct):
    version: int
    generation: int
    groups: dict[str, dict[int, PartitionSnapshot]]


class LegacyState:
    """The old state of a data directory, read once."""

    def __init__(self, directory: Path, config: LogConfig) -> None:
        self.directory = directory
        self.config = config
        snapshot_path = directory / SNAPSHOT_NAME
        self._snapshot = (
            msgspec.json.decode(snapshot_path.read_bytes(), type=Snapshot)
            if snapshot_path.exists()
            else None
        )
        first = self._snapshot.generation if self._snapshot is not None else 0
        self._generations = [g for g in _generations(directory) if g >= first]

    @staticmethod
    def present(directory: Path | None) -> bool:
        return directory is not None and directory.is_dir() and any(directory.iterdir())

    def groups(self) -> dict[str, dict[int, PartitionDelivery]]:
        """State as of the snapshot; replay `events()` on top of it."""
        if self._snapshot is None:
            return {}
        return {
            group: {p: restore_partition(s) for p, s in partitions.items()}
            for group, partitions in self._snapshot.groups.items()
        }

    def events(self) -> Iterator[Event]:
        """Every journaled event after the snapshot, in order."""
        config = LogConfig(
            segment_bytes=self.config.segment_bytes,
            batch_bytes_max=self.config.batch_bytes_max,
            fsync=FsyncPolicy.NEVER,
            retention_ms=None,
        )
        for generation in self._generations:
            log = FileLog(self.directory / f"{JOURNAL_PREFIX}{generation:010d}", config)
            try:
                yield from _log_events(log)
            finally:
                log.close()

    def remove(self) -> None:
        """Remove the old state for good (once its content is stored anew)."""
        if self.directory.exists():
            shutil.rmtree(self.directory)
            durable.sync_directory(self.directory.parent)


def _generations(directory: Path) -> list[int]:
    found = []
    for path in directory.iterdir():
        name = path.name
        if name.startswith(JOURNAL_PREFIX) and name[len(JOURNAL_PREFIX) :].isdigit():
            found.append(int(name[len(JOURNAL_PREFIX) :]))
    return sorted(found)


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
