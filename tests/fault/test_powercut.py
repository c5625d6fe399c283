"""Power cuts, played under the durability layer (logq/bench/crash_disk.py):
every file operation of a run is recorded, and the disk a cut at a random
point could leave is rebuilt and opened. Unlike kill -9, the page cache is
gone: only what was fsynced (files, and names in fsynced directories) stays."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from pathlib import Path

from logq.bench.crash_disk import DiskRecorder
from logq.bench.powercut import PowercutSettings, run_powercut
from logq.broker import Broker, BrokerConfig, FakeClock
from logq.broker.commit import Commits
from logq.broker.messages import OutgoingMessage
from logq.log import FileLog, FsyncPolicy, LogConfig, encode_batch
from logq.log.commit_journal import CommitJournal
from logq.log.writer import Writer
from tests.log.test_writer import values


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_only_fsynced_data_and_names_survive(tmp_path: Path) -> None:
    root = tmp_path / "disk"
    root.mkdir()
    recorder = DiskRecorder(root)
    with recorder.recording():
        fd = os.open(root / "a", os.O_WRONLY | os.O_CREAT, 0o644)
        os.pwrite(fd, b"durable", 0)
        os.fsync(fd)
        directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(directory)
        os.pwrite(fd, b"-later", 7)
        os.close(fd)
        os.replace(root / "a", root / "b")  # no directory fsync after it
        synced = recorder.count
        os.fsync(directory)
        os.close(directory)
    rng = random.Random(7)
    seen: set[tuple[tuple[str, bytes], ...]] = set()
    for _ in range(200):
        cut = tmp_path / "cut"
        recorder.materialise(synced, rng, cut, journal_point=0)
        tree = _tree(cut)
        assert list(tree) == ["a"]  # the rename was never fsynced in its directory
        assert tree["a"].startswith(b"durable")
        assert b"durable-later".startswith(tree["a"])  # a prefix of the later write
        seen.add(tuple(tree.items()))
        for path in cut.iterdir():
            path.unlink()
    assert len(seen) > 2  # untouched, torn and whole tails all occur
    recorder.materialise(recorder.count, rng, tmp_path / "after", journal_point=0)
    assert list(_tree(tmp_path / "after")) == ["b"]


def test_a_new_partition_directory_survives_a_power_cut(tmp_path: Path) -> None:
    """A log made in new directories and appended to under fsync: always
    keeps the append: every new directory's name is fsynced in its parent."""
    root = tmp_path / "disk"
    root.mkdir()
    recorder = DiskRecorder(root)
    with recorder.recording():
        log = FileLog(root / "topics" / "t" / "0", LogConfig(fsync=FsyncPolicy.ALWAYS))
        log.append(encode_batch([b"acknowledged"]))
        acknowledged = recorder.count
        log.close()
    for seed in range(20):
        cut = tmp_path / f"cut-{seed}"
        recorder.materialise(acknowledged, random.Random(seed), cut, journal_point=0)
        reopened = FileLog(cut / "topics" / "t" / "0", LogConfig(fsync=FsyncPolicy.ALWAYS))
        assert reopened.next_offset == 1
        reopened.close()


def test_a_roll_keeps_the_journaled_tail_of_the_segment_it_seals(tmp_path: Path) -> None:
    """Small batches are durable in the commit journal, not yet in their
    segment; a roll must make them durable in the segment before the new
    segment's name is: once it is, recovery takes the old segment as sealed
    and the journal's copies of its tail as already held."""
    root = tmp_path / "disk"
    root.mkdir()
    recorder = DiskRecorder(root)
    config = LogConfig(fsync=FsyncPolicy.ALWAYS, segment_bytes=4096)
    acknowledged: list[tuple[int, bytes]] = []

    async def write() -> None:
        journal = CommitJournal(root / "commit")
        journal.replay(lambda name: None)
        writer = Commits(Writer(journal))
        writer.start(asyncio.get_running_loop())
        log = FileLog(root / "p", config)
        for number in range(40):
            value = b"%04d" % number + b"x" * 400
            await writer.write(log, b"p", encode_batch([value], timestamp_ms=1_000))
            acknowledged.append((recorder.count, value))
        await writer.close(flush=False)
        log.close()
        journal.close()

    with recorder.recording():
        asyncio.run(write())
    rng = random.Random(3)
    for cut in range(recorder.count + 1):
        target = tmp_path / "cut"
        if target.exists():
            shutil.rmtree(target)
        recorder.materialise(cut, rng, target)
        log = FileLog(target / "p", config)
        journal = CommitJournal(target / "commit")
        journal.replay(lambda name, log=log: log if name == "p" else None)  # type: ignore[misc]
        stored = values(log)
        kept = [value for done, value in acknowledged if done <= cut]
        assert stored[: len(kept)] == kept, f"cut after op {cut}"
        log.close()
        journal.close()


def test_power_cuts_keep_every_acknowledgement(tmp_path: Path) -> None:
    # memory-backed scratch where there is one: the recorded run's fsyncs cost nothing there
    shm = Path("/dev/shm")
    scratch = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    report = run_powercut(PowercutSettings(cuts=250, seed=11, rounds=100, directory=scratch))
    assert report.cuts == 250
    assert report.acknowledged > 300  # the workload did acknowledge things to lose
    assert report.failed == 0, "\n".join(report.failures)


def test_a_topic_made_again_starts_its_groups_afresh(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(BrokerConfig(data_dir=data), clock=clock)
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "g")
        await broker.publish("t", [OutgoingMessage(value=b"old%d" % i) for i in range(3)])
        received = await broker.receive("t", "g", "c", max_messages=3)
        await broker.ack("t", "g", [m.receipt for m in received])
        await broker.delete_topic("t")
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "g")
        await broker.publish("t", [OutgoingMessage(value=b"new%d" % i) for i in range(3)])
        await broker.close()
        broker = await Broker.open(BrokerConfig(data_dir=data), clock=clock)
        try:
            received = await broker.receive("t", "g", "c", max_messages=10)
            assert [m.value for m in received] == [b"new0", b"new1", b"new2"]
        finally:
            await broker.close()

    asyncio.run(main())


def test_a_message_rejected_again_after_a_redrive_stays_in_the_dlq(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(BrokerConfig(data_dir=tmp_path / "data"), clock=clock)
        try:
            await broker.create_topic("t", {"partitions": 1})
            await broker.put_group("t", "g", {"mode": "shared"})
            await broker.publish("t", [OutgoingMessage(value=b"x")])
            (message,) = await broker.receive("t", "g", "c", max_messages=1)
            await broker.reject("t", "g", [message.receipt], reason="first")
            assert await broker.redrive("t") == 1
            (message,) = await broker.receive("t", "g", "c", max_messages=1)
            await broker.reject("t", "g", [message.receipt], reason="second")
            clock.advance(120_000)
            await broker.tick()
            assert len(await broker.dlq_messages("t")) == 1
        finally:
            await broker.close()

    asyncio.run(main())
