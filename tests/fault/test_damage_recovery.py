"""Damage to the files recovery trusts, each found by `logq bench corrupt`:
a recovery checkpoint that does not verify, an active segment shorter than
its checkpoint says, a commit journal damaged before its last good record,
and a state log whose last snapshot is damaged. Nothing acknowledged that
the other files hold is lost, no offset is given twice, and the damage is
logged and counted."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.broker.commit import Commits
from logq.log import DamagedDataError, FsyncPolicy, LogConfig, encode_batch
from logq.log.batch import decode_batch, iter_headers
from logq.log.commit_journal import CommitJournal
from logq.log.file_log import FileLog
from logq.log.writer import Writer

CONFIG = LogConfig(fsync=FsyncPolicy.ALWAYS, segment_bytes=64 << 10, index_interval_bytes=256)
BATCHES = 20


def _filled(directory: Path) -> FileLog:
    log = FileLog(directory, CONFIG)
    for number in range(BATCHES):
        log.write(encode_batch([f"value {number}".encode() * 8]))
    log.sync()
    return log


def _values(log: FileLog, start: int = 0) -> list[bytes | None]:
    values: list[bytes | None] = []
    offset = start
    while offset < log.next_offset:
        try:
            result = log.read(offset, 1 << 20)
        except DamagedDataError as error:
            offset = error.end
            continue
        for position, _ in iter_headers(result.data):
            values += decode_batch(result.data, position).values
        offset = result.next_offset
    return values


def test_a_checkpoint_that_does_not_verify_is_reported_and_cuts_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _filled(tmp_path).close()  # a clean stop: the checkpoint names the segment's end
    checkpoint = tmp_path / "recovery-checkpoint.json"
    payload = json.loads(checkpoint.read_bytes())
    payload["position"] -= 5  # a damaged digit: inside the last batch
    checkpoint.write_text(json.dumps(payload))
    caplog.set_level(logging.WARNING)
    log = FileLog(tmp_path, CONFIG)
    assert log.next_offset == BATCHES
    assert _values(log) == [f"value {n}".encode() * 8 for n in range(BATCHES)]
    assert log.statistics()["files_repaired"] == 1
    assert log.recovery.cut_bytes == 0
    assert any("recovery-checkpoint.json does not verify" in r.getMessage() for r in caplog.records)
    log.close()


def test_an_active_segment_cut_below_its_checkpoint_gives_no_offset_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _filled(tmp_path).close()
    (segment,) = tmp_path.glob("*.log")
    layout = iter_headers(segment.read_bytes())
    position, header = layout[BATCHES // 2]
    with segment.open("r+b") as file:
        file.truncate(position + 10)  # half of the acknowledged batches are gone
    caplog.set_level(logging.WARNING)
    log = FileLog(tmp_path, CONFIG)
    assert log.next_offset == BATCHES  # the lost offsets are not given again
    assert [(d.start, d.end) for d in log.damaged_ranges()] == [(header.base_offset, BATCHES)]
    with pytest.raises(DamagedDataError):
        log.read(header.base_offset, 1 << 20)
    kept = [f"value {n}".encode() * 8 for n in range(header.base_offset)]
    assert _values(log) == kept
    assert log.write(encode_batch([b"after"])).base_offset == BATCHES
    assert log.statistics()["damage_found"] == 1
    assert any("before its checkpoint" in r.getMessage() for r in caplog.records)
    log.close()


def test_commit_journal_damage_before_its_last_record_is_reported_not_cut(
    tmp_path: Path,
) -> None:
    sources = {name: _filled(tmp_path / "source" / name) for name in ("a", "b")}
    stored = {name: [log.read(n, 1).data for n in range(3)] for name, log in sources.items()}
    journal = CommitJournal(tmp_path / "commit")
    journal.replay(lambda _: None)
    groups = [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]
    for name, number in groups:  # one commit group each, made durable in turn
        journal.append([(name.encode(), stored[name][number])])
        journal.sync()
    journal.close()
    (path,) = (tmp_path / "commit").glob("*.wal")
    data = bytearray(path.read_bytes())
    second = 8 + 12 + 2 + 1 + 4 + len(stored["a"][0])  # where the second record starts
    data[second + 40] ^= 0xFF  # inside b's first batch: its record fails its CRC
    path.write_bytes(bytes(data))

    logs = {name: FileLog(tmp_path / "logs" / name, CONFIG) for name in ("a", "b")}
    report = CommitJournal(tmp_path / "commit").replay(logs.get)
    assert report.cut_bytes == 0  # good records follow: damage, not a torn write
    assert len(report.damaged) == 1
    assert logs["a"].next_offset == 3  # everything of `a` the journal held came back
    assert _values(logs["a"]) == [f"value {n}".encode() * 8 for n in range(3)]
    # b's first copy is the damaged one: a gap, reported; its second comes back
    assert report.gaps == ["b: ends at 0, journal resumes at 1"]
    assert logs["b"].next_offset == 2
    assert [(d.start, d.end) for d in logs["b"].damaged_ranges()] == [(0, 1)]
    assert _values(logs["b"]) == [b"value 1" * 8]


def _broker_config(path: Path) -> BrokerConfig:
    return BrokerConfig(data_dir=path, snapshot_bytes=8192, log=LogConfig(segment_bytes=4096))


def _snapshots(state_dir: Path) -> list[tuple[Path, int, int]]:
    """(segment, position, size) of each snapshot batch of a state log."""
    found = []
    for segment in sorted(state_dir.glob("*.log")):
        stored = segment.read_bytes()
        for position, header in iter_headers(stored):
            if decode_batch(stored, position).keys == [b"s"]:
                found.append((segment, position, header.size))
    return found


def test_a_damaged_snapshot_means_the_one_before_plus_the_log_since(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(_broker_config(tmp_path), clock=clock)
        await broker.create_topic("jobs", {"partitions": 1})
        await broker.put_group("jobs", "g", {"mode": "shared"})
        await broker.publish("jobs", [OutgoingMessage(b"m") for _ in range(600)])
        acked = 0
        for _ in range(300):  # one ack at a time: many small state batches, snapshots
            (message,) = await broker.receive("jobs", "g", "c", max_messages=1)
            await broker.ack("jobs", "g", [message.id])
            acked += 1
        await broker.close()

        # every snapshot of the segment holding the last one is damaged
        snapshots = _snapshots(tmp_path / "topics" / "jobs" / "0.state")
        last_segment = snapshots[-1][0]
        for segment, position, size in snapshots:
            if segment == last_segment:
                stored = bytearray(segment.read_bytes())
                stored[position + size // 2] ^= 0xFF
                segment.write_bytes(bytes(stored))

        caplog.set_level(logging.WARNING)
        broker = await Broker.open(_broker_config(tmp_path), clock=clock)
        (part,) = broker.describe_group("jobs", "g")["partitions"]
        assert (part["committed"], part["in_flight"]) == (acked, 0)
        again = await broker.receive("jobs", "g", "c", max_messages=1)
        assert [m.offset for m in again] == [acked]  # no acked message comes back
        await broker.close()

    asyncio.run(main())
    logged = [r.getMessage() for r in caplog.records if "state log" in r.getMessage()]
    assert logged and "the delivery state is the snapshot at offset" in logged[0]


def test_offsets_a_group_was_handed_are_not_given_again_after_a_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The data log's active segment cut short with its checkpoint gone too
    (nothing in the log's own files says how far it went): the group that
    acked those messages says it, and new messages go past them."""

    async def main() -> None:
        clock = FakeClock()
        config = BrokerConfig(data_dir=tmp_path)
        broker = await Broker.open(config, clock=clock)
        await broker.create_topic("jobs", {"partitions": 1})
        await broker.put_group("jobs", "g", {"mode": "shared"})
        for number in range(10):
            await broker.publish("jobs", [OutgoingMessage(f"m{number}".encode())])
        taken = await broker.receive("jobs", "g", "c", max_messages=10)
        await broker.ack("jobs", "g", [m.id for m in taken])
        await broker.close()

        partition = tmp_path / "topics" / "jobs" / "0"
        (segment,) = partition.glob("*.log")
        position, header = iter_headers(segment.read_bytes())[5]
        with segment.open("r+b") as file:
            file.truncate(position)
        (partition / "recovery-checkpoint.json").unlink()

        caplog.set_level(logging.WARNING)
        broker = await Broker.open(config, clock=clock)
        (result,) = await broker.publish("jobs", [OutgoingMessage(b"after")])
        assert result.offset == 10  # not 5: offsets 5..9 were acked by the group
        (fresh,) = await broker.receive("jobs", "g", "c", max_messages=10)
        assert (fresh.offset, fresh.value) == (10, b"after")
        damaged = broker.describe_topic("jobs")["damaged"]
        assert [(d["start"], d["end"]) for d in damaged] == [(header.base_offset, 10)]
        await broker.close()

    asyncio.run(main())
    assert any("were handed offsets up to 9" in r.getMessage() for r in caplog.records)


