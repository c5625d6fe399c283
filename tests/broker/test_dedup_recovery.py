"""Dedup ids recovered when the broker opens, from each partition's state:
the last snapshot holds the window's ids, and the data log is read only
after it, where a dedup mark in the state log says dedup batches may lie.

A crash is a copy of the data directory taken while the broker runs, idle,
once the writer has flushed (so no flush moves files as they are copied):
every acknowledged write is on disk, as after a kill -9, and no snapshot
was taken for the stop. A second broker opens the copy.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from pathlib import Path

import msgspec

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.log import encode_batch
from logq.log.config import LogConfig
from logq.state.partition_state import SNAPSHOT_KEY, SNAPSHOT_VERSION, ProducerSnapshot
from logq.state.snapshots import PartitionSnapshot


def _config(path: Path) -> BrokerConfig:
    # small segments: the data before a snapshot fills whole segments of its
    # own; snapshots only when a test takes them
    return BrokerConfig(
        data_dir=path,
        log=LogConfig(segment_bytes=4096),
        snapshot_dedup_ids=1_000_000,
    )


def once(value: bytes, dedup_id: str, **fields: int) -> OutgoingMessage:
    return OutgoingMessage(value, dedup_id=dedup_id, **fields)  # type: ignore[arg-type]


async def _crash_copy(broker: Broker, source: Path, target: Path) -> Path:
    """The data directory as a kill -9 would leave it now."""
    await broker.state_writer.close()  # the snapshots under way are written
    await broker.writer.flush()
    shutil.copytree(source, target)
    return target


def _spoil_segments_before(directory: Path, offset: int) -> int:
    """Overwrite every data segment that lies wholly before `offset` with
    bytes no read can use; how many."""
    logs = sorted(directory.glob("*.log"))
    spoiled = 0
    for this, following in itertools.pairwise(logs):
        if int(following.name.split(".")[0]) <= offset:
            this.write_bytes(b"\xff" * this.stat().st_size)
            spoiled += 1
    return spoiled


def test_ids_come_back_from_the_snapshot_and_the_tail_without_the_data_before_it(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(_config(tmp_path / "a"), clock=clock)
        await broker.create_topic("t", {"partitions": 1, "dedup_window": "10m"})
        before = [(await broker.publish("t", [once(b"x" * 200, f"old-{n}")]))[0] for n in range(60)]
        await broker.snapshot_delivery_state()
        snapshot_offset = broker.topic("t").partitions[0].resolved_end
        assert snapshot_offset is not None
        after = [(await broker.publish("t", [once(b"y", f"new-{n}")]))[0] for n in range(5)]
        crashed = await _crash_copy(broker, tmp_path / "a", tmp_path / "b")
        await broker.close()

        assert _spoil_segments_before(crashed / "topics" / "t" / "0", snapshot_offset) >= 3
        broker = await Broker.open(_config(crashed), clock=clock)
        table = broker.topic("t").dedup
        assert len(table) == 65  # restored as the broker opened, before any publish
        assert table.batches_read_at_open == 5  # the tail only: the marked data after it
        stored = broker.topic("t").partitions[0].log.next_offset
        resent = await asyncio.gather(
            *(broker.publish("t", [once(b"again", f"old-{n}")]) for n in (0, 0, 17, 59))
        )
        assert [r[0].id for r in resent] == [before[n].id for n in (0, 0, 17, 59)]
        (tail,) = await broker.publish("t", [once(b"again", "new-3")])
        assert tail.id == after[3].id
        assert broker.topic("t").partitions[0].log.next_offset == stored  # nothing stored
        fresh = await asyncio.gather(
            *(broker.publish("t", [once(b"f", "fresh")]) for _ in range(4))
        )
        assert len({r[0].id for r in fresh}) == 1
        assert broker.topic("t").partitions[0].log.next_offset == stored + 1
        await broker.close()

    asyncio.run(main())


def test_a_graceful_stop_leaves_nothing_to_read_and_ids_past_their_window_stay_out(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(_config(tmp_path), clock=clock)
        await broker.create_topic("t", {"partitions": 3, "dedup_window": "1m"})
        (early,) = await broker.publish("t", [once(b"x", "early")])
        clock.advance(30_000)
        (late,) = await broker.publish("t", [once(b"x", "late", partition=2)])
        await broker.close()

        clock.advance(40_000)  # "early" is past its window, "late" is not
        broker = await Broker.open(_config(tmp_path), clock=clock)
        table = broker.topic("t").dedup
        assert table.batches_read_at_open == 0
        assert len(table) == 1
        assert table.lookup("early", clock.now_ms()) is None
        (again,) = await broker.publish("t", [once(b"x", "late")])
        assert (again.partition, again.offset) == (late.partition, late.offset)
        (stored,) = await broker.publish("t", [once(b"x", "early")])
        assert stored.id != early.id
        assert broker.describe_topic("t")["messages"] == 3
        await broker.close()

    asyncio.run(main())


def test_partitions_without_dedup_publishes_read_no_data_at_open(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(_config(tmp_path / "a"), clock=clock)
        await broker.create_topic("t", {"partitions": 2})
        await broker.publish("t", [OutgoingMessage(b"m" * 100) for _ in range(500)])
        crashed = await _crash_copy(broker, tmp_path / "a", tmp_path / "b")
        await broker.close()

        broker = await Broker.open(_config(crashed), clock=clock)
        assert broker.topic("t").dedup.batches_read_at_open == 0
        assert broker.topic("t").state_of(0).dedup_marked is False
        await broker.close()

    asyncio.run(main())


class _EarlierSnapshot(msgspec.Struct, array_like=True):
    """A state snapshot as the release before dedup ids were kept wrote it."""

    version: int
    groups: dict[str, PartitionSnapshot]
    data_offset: int = 0
    producers: list[ProducerSnapshot] = []


def test_a_snapshot_without_ids_reads_the_window_from_the_data_log_once(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(_config(tmp_path / "a"), clock=clock)
        await broker.create_topic("t", {"partitions": 1, "dedup_window": "10m"})
        (first,) = await broker.publish("t", [once(b"x", "kept")])
        partition = broker.topic("t").partitions[0]
        state = broker.topic("t").state_of(0)
        assert partition.resolved_end is not None
        earlier = _EarlierSnapshot(SNAPSHOT_VERSION, {}, partition.resolved_end, [])
        batch = encode_batch(
            [msgspec.msgpack.encode(earlier)], keys=[SNAPSHOT_KEY], timestamp_ms=clock.now_ms()
        )
        await broker.writer.write(state.log, state.log_id, batch)
        crashed = await _crash_copy(broker, tmp_path / "a", tmp_path / "b")
        await broker.close()

        broker = await Broker.open(_config(crashed), clock=clock)
        assert broker.topic("t").dedup.batches_read_at_open == 1  # the window, from the data
        (again,) = await broker.publish("t", [once(b"x", "kept")])
        assert again.id == first.id
        await broker.close()  # its snapshot now holds the ids

        broker = await Broker.open(_config(crashed), clock=clock)
        assert broker.topic("t").dedup.batches_read_at_open == 0
        (again,) = await broker.publish("t", [once(b"x", "kept")])
        assert again.id == first.id
        await broker.close()

    asyncio.run(main())


def test_enough_dedup_ids_take_a_snapshot_that_bounds_the_tail(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        config = BrokerConfig(data_dir=tmp_path / "a", snapshot_dedup_ids=10)
        broker = await Broker.open(config, clock=clock)
        await broker.create_topic("t", {"partitions": 1})
        for n in range(25):
            await broker.publish("t", [once(b"x", f"id-{n}")])
            await broker.state_writer.close()  # a snapshot it started is written
        crashed = await _crash_copy(broker, tmp_path / "a", tmp_path / "b")
        await broker.close()

        broker = await Broker.open(BrokerConfig(data_dir=crashed), clock=clock)
        table = broker.topic("t").dedup
        assert len(table) == 25
        assert table.batches_read_at_open == 5  # after the snapshot at 20 ids
        await broker.close()

    asyncio.run(main())


def test_a_data_directory_of_the_release_before_reads_each_window_once(tmp_path: Path) -> None:
    """That release kept no ids in snapshots and wrote no dedup marks: its
    data directory has no format/dedup-ids record, so each partition reads
    its last window's batches at the first open, and is snapshotted."""

    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(_config(tmp_path), clock=clock)
        await broker.create_topic("t", {"partitions": 3, "dedup_window": "10m"})
        places = {}
        for n in range(9):  # as that release stored them: the batches, no mark
            partition = broker.topic("t").partitions[n % 3]
            batch = encode_batch(
                [b"x"],
                headers=[{"logq-dedup-id": f"old-{n}"}],
                timestamp_ms=clock.now_ms(),
                dedup=True,
            )
            stored = await broker.writer.write(partition.log, partition.log_id, batch)
            places[f"old-{n}"] = (partition.index, stored.base_offset)
        await broker.close()
        shutil.rmtree(tmp_path / "meta" / "format")

        broker = await Broker.open(_config(tmp_path), clock=clock)
        assert broker.topic("t").dedup.batches_read_at_open == 9
        for key, place in places.items():
            (again,) = await broker.publish("t", [once(b"again", key)])
            assert (again.partition, again.offset) == place
        await broker.close()

        broker = await Broker.open(_config(tmp_path), clock=clock)
        assert broker.topic("t").dedup.batches_read_at_open == 0
        assert len(broker.topic("t").dedup) == 9
        await broker.close()

    asyncio.run(main())
