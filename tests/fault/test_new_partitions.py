"""A new partition's first write: the fsyncs it costs, and that they are enough.

A partition's logs are made on their first write. What that write must make
durable before it is acknowledged: the data (the commit journal's fsync,
shared by the writes that arrive together), the partition directory's name
in its topic's directory, and the names of the files the log keeps its data
and checkpoint in. Empty new files need no fsync of their own, the names of
a new log's files share one fsync of its directory, and partitions opened
together share the fsync of their topic's directory. Every fsync is counted
on the recorded disk (logq/bench/crash_disk.py: the real calls, each
recorded), and power cuts at every point of such a run keep every
acknowledged message.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from collections import Counter
from pathlib import Path

from logq.bench.crash_disk import LINK, ROOT, SYNC, DiskRecorder
from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.log import durable

PARTITIONS = 6


def _synced_paths(recorder: DiskRecorder, start: int, end: int) -> list[str]:
    """The files and directories fsynced by the operations start..end, in
    order, each by the first name it was made under (relative to the root)."""
    names = {ROOT: "."}
    for op in recorder.ops:
        if op[0] == LINK and op[3] not in names:
            parent = names[op[1]]
            names[op[3]] = op[2] if parent == "." else f"{parent}/{op[2]}"
    return [names[op[1]] for op in recorder.ops[start:end] if op[0] == SYNC]


def test_a_new_partitions_first_write_fsyncs_only_what_durability_needs(tmp_path: Path) -> None:
    recorder = DiskRecorder(tmp_path)
    marks: list[int] = []

    async def main() -> None:
        broker = await Broker.open(BrokerConfig(data_dir=tmp_path), clock=FakeClock())
        await broker.create_topic("t", {"partitions": PARTITIONS})
        for partition in range(PARTITIONS):  # one at a time: nothing shared by chance
            marks.append(recorder.count)
            await broker.publish("t", [OutgoingMessage(b"first", partition=partition)])
        marks.append(recorder.count)
        await broker.close()

    with recorder.recording():
        asyncio.run(main())
    for partition in range(1, PARTITIONS):
        synced = _synced_paths(recorder, marks[partition], marks[partition + 1])
        log = f"topics/t/{partition}"
        # the directory's name in the topic's, the checkpoint's and the epoch
        # file's contents (written whole, then renamed), the names of the
        # log's files (one fsync of its directory), the data (the journal)
        assert Counter(synced) == Counter(
            [
                "topics/t",
                f"{log}/recovery-checkpoint.json.tmp",
                log,
                f"{log}/leader-epochs.tmp",
                "commit/00000000000000000001.wal",
            ]
        ), synced
    # the first partition also made the topics directory and the topic's own
    first = _synced_paths(recorder, marks[0], marks[1])
    assert first.count(".") == 1 and first.count("topics") == 1
    assert len(first) == 7, first


def test_directories_made_together_share_an_fsync(tmp_path: Path) -> None:
    syncs = durable.DirectorySyncs()
    made = []
    for name in ("0", "1", "2"):
        (tmp_path / name).mkdir()
        made.append(syncs.changed())
    syncs.sync(tmp_path, made[-1])  # begun after every change: covers all three
    for ticket in made:
        syncs.sync(tmp_path, ticket)
    assert syncs.fsyncs == 1
    (tmp_path / "3").mkdir()
    syncs.sync(tmp_path, syncs.changed())  # a change after the last fsync began
    assert syncs.fsyncs == 2


def test_power_cuts_keep_the_first_writes_of_new_partitions(tmp_path: Path) -> None:
    root = tmp_path / "disk"
    root.mkdir()
    recorder = DiskRecorder(root)
    acknowledged: list[tuple[int, int, bytes]] = []  # (op count, partition, value)

    async def write() -> None:
        # the commit journal is flushed after every write: each log's own
        # fsync (with its files' names) is what then keeps its data
        broker = await Broker.open(
            BrokerConfig(data_dir=root, commit_flush_bytes=1), clock=FakeClock()
        )
        await broker.create_topic("t", {"partitions": PARTITIONS})
        for round_number in range(2):
            values = [b"%d/%d" % (round_number, p) for p in range(PARTITIONS)]
            await broker.publish(
                "t", [OutgoingMessage(value, partition=p) for p, value in enumerate(values)]
            )
            acknowledged.extend((recorder.count, p, value) for p, value in enumerate(values))
        await broker.close()

    async def stored(disk: Path) -> dict[int, list[bytes]]:
        broker = await Broker.open(BrokerConfig(data_dir=disk), clock=FakeClock())
        try:
            if "t" not in broker.topics:
                return {}
            messages = await broker.read_messages("t", offset=0, limit=100)
            found: dict[int, list[bytes]] = {}
            for message in messages:
                found.setdefault(message.partition, []).append(message.value or b"")
            return found
        finally:
            await broker.close()

    with recorder.recording():
        asyncio.run(write())
    rng = random.Random(5)
    created = min(count for count, _, _ in acknowledged) - 1  # the topic exists by then
    cuts = sorted({*range(created, recorder.count + 1, 7), recorder.count})
    for cut in cuts:
        target = tmp_path / "cut"
        if target.exists():
            shutil.rmtree(target)
        recorder.materialise(cut, rng, target)
        found = asyncio.run(stored(target))
        for done, partition, value in acknowledged:
            if done <= cut:
                assert value in found.get(partition, []), f"cut after op {cut}: {value!r} lost"
