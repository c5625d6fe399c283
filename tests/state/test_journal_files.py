"""Journal generations that a snapshot replaces are removed durably: the
state directory is fsynced after they are gone, so a power loss cannot
bring a removed generation back (fault injection on `durable`'s directory
sync records when each fsync of the directory happened)."""

from __future__ import annotations

from pathlib import Path

import pytest

from logq.log import LogConfig, durable
from logq.state.delivery import PartitionDelivery
from logq.state.events import Leased
from logq.state.journal import Journal


def _watch_syncs(monkeypatch: pytest.MonkeyPatch, watched: Path) -> list[tuple[Path, bool]]:
    """Each directory fsync from now on, with whether `watched` existed then."""
    seen: list[tuple[Path, bool]] = []
    real = durable.sync_directory

    def sync_directory(directory: Path) -> None:
        seen.append((directory, watched.exists()))
        real(directory)

    monkeypatch.setattr(durable, "sync_directory", sync_directory)
    return seen


def _journal_with_events(directory: Path) -> Journal:
    journal = Journal(directory, LogConfig(), snapshot_bytes=1 << 20)
    journal.sync(journal.write([Leased("t/g", 0, [(0, 5)], "c", 10_000, 1, 0, 7)]))
    return journal


def test_a_snapshot_removes_the_generations_it_replaces_durably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    journal = _journal_with_events(state)
    replaced = state / "journal-0000000000"
    assert replaced.is_dir()
    journal.start_generation()
    snapshot = journal.take_snapshot({"t/g": {0: PartitionDelivery(floor=5, next_offset=5)}})
    syncs = _watch_syncs(monkeypatch, replaced)
    journal.write_snapshot(snapshot)
    journal.close()
    assert not replaced.exists()
    assert (state, False) in syncs, f"the state directory was not fsynced after: {syncs}"


def test_opening_removes_generations_older_than_the_snapshot_durably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the snapshot and the removal leaves an old generation:
    the next open removes it, durably, and does not replay it."""
    state = tmp_path / "state"
    journal = _journal_with_events(state)
    journal.start_generation()
    journal.write_snapshot(journal.take_snapshot({}))
    journal.close()
    left = state / "journal-0000000000"
    left.mkdir()  # as a crash before the removal would leave it
    (left / "00000000000000000000.log").write_bytes(b"")
    syncs = _watch_syncs(monkeypatch, left)
    reopened = Journal(state, LogConfig(), snapshot_bytes=1 << 20)
    try:
        assert list(reopened.events()) == []
    finally:
        reopened.close()
    assert not left.exists()
    assert (state, False) in syncs, f"the state directory was not fsynced after: {syncs}"
