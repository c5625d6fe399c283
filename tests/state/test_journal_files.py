"""Delivery state files that go, go durably: the segments of a state log
that a snapshot replaced, and the `state/` directory of an earlier release
once migrated, are removed and their directory fsynced afterwards, so a
power loss cannot bring them back (fault injection on `durable`'s directory
sync records when each fsync of a directory happened)."""

from __future__ import annotations

from pathlib import Path

import pytest

from logq.log import FileLog, LogConfig, durable
from logq.state.delivery import PartitionDelivery
from logq.state.events import Leased
from logq.state.legacy_journal import LegacyState
from logq.state.partition_state import PartitionState


def _watch_syncs(monkeypatch: pytest.MonkeyPatch, watched: Path) -> list[tuple[Path, bool]]:
    """Each directory fsync from now on, with whether `watched` existed then."""
    seen: list[tuple[Path, bool]] = []
    real = durable.sync_directory

    def sync_directory(directory: Path) -> None:
        seen.append((directory, watched.exists()))
        real(directory)

    monkeypatch.setattr(durable, "sync_directory", sync_directory)
    return seen


def test_state_segments_a_snapshot_replaces_are_removed_durably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = FileLog(tmp_path / "0.state", LogConfig(segment_bytes=4096))
    state = PartitionState(log, b"t/0.state", snapshot_bytes=4096)
    for n in range(200):
        log.append(state.events_batch([Leased("t/g", 0, [(n, n + 1)], "c", 10_000, 1, 0, 7)], 0))
    first = sorted((tmp_path / "0.state").glob("*.log"))[0]
    # the snapshot before the last stays (for a recovery that finds the last
    # damaged): the segments before it go once a later one is durable
    older = log.append(state.snapshot_batch({"t/g": PartitionDelivery()}, 0, [], 0))
    state.snapshot_stored(older.base_offset)
    assert first.exists()
    snapshot = log.append(state.snapshot_batch({"t/g": PartitionDelivery()}, 0, [], 0))
    syncs = _watch_syncs(monkeypatch, first)
    state.snapshot_stored(snapshot.base_offset)
    assert not first.exists() and log.first_offset > 0
    assert (tmp_path / "0.state", False) in syncs, f"not fsynced after: {syncs}"
    log.close()


def test_the_state_of_an_earlier_release_is_removed_durably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "state"
    (old / "journal-0000000000").mkdir(parents=True)
    legacy = LegacyState(old, LogConfig())
    syncs = _watch_syncs(monkeypatch, old)
    legacy.remove()
    assert not old.exists()
    assert (tmp_path, False) in syncs, f"the data directory was not fsynced after: {syncs}"
