"""A time index damaged on disk is never trusted to skip or misplace a read.

Each test damages a `.timeindex` file of a closed log the way `logq bench
corrupt` does (a changed time, a cut at an entry boundary, an older copy,
an index of the old shape) and checks the outcomes that matter: every
lookup by time answers what a scan of the batches answers, retention keeps
what is not yet due, and the damage is reported (`files_repaired`) and
repaired (the index rebuilt from the batches). The files are parsed in
whichever shape they have (docs/format.md), so that each test also runs
against a log that wrote the earlier shape.
"""

from __future__ import annotations

import logging
import shutil
import struct
from pathlib import Path

import pytest

from logq.log import LogConfig, encode_batch
from logq.log.file_log import FileLog

CONFIG = LogConfig(segment_bytes=4096, index_interval_bytes=128, retention_ms=None)
RECORDS = 200
FIRST_MS = 1_000
HEADER = b"LQTI"


def _filled(directory: Path, config: LogConfig = CONFIG) -> None:
    log = FileLog(directory, config)
    for number in range(RECORDS):
        log.append(encode_batch([b"v" * 40], timestamp_ms=FIRST_MS + number))
    log.close()


def _opened(directory: Path, config: LogConfig) -> FileLog:
    log = FileLog(directory, config)
    log.ensure_open()  # logs open on first use: recovery runs now
    return log


def _layout(stored: bytes | bytearray) -> tuple[int, int]:
    """(where entries start, entry size) of a time index in either shape."""
    return (16, 16) if stored.startswith(HEADER) else (0, 12)


def _set_time(path: Path, entry: int, time_ms: int) -> None:
    stored = bytearray(path.read_bytes())
    start, size = _layout(stored)
    count = (len(stored) - start) // size
    at = start + (entry % count) * size
    stored[at : at + 8] = struct.pack("<q", time_ms)
    path.write_bytes(bytes(stored))


def _drop_last_entry(path: Path) -> None:
    stored = path.read_bytes()
    _, size = _layout(stored)
    path.write_bytes(stored[:-size])


def _wrong_lookups(log: FileLog) -> list[int]:
    """Times whose lookup does not answer the first offset at or after them
    (record n has time FIRST_MS + n)."""
    times = range(FIRST_MS - 1, FIRST_MS + RECORDS)
    return [t for t in times if log.offset_for_time(t) != max(t - FIRST_MS, 0)]


