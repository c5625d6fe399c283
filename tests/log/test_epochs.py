"""The replication contract of a partition log: leader epochs, the epoch
cache, OffsetsForLeaderEpoch, replica appends and truncate-fully.

The first part runs on MemoryLog and FileLog alike (the fixtures of the
storage contract suite); the last part covers what only a log on disk can
do: keep all of it across a restart, and recover it when its file is
missing, damaged or was interrupted.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from logq.log import (
    CorruptBatchError,
    FileLog,
    InvalidBatchError,
    InvalidEpochError,
    LogError,
    OffsetOutOfRangeError,
    PartitionLog,
    StaleEpochError,
    compression,
    read_header,
)
from logq.log.batch import HEADER_SIZE, compute_crc
from logq.log.epochs import EPOCH_FILE_NAME, EpochState, encode_state, read_epoch_file
from tests.log import test_contract as contract
from tests.log.test_contract import (
    BIG_READ,
    CONFIG,
    MakeLog,
    fill,
    headers_in,
    patched,
    read_all,
    simple_batch,
    with_crc,
)

# The storage contract's fixtures: each test runs on MemoryLog and FileLog.
make_log = contract.make_log
log = contract.log

EPOCH_PROBES = range(-1, 12)


def epochs_stored(log: PartitionLog) -> list[tuple[int, int]]:
    """(base offset, leader epoch) of every stored batch."""
    found: list[tuple[int, int]] = []
    offset = log.first_offset
    while offset < log.next_offset:
        result = log.read(offset, BIG_READ)
        found.extend((h.base_offset, h.leader_epoch) for h in headers_in(result.data))
        offset = result.next_offset
    return found


def answers(log: PartitionLog) -> list[tuple[int, int]]:
    return [log.end_offset_for_epoch(epoch) for epoch in EPOCH_PROBES]


def raw(log: PartitionLog, start: int | None = None) -> bytes:
    """Every stored batch from `start` (default: the log start), as stored."""
    offset = log.first_offset if start is None else start
    parts: list[bytes] = []
    while offset < log.next_offset:
        result = log.read(offset, BIG_READ)
        parts.append(result.data)
        offset = result.next_offset
    return b"".join(parts)


def epoch_history(log: PartitionLog) -> None:
    """Epoch 1: offsets 0..4 (two batches); epoch 2 set but unused; epoch 3:
    5..9; epoch 4: 10..11. Several segments (4 KiB each)."""
    log.set_leader_epoch(1)
    fill(log, [simple_batch(2), simple_batch(3)])
    log.set_leader_epoch(2)
    log.set_leader_epoch(3)
    log.roll()
    fill(log, [simple_batch(1, value_size=3000), simple_batch(4)])
    log.set_leader_epoch(4)
    fill(log, [simple_batch(2)])


# -- the leader epoch ---------------------------------------------------------------------


def test_a_new_log_is_in_epoch_zero_and_stamps_it(log: PartitionLog) -> None:
    assert log.leader_epoch == 0
    assert log.end_offset_for_epoch(0) == (-1, -1)  # nothing stored: no epoch known
    fill(log, [patched(simple_batch(2), leader_epoch=77)])  # what a producer sent is replaced
    assert epochs_stored(log) == [(0, 0)]
    assert log.end_offset_for_epoch(0) == (0, 2)
    assert log.end_offset_for_epoch(5) == (0, 2)


def test_every_append_path_stamps_the_current_epoch_outside_the_crc(log: PartitionLog) -> None:
    offered = [simple_batch(2), simple_batch(1), simple_batch(3), simple_batch(1)]
    log.set_leader_epoch(3)
    log.append(offered[0])
    log.set_leader_epoch(5)
    log.append_many(offered[1:3])
    log.write(offered[3])
    log.sync()
    stored = log.read(0, BIG_READ).data
    assert [(h.base_offset, h.leader_epoch) for h in headers_in(stored)] == [
        (0, 3),
        (2, 5),
        (3, 5),
        (6, 5),
    ]
    position = 0
    for batch in offered:
        header = read_header(stored, position)
        assert stored[position + 16 : position + header.size] == batch[16:]  # the rest as it came
        assert compute_crc(stored, position, header.size) == header.crc
        position += header.size


def test_the_leader_epoch_never_goes_back(log: PartitionLog) -> None:
    log.set_leader_epoch(4)
    log.set_leader_epoch(4)  # the same epoch again is fine
    with pytest.raises(StaleEpochError) as refused:
        log.set_leader_epoch(3)
    assert refused.value.code == "FENCED"
    for bad in (-1, 2**31):
        with pytest.raises(InvalidEpochError) as invalid:
            log.set_leader_epoch(bad)
        assert invalid.value.code == "BADARG"
    assert log.leader_epoch == 4
    log.set_leader_epoch(2**31 - 1)
    fill(log, [simple_batch()])
    assert epochs_stored(log) == [(0, 2**31 - 1)]


# -- OffsetsForLeaderEpoch ------------------------------------------------------------------


def test_end_offset_for_epoch_follows_kafka(log: PartitionLog) -> None:
    epoch_history(log)
    assert log.segment_count > 1
    assert [epoch for _, epoch in epochs_stored(log)] == [1, 1, 3, 3, 4]
    assert log.end_offset_for_epoch(-1) == (-1, -1)
    assert log.end_offset_for_epoch(0) == (-1, -1)  # below the first known epoch
    assert log.end_offset_for_epoch(1) == (1, 5)
    assert log.end_offset_for_epoch(2) == (1, 5)  # no batch of its own: the epoch below it
    assert log.end_offset_for_epoch(3) == (3, 10)
    assert log.end_offset_for_epoch(4) == (4, 12)  # the latest: the log end
    assert log.end_offset_for_epoch(99) == (4, 12)
    log.set_leader_epoch(7)  # no batch in it yet
    assert log.end_offset_for_epoch(7) == (4, 12)
    fill(log, [simple_batch()])
    assert log.end_offset_for_epoch(4) == (4, 12)
    assert log.end_offset_for_epoch(7) == (7, 13)


def test_truncation_trims_the_epoch_cache_from_the_end(log: PartitionLog) -> None:
    epoch_history(log)
    assert log.truncate_to(11) == 10  # the whole epoch 4 batch goes
    assert log.end_offset_for_epoch(4) == (3, 10)
    assert log.end_offset_for_epoch(3) == (3, 10)
    assert log.truncate_to(6) == 6
    assert log.end_offset_for_epoch(3) == (3, 6)
    assert log.truncate_to(5) == 5  # no epoch 3 batch left
    assert log.end_offset_for_epoch(3) == (1, 5)
    assert log.leader_epoch == 4  # truncation never lowers the leader epoch
    fill(log, [simple_batch(2)])
    assert log.end_offset_for_epoch(3) == (1, 5)
    assert log.end_offset_for_epoch(4) == (4, 7)
    assert log.truncate_to(0) == 0
    assert answers(log) == [(-1, -1)] * len(EPOCH_PROBES)


def test_retention_trims_the_epoch_cache_from_the_start(make_log: MakeLog) -> None:
    log = make_log(dataclasses.replace(CONFIG, retention_ms=1_000))
    fill(log, [simple_batch(2, timestamp=100)])  # epoch 0: 0..1
    log.set_leader_epoch(1)
    fill(log, [simple_batch(2, timestamp=100)])  # epoch 1: 2..3
    log.roll()
    fill(log, [simple_batch(2, timestamp=100)])  # epoch 1: 4..5
    log.set_leader_epoch(2)
    fill(log, [simple_batch(2, timestamp=5_000)])  # epoch 2: 6..7
    log.roll()
    assert log.apply_retention(1_500).first_offset == 4
    assert log.end_offset_for_epoch(0) == (-1, -1)  # wholly before the log start
    assert log.end_offset_for_epoch(1) == (1, 6)  # moved up to start at 4
    assert log.end_offset_for_epoch(2) == (2, 8)
    assert log.apply_retention(10_000).first_offset == 8  # everything expired
    assert log.end_offset_for_epoch(1) == (-1, -1)
    assert log.end_offset_for_epoch(2) == (2, 8)  # the latest epoch is kept
    fill(log, [simple_batch(1, timestamp=10_000)])
    assert log.end_offset_for_epoch(2) == (2, 9)


# -- replica appends ------------------------------------------------------------------------


def test_a_follower_stores_its_leaders_batches_byte_for_byte(make_log: MakeLog) -> None:
    leader, follower = make_log(CONFIG), make_log(CONFIG)
    epoch_history(leader)
    data = raw(leader)
    result = follower.append_replica(data[: headers_in(data)[0].size])  # one batch
    assert (result.base_offset, result.last_offset) == (0, 1)
    rest = raw(leader, 2)
    assert follower.append_replica(rest).next_offset == leader.next_offset
    assert raw(follower) == data
    assert answers(follower) == answers(leader)
    assert follower.leader_epoch == 4  # raised to its last batch's
    follower.set_leader_epoch(5)
    fill(follower, [simple_batch()])
    assert follower.end_offset_for_epoch(4) == (4, 12)


def test_replica_appends_roll_and_index_like_appends(make_log: MakeLog) -> None:
    leader, follower = make_log(CONFIG), make_log(CONFIG)
    fill(leader, [simple_batch(3, value_size=700) for _ in range(12)])
    follower.append_replica(raw(leader))
    assert follower.segment_count == leader.segment_count > 2  # rolled at the same points
    for offset in range(leader.next_offset):  # the offset index finds every batch
        assert follower.read(offset, 1).data == leader.read(offset, 1).data


def _spoil(kind: str, good: bytes) -> bytes:
    """Replica data of three batches (offsets 12.., epoch 5) spoiled one way."""
    sizes = [h.size for h in headers_in(good)]
    second = sizes[0]
    third = sizes[0] + sizes[1]
    parts = [good[:second], good[second:third], good[third:]]

    def patch(index: int, **fields: int) -> bytes:
        parts[index] = patched(parts[index], **fields)
        return b"".join(parts)

    if kind == "gap":
        return patch(2, base_offset=read_header(parts[2]).base_offset + 1)
    if kind == "overlap":
        return patch(1, base_offset=11)
    if kind == "wrong start":
        return b"".join(patched(p, base_offset=read_header(p).base_offset + 1) for p in parts)
    if kind == "epoch goes back inside":
        parts[0] = patched(parts[0], leader_epoch=6)
        return patch(1, leader_epoch=6)  # then 5 in the third
    if kind == "below the log's epoch":
        return b"".join(patched(p, leader_epoch=3) for p in parts)
    if kind == "crc":
        last = bytearray(parts[2])
        last[-1] ^= 0x01
        parts[2] = bytes(last)
        return b"".join(parts)
    if kind == "torn":
        return good[:-5]
    if kind == "trailing bytes":
        return good + bytes(30)
    if kind == "version":
        return patch(1, version=2)
    if kind == "record count":
        return patch(2, last_offset_delta=read_header(parts[2]).last_offset_delta + 1)
    if kind == "attributes":
        return patch(1, attributes=1 << 12)
    if kind == "codec":
        return patch(1, attributes=5)
    if kind == "length":
        data = bytearray(b"".join(parts))
        data[second + 8 : second + 12] = (20).to_bytes(4, "little")
        return bytes(data)
    if kind == "timestamps":
        return patch(1, first_timestamp=10, max_timestamp=5)
    assert kind == "empty"
    return b""


SPOILED = {
    "gap": "BADBATCH",
    "overlap": "BADBATCH",
    "wrong start": "BADBATCH",
    "epoch goes back inside": "BADBATCH",
    "below the log's epoch": "FENCED",
    "crc": "CORRUPT",
    "torn": "BADBATCH",
    "trailing bytes": "BADBATCH",
    "version": "BADBATCH",
    "record count": "BADBATCH",
    "attributes": "BADBATCH",
    "codec": "BADBATCH",
    "length": "BADBATCH",
    "timestamps": "BADBATCH",
    "empty": "BADBATCH",
}


@pytest.mark.parametrize("kind", sorted(SPOILED))
def test_bad_replica_data_stores_nothing(make_log: MakeLog, kind: str) -> None:
    leader, follower = make_log(CONFIG), make_log(CONFIG)
    epoch_history(leader)
    follower.append_replica(raw(leader))
    leader.set_leader_epoch(5)
    fill(leader, [simple_batch(2), simple_batch(1), simple_batch(2)])
    good = raw(leader, 12)
    before = (raw(follower), follower.next_offset, follower.size_bytes, answers(follower))
    with pytest.raises(LogError) as refused:
        follower.append_replica(_spoil(kind, good))
    assert refused.value.code == SPOILED[kind]
    assert isinstance(refused.value, (InvalidBatchError, CorruptBatchError, StaleEpochError))
    after = (raw(follower), follower.next_offset, follower.size_bytes, answers(follower))
    assert after == before
    assert follower.leader_epoch == 4
    assert follower.append_replica(raw(leader, 12)).next_offset == 17  # the good data still fits
    assert raw(follower) == raw(leader)


def test_a_replica_body_is_checked_by_its_crc_not_by_decompressing(make_log: MakeLog) -> None:
    """The leader validated the body; the follower only proves it is that body."""
    follower = make_log(CONFIG)
    batch = simple_batch(3, codec=compression.ZSTD)
    garbage = batch[:HEADER_SIZE] + bytes(len(batch) - HEADER_SIZE)  # no zstd frame
    vouched = with_crc(garbage)
    with pytest.raises(InvalidBatchError):
        follower.append(vouched)  # a leader decompresses to validate
    assert follower.append_replica(vouched).next_offset == 3
    assert raw(follower) == vouched


# -- truncate fully ---------------------------------------------------------------------------


@pytest.mark.parametrize("start", [0, 5, 12, 1_000])
def test_truncate_fully_starts_an_empty_log_at_any_offset(make_log: MakeLog, start: int) -> None:
    log = make_log(CONFIG)
    epoch_history(log)
    log.truncate_fully_and_start_at(start)
    assert (log.first_offset, log.next_offset, log.durable_offset) == (start, start, start)
    assert (log.size_bytes, log.segment_count) == (0, 1)
    assert log.read(start, BIG_READ).data == b""
    with pytest.raises(OffsetOutOfRangeError):
        log.read(start + 1, BIG_READ)
    if start:
        with pytest.raises(OffsetOutOfRangeError):
            log.read(start - 1, BIG_READ)
    assert answers(log) == [(-1, -1)] * len(EPOCH_PROBES)  # the cache is cleared
    assert log.leader_epoch == 4  # the leader epoch is not
    fill(log, [simple_batch(2)])
    assert epochs_stored(log) == [(start, 4)]
    assert log.end_offset_for_epoch(4) == (4, start + 2)


def test_truncate_fully_then_replicate_from_the_leaders_start(make_log: MakeLog) -> None:
    leader, follower = make_log(CONFIG), make_log(CONFIG)
    epoch_history(leader)
    fill(follower, [simple_batch(20)])  # a diverged history
    follower.truncate_fully_and_start_at(5)
    follower.append_replica(raw(leader, 5))
    assert raw(follower) == raw(leader, 5)
    assert follower.end_offset_for_epoch(3) == (3, 10)
    assert follower.end_offset_for_epoch(1) == (-1, -1)  # before its start: unknown here


def test_truncate_fully_refuses_a_negative_offset(log: PartitionLog) -> None:
    fill(log, [simple_batch(2)])
    with pytest.raises(OffsetOutOfRangeError):
        log.truncate_fully_and_start_at(-1)
    assert (log.first_offset, log.next_offset) == (0, 2)


def test_a_closed_log_refuses_the_replica_operations(log: PartitionLog) -> None:
    fill(log, [simple_batch()])
    data = raw(log)
    log.close()
    calls: list[Callable[[], object]] = [
        lambda: log.set_leader_epoch(1),
        lambda: log.end_offset_for_epoch(0),
        lambda: log.append_replica(patched(data, base_offset=1)),
        lambda: log.truncate_fully_and_start_at(3),
    ]
    for call in calls:
        with pytest.raises(LogError) as refused:
            call()
        assert refused.value.code == "CLOSED"


# -- FileLog only: restarts, damage, old directories, interruptions -----------------------------


def _reopened(log: FileLog) -> FileLog:
    log.close()
    return FileLog(log.directory, log.config)


def test_epochs_survive_a_restart(tmp_path: Path) -> None:
    log = FileLog(tmp_path, CONFIG)
    epoch_history(log)
    log.set_leader_epoch(9)  # no batch appended in it
    before = (answers(log), epochs_stored(log))
    log = _reopened(log)
    try:
        assert log.leader_epoch == 9
        assert (answers(log), epochs_stored(log)) == before
        with pytest.raises(StaleEpochError):
            log.set_leader_epoch(8)
        fill(log, [simple_batch()])
        assert log.end_offset_for_epoch(9) == (9, 13)
    finally:
        log.close()


def test_truncate_fully_survives_a_restart(tmp_path: Path) -> None:
    log = FileLog(tmp_path, CONFIG)
    epoch_history(log)
    log.truncate_fully_and_start_at(1_000)
    log = _reopened(log)
    try:
        assert (log.first_offset, log.next_offset, log.durable_offset) == (1_000, 1_000, 1_000)
        assert (log.size_bytes, log.segment_count, log.leader_epoch) == (0, 1, 4)
        assert answers(log) == [(-1, -1)] * len(EPOCH_PROBES)
        assert sorted(p.name for p in tmp_path.glob("*.log")) == [f"{1_000:020d}.log"]
        fill(log, [simple_batch(2)])
        log = _reopened(log)  # a finished truncate-fully is never done again
        assert (log.first_offset, log.next_offset) == (1_000, 1_002)
        assert log.end_offset_for_epoch(4) == (4, 1_002)
    finally:
        log.close()


@pytest.mark.parametrize("removed", [0, 1, 2])
def test_an_interrupted_truncate_fully_is_finished_on_open(tmp_path: Path, removed: int) -> None:
    """A crash after the epoch file marked it and after `removed` segments went."""
    log = FileLog(tmp_path, CONFIG)
    epoch_history(log)
    log.close()
    for path in sorted(tmp_path.glob("*.log"))[:removed]:
        path.unlink()
    marked = EpochState(leader_epoch=4, entries=(), start_at=700)
    (tmp_path / EPOCH_FILE_NAME).write_bytes(encode_state(marked))
    log = FileLog(tmp_path, CONFIG)
    try:
        assert (log.first_offset, log.next_offset, log.size_bytes) == (700, 700, 0)
        assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".log") == [
            f"{700:020d}.log"
        ]
        assert read_epoch_file(tmp_path) == EpochState(leader_epoch=4)  # the mark is cleared
        fill(log, [simple_batch(3)])
        assert epochs_stored(log) == [(700, 4)]
    finally:
        log.close()


def test_a_damaged_epoch_file_is_rebuilt_from_batch_headers(tmp_path: Path) -> None:
    log = FileLog(tmp_path, CONFIG)
    epoch_history(log)
    before = answers(log)
    log.close()
    path = tmp_path / EPOCH_FILE_NAME
    damaged = bytearray(path.read_bytes())
    assert damaged[50] == 10  # the start of the third entry (4, 10): 11 would still be plausible
    damaged[50] ^= 0x01
    path.write_bytes(bytes(damaged))
    log = FileLog(tmp_path, CONFIG)
    try:
        assert answers(log) == before
        assert log.leader_epoch == 4
        assert read_epoch_file(tmp_path) == EpochState(4, ((1, 0), (3, 5), (4, 10)))  # rewritten
    finally:
        log.close()


def test_a_directory_of_an_earlier_release_opens_unchanged(tmp_path: Path) -> None:
    """Earlier releases wrote no epoch file, and every batch had epoch 0."""
    log = FileLog(tmp_path, CONFIG)
    fill(log, [simple_batch(3, value_size=500) for _ in range(20)])
    assert log.segment_count > 2
    data, records = raw(log), read_all(log)
    log.close()
    (tmp_path / EPOCH_FILE_NAME).unlink()
    log = FileLog(tmp_path, CONFIG)
    try:
        assert log.recovery.cut_bytes == 0
        assert (raw(log), read_all(log)) == (data, records)
        assert log.leader_epoch == 0
        assert log.end_offset_for_epoch(0) == (0, 60)
        log.set_leader_epoch(1)
        fill(log, [simple_batch()])
        assert log.end_offset_for_epoch(0) == (0, 60)
    finally:
        log.close()


def test_the_rebuild_finds_epochs_changing_inside_and_between_segments(tmp_path: Path) -> None:
    log = FileLog(tmp_path, CONFIG)
    for epoch, count in [(0, 7), (2, 9), (3, 1), (5, 14), (6, 3)]:
        log.set_leader_epoch(epoch)
        fill(log, [simple_batch(2, value_size=400) for _ in range(count)])
    log.roll()
    log.set_leader_epoch(8)
    fill(log, [simple_batch(2, value_size=400) for _ in range(4)])
    assert log.segment_count > 6
    before = answers(log)
    log.close()
    (tmp_path / EPOCH_FILE_NAME).unlink()
    log = FileLog(tmp_path, CONFIG)
    try:
        assert answers(log) == before
        assert log.leader_epoch == 8
    finally:
        log.close()


def test_entries_past_the_recovered_end_are_trimmed_on_open(tmp_path: Path) -> None:
    """The file is written ahead of the batch that starts an epoch: a crash
    between the two leaves an entry at the log end, with no batch."""
    log = FileLog(tmp_path, CONFIG)
    epoch_history(log)
    log.close()
    ahead = EpochState(9, ((1, 0), (3, 5), (4, 10), (9, 12)))
    (tmp_path / EPOCH_FILE_NAME).write_bytes(encode_state(ahead))
    log = FileLog(tmp_path, CONFIG)
    try:
        assert log.end_offset_for_epoch(9) == (4, 12)
        assert log.leader_epoch == 9
    finally:
        log.close()


def test_a_new_log_writes_no_epoch_file_until_it_needs_one(tmp_path: Path) -> None:
    log = FileLog(tmp_path, CONFIG)
    assert not (tmp_path / EPOCH_FILE_NAME).exists()
    fill(log, [simple_batch()])
    assert read_epoch_file(tmp_path) == EpochState(0, ((0, 0),))
    log.close()


def test_the_answers_agree_with_a_brute_force_over_the_headers(tmp_path: Path) -> None:
    log = FileLog(tmp_path, CONFIG)
    try:
        epoch_history(log)
        stored = epochs_stored(log)
        for epoch in EPOCH_PROBES:
            at_or_below = [e for _, e in stored if e <= epoch]
            if not at_or_below:
                assert log.end_offset_for_epoch(epoch) == (-1, -1)
                continue
            found = max(at_or_below)
            after = [base for base, e in stored if e > found]
            assert log.end_offset_for_epoch(epoch) == (found, min(after, default=log.next_offset))
        for first, second in itertools.pairwise(stored):
            assert first[1] <= second[1]
    finally:
        log.close()
