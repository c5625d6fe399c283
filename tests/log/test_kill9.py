"""Crash tests with real processes, and damage done to the files between runs.

A child appends with `fsync: always` and reports each durable batch; the
parent SIGKILLs it at random moments, many times over. After each reopen:
every batch reported durable is there byte for byte (its CRC32C, computed
by the parent over what it reads), offsets are dense, nothing past the last
good batch is served, and appends go on at the right offset.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from crc32c import crc32c

from logq.log import DamagedDataError, FileLog, LogConfig, encode_batch
from logq.log.batch import BatchHeader, iter_headers
from logq.log.checkpoint import CHECKPOINT_NAME
from tests.log.appender import CONFIG
from tests.log.epoch_appender import CONFIG as EPOCH_CONFIG

APPENDER = Path(__file__).with_name("appender.py")
ROOT = Path(__file__).resolve().parents[2]


def stored_batches(log: FileLog) -> dict[int, tuple[int, int, bytes]]:
    """base offset -> (last offset, crc32c past the base offset field, bytes) of every batch."""
    found: dict[int, tuple[int, int, bytes]] = {}
    offset = log.first_offset
    while offset < log.next_offset:
        result = log.read(offset, 1 << 20)
        assert result.data, f"no data at {offset} below next_offset {log.next_offset}"
        for position, header in iter_headers(result.data):
            raw = result.data[position : position + header.size]
            found[header.base_offset] = (header.next_offset - 1, crc32c(raw[8:]), raw)
        offset = result.next_offset
    assert log.read(log.next_offset, 1 << 20).data == b""
    return found


def assert_dense(batches: dict[int, tuple[int, int, bytes]], first: int, end: int) -> None:
    expected = first
    for base in sorted(batches):
        assert base == expected, f"gap or overlap at {base}, expected {expected}"
        expected = batches[base][0] + 1
    assert expected == end


def run_child(directory: Path, seed: int, reports: int) -> list[tuple[int, int, int]]:
    """Start the appender, read `reports` durable reports, SIGKILL it."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    child = subprocess.Popen(
        [sys.executable, str(APPENDER), str(directory), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    reported: list[tuple[int, int, int]] = []
    buffered = b""
    deadline = time.monotonic() + 30
    try:
        while len(reported) < reports and time.monotonic() < deadline:
            ready, _, _ = select.select([child.stdout], [], [], 1)
            if not ready:
                assert child.poll() is None, child.stderr.read() if child.stderr else b""
                continue
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                break
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                base, last, crc = (int(part) for part in line.split())
                reported.append((base, last, crc))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert reported, "the child reported nothing"
    return reported


@pytest.mark.slow
def test_sigkill_many_times_loses_nothing_durable(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    durable: dict[int, tuple[int, int]] = {}
    for cycle in range(25):
        for base, last, crc in run_child(tmp_path, cycle, rng.randint(1, 120)):
            durable[base] = (last, crc)
        log = FileLog(tmp_path, CONFIG)
        try:
            assert (
                log.recovery.scanned_bytes
                <= CONFIG.checkpoint_interval_bytes + CONFIG.segment_bytes
            )
            batches = stored_batches(log)
            assert_dense(batches, log.first_offset, log.next_offset)
            for base, (last, crc) in durable.items():
                assert base in batches, f"cycle {cycle}: durable batch {base} is gone"
                assert batches[base][:2] == (last, crc), f"cycle {cycle}: batch {base} changed"
            # appends go on right after the last batch kept
            end = log.next_offset
            assert log.append(encode_batch([b"probe"], timestamp_ms=1)).base_offset == end
            durable[end] = (end, stored_batches(log)[end][1])
        finally:
            log.close()


def fill(directory: Path, batches: int, config: LogConfig = CONFIG) -> list[bytes]:
    log = FileLog(directory, config)
    written = []
    for n in range(batches):
        batch = encode_batch(
            [f"record {n}-{i}".encode() * 4 for i in range(10)], timestamp_ms=1_000 + n
        )
        log.append(batch)
        written.append(batch)
    log.close()
    return written


def active_segment(directory: Path) -> Path:
    return sorted(directory.glob("*.log"))[-1]


def as_crashed(directory: Path) -> None:
    """A clean close checkpoints the whole log; a crash leaves the tail unchecked."""
    (directory / CHECKPOINT_NAME).unlink()


def bodies(batches: dict[int, tuple[int, int, bytes]]) -> list[bytes]:
    """What producers sent: the stored batches without the base offset field."""
    return [batches[base][2][8:] for base in sorted(batches)]


def test_a_truncated_tail_is_cut_and_reported(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=1 << 20, checkpoint_interval_bytes=1 << 20)
    written = fill(tmp_path, 20, config)
    segment = active_segment(tmp_path)
    size = segment.stat().st_size
    with segment.open("r+b") as file:
        file.truncate(size - len(written[-1]) // 2)
    # a crash tore it: the checkpoint, written at the clean close, would say
    # the batch was durable (then it is damage, test_damage_recovery.py)
    as_crashed(tmp_path)
    log = FileLog(tmp_path, config)
    try:
        assert log.next_offset == 190  # the torn 20th batch is gone, 19 whole ones stay
        assert log.recovery.cut_bytes == len(written[-1]) - len(written[-1]) // 2
        assert log.recovery.cut_reason
        batches = stored_batches(log)
        assert bodies(batches) == [batch[8:] for batch in written[:-1]]
        assert log.append(written[0]).base_offset == 190
    finally:
        log.close()


def test_a_flipped_byte_in_the_tail_loses_only_its_batch(tmp_path: Path) -> None:
    """A bad batch followed by good ones is damage, not a torn write: the
    batches after it were acknowledged, so nothing is cut; the bad batch's
    offsets are a damaged range."""
    config = LogConfig(segment_bytes=1 << 20, checkpoint_interval_bytes=1 << 20)
    written = fill(tmp_path, 20, config)
    segment = active_segment(tmp_path)
    position = sum(len(batch) for batch in written[:12]) + 70  # inside the 13th batch's body
    with segment.open("r+b") as file:
        file.seek(position)
        byte = file.read(1)
        file.seek(position)
        file.write(bytes([byte[0] ^ 0xFF]))
    as_crashed(tmp_path)
    log = FileLog(tmp_path, config)
    try:
        assert log.next_offset == 200
        assert log.recovery.cut_bytes == 0
        assert [(d.start, d.end) for d in log.damaged_ranges()] == [(120, 130)]
        with pytest.raises(DamagedDataError):
            log.read(120, 1 << 20)
        assert log.read(130, 1 << 20).first_offset == 130
        assert log.append(written[0]).base_offset == 200
    finally:
        log.close()


def test_a_flipped_byte_below_the_checkpoint_is_never_served(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=4096, checkpoint_interval_bytes=1)
    fill(tmp_path, 40, config)
    sealed = sorted(tmp_path.glob("*.log"))[0]
    with sealed.open("r+b") as file:
        file.seek(100)
        byte = file.read(1)
        file.seek(100)
        file.write(bytes([byte[0] ^ 0x01]))
    log = FileLog(tmp_path, config)
    try:
        with pytest.raises(DamagedDataError):
            log.read(0, 1 << 20)
        later = log.read(log.next_offset - 1, 1 << 20)  # other segments still serve
        assert later.data
    finally:
        log.close()


@pytest.mark.parametrize(
    "damage", ["delete-index", "delete-timeindex", "garbage-index", "garbage-checkpoint"]
)
def test_damaged_indexes_and_checkpoint_are_rebuilt(tmp_path: Path, damage: str) -> None:
    config = LogConfig(segment_bytes=4096, index_interval_bytes=128)
    fill(tmp_path, 60, config)
    log = FileLog(tmp_path, config)
    before = {offset: log.read(offset, 1 << 20).data for offset in range(0, log.next_offset, 7)}
    times = {ts: log.offset_for_time(ts) for ts in range(990, 1070, 3)}
    log.close()
    indexes = sorted(tmp_path.glob("*.index"))
    if damage == "delete-index":
        for path in indexes:
            path.unlink()
    elif damage == "delete-timeindex":
        for path in tmp_path.glob("*.timeindex"):
            path.unlink()
    elif damage == "garbage-index":
        indexes[0].write_bytes(os.urandom(37))
    else:
        (tmp_path / CHECKPOINT_NAME).write_bytes(b"{not json")
    log = FileLog(tmp_path, config)
    try:
        assert {offset: log.read(offset, 1 << 20).data for offset in before} == before
        assert {ts: log.offset_for_time(ts) for ts in times} == times
        if damage != "garbage-checkpoint":
            assert log.recovery.indexes_rebuilt >= 1
    finally:
        log.close()


EPOCH_APPENDER = Path(__file__).with_name("epoch_appender.py")


def _run_epoch_child(directory: Path, seed: int, reports: int) -> tuple[int, int]:
    """Start the epoch appender, read `reports` reports, SIGKILL it; the last
    (next offset, leader epoch) it reported."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    child = subprocess.Popen(
        [sys.executable, str(EPOCH_APPENDER), str(directory), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    last = (-1, -1)
    try:
        for _ in range(reports):
            line = child.stdout.readline()
            if not line:
                break
            end, epoch = (int(part) for part in line.split())
            last = (end, epoch)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert last != (-1, -1), child.stderr.read() if child.stderr else b""
    return last


@pytest.mark.slow
def test_sigkill_while_epochs_change_keeps_the_epoch_cache_true(tmp_path: Path) -> None:
    """After each crash the epoch cache answers as its batches' headers say:
    the epoch file never misses an epoch a stored batch has."""
    rng = random.Random(20261207)
    for cycle in range(15):
        durable_end, durable_epoch = _run_epoch_child(tmp_path, cycle, rng.randint(1, 80))
        log = FileLog(tmp_path, EPOCH_CONFIG)
        try:
            assert log.next_offset >= durable_end
            assert log.leader_epoch >= durable_epoch
            headers = _all_headers(log)
            epochs = [h.leader_epoch for h in headers]
            assert epochs == sorted(epochs)
            for epoch in range(-1, log.leader_epoch + 2):
                below = [h for h in headers if h.leader_epoch <= epoch]
                if not below:
                    assert log.end_offset_for_epoch(epoch) == (-1, -1)
                    continue
                found = below[-1].leader_epoch
                after = [h.base_offset for h in headers if h.leader_epoch > found]
                expected = (found, min(after, default=log.next_offset))
                assert log.end_offset_for_epoch(epoch) == expected, (cycle, epoch)
        finally:
            log.close()


def _all_headers(log: FileLog) -> list[BatchHeader]:
    found: list[BatchHeader] = []
    offset = log.first_offset
    while offset < log.next_offset:
        result = log.read(offset, 1 << 20)
        found.extend(header for _, header in iter_headers(result.data))
        offset = result.next_offset
    return found