def test_a_damaged_time_index_entry_never_makes_a_time_lookup_skip(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=4096, index_interval_bytes=128)
    log = FileLog(tmp_path, config)
    for number in range(200):
        log.write(encode_batch([b"v" * 40], timestamp_ms=1_000 + number))
    log.close()
    first = sorted(tmp_path.glob("*.timeindex"))[0]
    entries = bytearray(first.read_bytes())
    middle = (len(entries) // 12 // 2) * 12
    entries[middle : middle + 8] = (0).to_bytes(8, "little")  # its time: 0
    first.write_bytes(bytes(entries))
    log = FileLog(tmp_path, config)
    try:
        wrong = [t for t in range(1_000, 1_200) if log.offset_for_time(t) != t - 1_000]
        assert wrong == [] or log.statistics()["files_repaired"] > 0
    finally:
        log.close()


def test_a_cut_above_the_last_checkpoint_of_batches_the_journal_dropped_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The journal's flush fsyncs the log and drops its copies: the log's
    checkpoint must then name how far it reached, or a cut of its file at a
    batch boundary (below what was acknowledged, above the last interval
    checkpoint) would pass for a log that never held those batches."""
    config = LogConfig(fsync=FsyncPolicy.ALWAYS, checkpoint_interval_bytes=1 << 30)
    running, stopped = tmp_path / "running", tmp_path / "stopped"

    async def main() -> None:
        log = FileLog(running / "log", config)
        writer = Commits(Writer(_new_journal(running / "commit")))
        writer.start(asyncio.get_running_loop())
        for number in range(BATCHES):  # one commit group each, held by the journal
            await writer.write(log, b"log", encode_batch([f"value {number}".encode() * 8]))
        await writer.flush()  # the log fsynced, the journal's copies dropped
        shutil.copytree(running, stopped)  # what a kill -9 leaves
        await writer.close()
        log.close()

    asyncio.run(main())
    (segment,) = (stopped / "log").glob("*.log")
    position, header = iter_headers(segment.read_bytes())[BATCHES // 2]
    os.truncate(segment, position)  # a cut at a batch boundary
    caplog.set_level(logging.WARNING)
    log = FileLog(stopped / "log", config)
    report = CommitJournal(stopped / "commit").replay({"log": log}.get)
    assert report.gaps == []
    assert log.next_offset == BATCHES  # the lost offsets are not given again
    assert [(d.start, d.end) for d in log.damaged_ranges()] == [(header.base_offset, BATCHES)]
    assert _values(log) == [f"value {n}".encode() * 8 for n in range(header.base_offset)]
    assert any("before its checkpoint" in r.getMessage() for r in caplog.records)
    log.close()


def _new_journal(directory: Path) -> CommitJournal:
    journal = CommitJournal(directory)
    journal.replay(lambda _: None)
    return journal


def test_the_scrubber_finds_damage_below_the_active_segments_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A clean stop leaves the checkpoint at the active segment's end, so the
    next open reads none of its batches again: damage there waits for a read
    unless the scrubber walks the active segment's durable bytes too."""
    _filled(tmp_path).close()
    (segment,) = tmp_path.glob("*.log")
    position, _ = iter_headers(segment.read_bytes())[3]
    stored = bytearray(segment.read_bytes())
    stored[position + 8] ^= 0x40  # its batch_length
    segment.write_bytes(bytes(stored))
    caplog.set_level(logging.WARNING)
    log = FileLog(tmp_path, CONFIG)
    log.ensure_open()
    assert log.damaged_ranges() == []  # the open read nothing below the checkpoint
    cursor = -1
    while (base := log.scrub(cursor)) is not None:
        cursor = base
    assert [(d.start, d.end) for d in log.damaged_ranges()] == [(3, 4)]
    assert log.statistics()["damage_found"] == 1
    assert any(segment.name in r.getMessage() for r in caplog.records)
    assert _values(log) == [f"value {n}".encode() * 8 for n in range(BATCHES) if n != 3]
    assert log.write(encode_batch([b"after"])).base_offset == BATCHES
    log.close()


def test_offsets_a_state_snapshot_saw_stored_are_not_given_again_after_a_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The data log's active segment cut short past every group's position,
    with its checkpoint gone: the last state snapshot, taken with more
    stored, says how far the log reached."""

    async def main() -> None:
        clock = FakeClock()
        config = _broker_config(tmp_path)
        broker = await Broker.open(config, clock=clock)
        await broker.create_topic("jobs", {"partitions": 1})
        await broker.put_group("jobs", "g", {"mode": "shared"})
        for _ in range(6):
            await broker.publish("jobs", [OutgoingMessage(b"m") for _ in range(100)])
        for _ in range(300):  # one ack at a time: many small state batches, snapshots
            (message,) = await broker.receive("jobs", "g", "c", max_messages=1)
            await broker.ack("jobs", "g", [message.id])
        await broker.close()

        partition = tmp_path / "topics" / "jobs" / "0"
        segment = sorted(partition.glob("*.log"))[-1]
        layout = iter_headers(segment.read_bytes())
        position, header = next((p, h) for p, h in layout if h.base_offset >= 400)
        with segment.open("r+b") as file:
            file.truncate(position)
        (partition / "recovery-checkpoint.json").unlink()

        caplog.set_level(logging.WARNING)
        broker = await Broker.open(config, clock=clock)
        (result,) = await broker.publish("jobs", [OutgoingMessage(b"after")])
        assert result.offset == 600  # not where the cut ends: a snapshot saw 600 stored
        damaged = broker.describe_topic("jobs")["damaged"]
        assert [(d["start"], d["end"]) for d in damaged] == [(header.base_offset, 600)]
        await broker.close()

    asyncio.run(main())
    assert any(
        "state snapshot was taken with offsets up to 599" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("where", ["sealed", "active"])
def test_a_damaged_leader_epoch_field_is_found_though_the_crc_holds(
    tmp_path: Path, where: str
) -> None:
    """The batch CRC starts after the leader epoch field (the log writes it
    on append): a flipped byte there is caught by the epoch cache, which
    says which epoch every stored batch carries."""
    config = LogConfig(segment_bytes=4096 if where == "sealed" else 64 << 10)
    count = 80  # three segments when they are sealed at 4 KiB
    log = FileLog(tmp_path, config)
    for number in range(count):
        log.append(encode_batch([f"value {number}".encode() * 8]))
    log.close()
    segment = sorted(tmp_path.glob("*.log"))[0]
    position, header = iter_headers(segment.read_bytes())[2]
    stored = bytearray(segment.read_bytes())
    stored[position + 15] ^= 0x12  # the high byte of its leader epoch
    segment.write_bytes(bytes(stored))
    log = FileLog(tmp_path, config)
    log.ensure_open()
    cursor = -1
    while (base := log.scrub(cursor)) is not None:
        cursor = base
    assert [(d.start, d.end) for d in log.damaged_ranges()] == [(2, 3)]
    with pytest.raises(DamagedDataError):
        log.read(header.base_offset, 1 << 20)
    assert _values(log) == [f"value {n}".encode() * 8 for n in range(count) if n != 2]
    log.close()