def _sealed_time_indexes(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.timeindex"))[:-1]


def test_an_understated_time_in_a_sealed_index_is_reported_at_open(tmp_path: Path) -> None:
    _filled(tmp_path)
    first = _sealed_time_indexes(tmp_path)[0]
    # the last entry (the segment's largest time) made as old as the first's
    _set_time(first, -1, FIRST_MS + 5)
    log = _opened(tmp_path, CONFIG)
    try:
        assert log.statistics()["files_repaired"] == 1
        assert _wrong_lookups(log) == []
    finally:
        log.close()


def test_an_understated_time_inside_a_sealed_index_never_makes_a_lookup_skip(
    tmp_path: Path,
) -> None:
    _filled(tmp_path)
    first = _sealed_time_indexes(tmp_path)[0]
    _set_time(first, 3, 0)  # an entry the open's cheap check does not read
    log = _opened(tmp_path, CONFIG)
    try:
        assert _wrong_lookups(log) == []
        assert log.statistics()["files_repaired"] == 1  # found by the lookups, rebuilt
        assert _wrong_lookups(log) == []
    finally:
        log.close()


def test_the_scrubber_finds_a_damaged_time_entry_no_lookup_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _filled(tmp_path)
    first = _sealed_time_indexes(tmp_path)[0]
    _set_time(first, 2, FIRST_MS)
    log = _opened(tmp_path, CONFIG)
    caplog.set_level(logging.WARNING)
    try:
        base = int(first.name.partition(".")[0])
        assert log.scrub(base - 1) == base
        assert log.statistics()["files_repaired"] == 1
        assert any(first.with_suffix(".log").name in r.getMessage() for r in caplog.records)
        assert _wrong_lookups(log) == []
    finally:
        log.close()


def test_a_sealed_index_cut_at_an_entry_boundary_is_rebuilt(tmp_path: Path) -> None:
    _filled(tmp_path)
    for path in _sealed_time_indexes(tmp_path):
        _drop_last_entry(path)  # the entry carrying the segment's largest time
    log = _opened(tmp_path, CONFIG)
    try:
        assert log.statistics()["files_repaired"] == len(_sealed_time_indexes(tmp_path))
        assert _wrong_lookups(log) == []
    finally:
        log.close()


def test_an_older_copy_of_a_sealed_index_is_rebuilt(tmp_path: Path) -> None:
    log = FileLog(tmp_path, CONFIG)
    for number in range(20):
        log.append(encode_batch([b"v" * 40], timestamp_ms=FIRST_MS + number))
    log.sync()
    (active,) = tmp_path.glob("*.timeindex")
    older = active.read_bytes()  # while the segment was active: no final entry
    for number in range(20, RECORDS):
        log.append(encode_batch([b"v" * 40], timestamp_ms=FIRST_MS + number))
    log.close()
    assert active in _sealed_time_indexes(tmp_path)
    active.write_bytes(older)
    log = _opened(tmp_path, CONFIG)
    try:
        assert log.statistics()["files_repaired"] == 1
        assert _wrong_lookups(log) == []
    finally:
        log.close()


def test_retention_never_deletes_a_segment_by_a_damaged_time(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=4096, index_interval_bytes=128, retention_ms=100)
    _filled(tmp_path, config)
    first = _sealed_time_indexes(tmp_path)[0]
    kept = sorted(tmp_path.glob("*.log"))
    _set_time(first, -1, FIRST_MS + 5)  # its newest record: FIRST_MS + 32
    log = _opened(tmp_path, config)
    try:
        # the first segment's newest record is not older than the retention yet
        assert log.apply_retention(FIRST_MS + 120).deleted_segments == 0
        assert sorted(tmp_path.glob("*.log")) == kept
    finally:
        log.close()


def test_a_damaged_entry_of_the_active_index_is_found_at_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = LogConfig(segment_bytes=1 << 20, index_interval_bytes=128, retention_ms=None)
    _filled(tmp_path, config)
    (path,) = tmp_path.glob("*.timeindex")
    _set_time(path, 5, 0)
    caplog.set_level(logging.WARNING)
    log = _opened(tmp_path, config)
    try:
        assert log.statistics()["files_repaired"] == 1
        assert any("time index" in r.getMessage() for r in caplog.records)
        assert _wrong_lookups(log) == []
    finally:
        log.close()


def test_an_index_swapped_in_from_another_segment_is_rebuilt(tmp_path: Path) -> None:
    _filled(tmp_path)
    first, second, *_ = _sealed_time_indexes(tmp_path)
    shutil.copyfile(second, first)  # entries that verify, of another segment
    log = _opened(tmp_path, CONFIG)
    try:
        assert log.statistics()["files_repaired"] == 1
        assert _wrong_lookups(log) == []
    finally:
        log.close()


def test_a_rebuilt_index_is_written_whole_and_opens_cleanly(tmp_path: Path) -> None:
    _filled(tmp_path)
    _set_time(_sealed_time_indexes(tmp_path)[0], -1, FIRST_MS + 5)
    repairing = FileLog(tmp_path, CONFIG)
    repairing.ensure_open()
    repairing.close()
    log = _opened(tmp_path, CONFIG)  # the repaired index verifies: nothing to repair
    try:
        assert log.statistics()["files_repaired"] == 0
        assert _wrong_lookups(log) == []
    finally:
        log.close()


@pytest.mark.parametrize("damage", ["removed", "partial entry", "within header"])
def test_an_active_index_removed_or_cut_is_rebuilt_and_reported(
    tmp_path: Path, damage: str
) -> None:
    config = LogConfig(segment_bytes=1 << 20, index_interval_bytes=128, retention_ms=None)
    _filled(tmp_path, config)
    (path,) = tmp_path.glob("*.timeindex")
    stored = path.read_bytes()
    if damage == "removed":
        path.unlink()
    else:
        path.write_bytes(stored[: 10 if damage == "within header" else len(stored) - 5])
    log = _opened(tmp_path, config)
    try:
        assert log.statistics()["files_repaired"] == 1
        assert _wrong_lookups(log) == []
    finally:
        log.close()
