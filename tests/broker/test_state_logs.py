"""Delivery state per partition: state logs, snapshots in them, recovery by partition.

Each data partition has a state log beside it; its snapshots are records of
that log, the segments before a durable snapshot are deleted, and a restart
rebuilds each group's state from one snapshot plus the tail. The producer
table is snapshotted with the partition, so an idempotent retry is
recognised after a restart however many records came since.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.log import encode_batch
from logq.log.batch import NO_PRODUCER_ID
from logq.log.config import LogConfig


def _open(path: Path, **settings: int) -> BrokerConfig:
    return BrokerConfig(
        data_dir=path,
        snapshot_bytes=settings.get("snapshot_bytes", 64 << 20),
        log=LogConfig(segment_bytes=settings.get("segment_bytes", 1 << 20)),
    )


def test_each_partition_keeps_its_groups_state_beside_it(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(_open(tmp_path), clock=clock)
        await broker.create_topic("jobs", {"partitions": 3})
        await broker.put_group("jobs", "a", {"mode": "shared"})
        await broker.put_group("jobs", "b", {"mode": "shared"})
        for p in range(3):
            await broker.publish("jobs", [OutgoingMessage(b"m", partition=p) for _ in range(4)])
        taken = await broker.receive("jobs", "a", "c", max_messages=12)
        await broker.ack("jobs", "a", [m.id for m in taken if m.partition != 1])
        await broker.close()
        # the state of partition 1 lies in its own state log only
        assert (tmp_path / "topics" / "jobs" / "1.state").is_dir()
        assert not (tmp_path / "state").exists()

        broker = await Broker.open(_open(tmp_path), clock=clock)
        parts = broker.describe_group("jobs", "a")["partitions"]
        assert [(p["committed"], p["in_flight"]) for p in parts] == [(4, 0), (0, 4), (4, 0)]
        parts = broker.describe_group("jobs", "b")["partitions"]
        assert [(p["committed"], p["in_flight"]) for p in parts] == [(0, 0)] * 3
        await broker.close()

    asyncio.run(main())


def test_snapshots_keep_state_logs_short_and_recovery_reads_from_the_last(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = FakeClock()
        config = _open(tmp_path, snapshot_bytes=8192, segment_bytes=4096)
        broker = await Broker.open(config, clock=clock)
        await broker.create_topic("jobs", {"partitions": 1})
        await broker.put_group("jobs", "g", {"mode": "shared"})
        await broker.publish("jobs", [OutgoingMessage(b"m") for _ in range(600)])
        acked = 0
        for _ in range(300):  # one ack event at a time: many small state batches
            (message,) = await broker.receive("jobs", "g", "c", max_messages=1)
            await broker.ack("jobs", "g", [message.id])
            acked += 1
        await broker.state_writer.close()
        state_log = broker.topic("jobs").state_of(0).log
        assert state_log.first_offset > 0  # the segments before a snapshot went
        assert state_log.segment_count <= 5  # two snapshots' worth, and the active one
        await broker.close()

        broker = await Broker.open(config, clock=clock)
        recovered = broker.topic("jobs").state_of(0)
        assert recovered.snapshot_offset is not None
        (part,) = broker.describe_group("jobs", "g")["partitions"]
        assert (part["committed"], part["in_flight"]) == (acked, 0)
        rest = await broker.receive("jobs", "g", "c", max_messages=1000)
        assert [m.offset for m in rest] == list(range(300, 600))
        await broker.close()

    asyncio.run(main())


def test_an_idempotent_retry_is_recognised_after_a_restart_past_the_old_scan(
    tmp_path: Path,
) -> None:
    """The producer table used to be rebuilt from the last 100,000 records
    only; now it comes from the partition's state snapshot plus what the log
    took after it."""

    async def main() -> None:
        clock = FakeClock()
        config = _open(tmp_path, snapshot_bytes=4096, segment_bytes=1 << 20)
        broker = await Broker.open(config, clock=clock)
        await broker.create_topic("jobs", {"partitions": 1})
        await broker.put_group("jobs", "g", {"mode": "shared"})
        first = encode_batch([b"once"], timestamp_ms=clock.now_ms(), producer_id=7, base_sequence=0)
        stored = await broker.publish_batch("jobs", 0, first)
        # a snapshot of partition 0's state is taken as the group works
        await broker.publish("jobs", [OutgoingMessage(b"x") for _ in range(50)])
        for _ in range(50):
            (message,) = await broker.receive("jobs", "g", "c", max_messages=1)
            await broker.ack("jobs", "g", [message.id])
        await broker.state_writer.close()
        assert broker.topic("jobs").state_of(0).snapshot_offset is not None
        # then more records than the old scan read, none from producer 7
        many = encode_batch([b"y"] * 1000, timestamp_ms=clock.now_ms(), producer_id=NO_PRODUCER_ID)
        for _ in range(120):
            await broker.publish_batch("jobs", 0, many)
        await broker.close()

        broker = await Broker.open(config, clock=clock)
        again = await broker.publish_batch("jobs", 0, first)  # the producer's retry
        assert again.duplicate and again.base_offset == stored.base_offset
        await broker.close()

    asyncio.run(main())
