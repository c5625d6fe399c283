"""Damage on disk between runs, wherever it lies: in a sealed segment, in the
active segment below its recovery checkpoint, a segment cut short, an index
entry. What is lost is exactly the damaged batches, reported once with their
offsets; everything else is served, and no index is trusted to skip data."""

from __future__ import annotations

import logging
import random
import shutil
import struct
from pathlib import Path

import pytest

from logq.log import DamagedDataError, FileLog, LogConfig, encode_batch
from logq.log.batch import iter_headers

# Small segments and a dense index: ten records of ten batches per segment.
CONFIG = LogConfig(segment_bytes=4096, index_interval_bytes=128)


def _fill(directory: Path, batches: int) -> list[int]:
    """`batches` batches of 3 records each; returns each batch's base offset."""
    log = FileLog(directory, CONFIG)
    bases = []
    for number in range(batches):
        values = [f"b{number}r{i}".encode() * 8 for i in range(3)]
        bases.append(log.append(encode_batch(values, timestamp_ms=1000 + number)).base_offset)
    log.close()
    return bases


def _batches(directory: Path, name: str) -> list[tuple[int, int, int]]:
    """(position, base offset, size) of every batch in segment file `name`."""
    data = (directory / name).read_bytes()
    return [(position, h.base_offset, h.size) for position, h in iter_headers(data)]


def _flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def _read_all(log: FileLog) -> tuple[set[int], list[tuple[int, int]]]:
    """Every offset served, and the damaged ranges met, reading as a consumer does."""
    served: set[int] = set()
    refused: list[tuple[int, int]] = []
    offset = log.first_offset
    while offset < log.next_offset:
        try:
            result = log.read(offset, 1 << 20)
        except DamagedDataError as error:
            refused.append((error.start, error.end))
            offset = error.end
            continue
        for _, header in iter_headers(result.data):
            served.update(range(header.base_offset, header.next_offset))
        offset = result.next_offset
    return served, refused


def _segments(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.log"))


@pytest.mark.parametrize("where", ["sealed", "active"])
def test_a_flipped_byte_loses_exactly_its_batch_reported_once(
    tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(tmp_path, 60)
    names = _segments(tmp_path)
    name = names[1] if where == "sealed" else names[-1]
    layout = _batches(tmp_path, name)
    position, base, size = layout[len(layout) // 2]
    _flip(tmp_path / name, position + size // 2)  # inside the body: its CRC fails
    log = FileLog(tmp_path, CONFIG)  # a clean stop: the recovery does not rescan it
    try:
        end = log.next_offset
        caplog.set_level(logging.WARNING)
        for _ in range(3):
            with pytest.raises(DamagedDataError) as refused:
                log.read(base, 1 << 20)
            assert (refused.value.start, refused.value.end) == (base, base + 3)
        served, damaged = _read_all(log)
        assert damaged == [(base, base + 3)]
        assert served == set(range(end)) - set(range(base, base + 3))
        lost = [r for r in caplog.records if "lost to damage" in r.getMessage()]
        assert len(lost) == 1 and f"offsets {base}..{base + 2}" in lost[0].getMessage()
        stats = log.statistics()
        assert (stats["damaged_ranges"], stats["damaged_offsets"]) == (1, 3)
        assert log.append(encode_batch([b"after"])).base_offset == end
    finally:
        log.close()


def test_a_truncated_sealed_segment_loses_only_the_cut_offsets(tmp_path: Path) -> None:
    _fill(tmp_path, 60)
    names = _segments(tmp_path)
    layout = _batches(tmp_path, names[1])
    position, base, _ = layout[4]
    next_base = int(names[2].partition(".")[0])
    with (tmp_path / names[1]).open("r+b") as file:
        file.truncate(position + 10)  # the fifth batch torn, the rest gone
    log = FileLog(tmp_path, CONFIG)
    try:
        assert [(d.start, d.end) for d in log.damaged_ranges()] == [(base, next_base)]
        served, damaged = _read_all(log)
        assert damaged == [(base, next_base)]
        assert served == set(range(log.next_offset)) - set(range(base, next_base))
        assert log.statistics()["damaged_offsets"] == next_base - base
    finally:
        log.close()


def test_a_damaged_middle_index_entry_is_caught_and_the_index_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(tmp_path, 60)
    names = _segments(tmp_path)
    expected = {}
    log = FileLog(tmp_path, CONFIG)
    for offset in range(log.next_offset):
        expected[offset] = log.read(offset, 1).first_offset
    log.close()
    index = tmp_path / names[1].replace(".log", ".index")
    entries = bytearray(index.read_bytes())
    count = len(entries) // 8
    assert count >= 3
    middle = (count // 2) * 8
    relative, position = struct.unpack_from("<II", entries, middle)
    _, later = struct.unpack_from("<II", entries, middle + 8)
    struct.pack_into("<II", entries, middle, relative, later)  # points at a later batch
    index.write_bytes(bytes(entries))
    log = FileLog(tmp_path, CONFIG)
    caplog.set_level(logging.WARNING)
    try:
        got = {offset: log.read(offset, 1).first_offset for offset in range(log.next_offset)}
        assert got == expected
        assert any("indexes rebuilt" in r.getMessage() for r in caplog.records)
        assert log.damaged_ranges() == []
    finally:
        log.close()
    rebuilt = index.read_bytes()
    assert struct.unpack_from("<II", rebuilt, middle) == (relative, position)


@pytest.mark.parametrize("field", ["offset", "length", "crc", "body"])
def test_a_damaged_header_field_loses_only_its_batch(tmp_path: Path, field: str) -> None:
    _fill(tmp_path, 60)
    name = _segments(tmp_path)[1]
    position, base, size = _batches(tmp_path, name)[5]
    at = {"offset": 3, "length": 9, "crc": 18, "body": size - 1}[field]
    _flip(tmp_path / name, position + at)
    log = FileLog(tmp_path, CONFIG)
    try:
        served, damaged = _read_all(log)
        assert damaged == [(base, base + 3)]
        assert served == set(range(log.next_offset)) - set(range(base, base + 3))
    finally:
        log.close()


def test_random_flips_lose_exactly_the_batches_they_hit(tmp_path: Path) -> None:
    """Seeded: a byte flipped anywhere in a sealed segment; every offset is
    either served with its original bytes or refused, and only the offsets of
    the batch holding the flipped byte are refused."""
    original = tmp_path / "original"
    _fill(original, 60)
    names = _segments(original)[:-1]
    reference = FileLog(original, CONFIG)
    stored = {o: reference.read(o, 1).data for o in range(reference.next_offset)}
    reference.close()
    chooser = random.Random(20261206)
    for attempt in range(25):
        copy = tmp_path / f"copy{attempt}"
        shutil.copytree(original, copy)
        name = chooser.choice(names)
        position = chooser.randrange((copy / name).stat().st_size)
        _flip(copy / name, position)
        hit = next((b, s) for p, b, s in _batches(original, name) if p <= position < p + s)
        log = FileLog(copy, CONFIG)
        try:
            served, damaged = _read_all(log)
            assert damaged == [(hit[0], hit[0] + 3)], (name, position)
            assert served == set(stored) - set(range(hit[0], hit[0] + 3))
            for offset in sorted(served)[::7]:
                assert log.read(offset, 1).data == stored[offset]
        finally:
            log.close()
