"""Idle partitions cost no file and little memory.

A broker with many partitions opens a partition's logs when something
uses them: a start does not visit them (every message acknowledged before
is still there on first use), and the timed work (retention, the
scrubber) passes over idle ones without opening them or keeping them
open. What an idle partition costs in memory is counted in bytes of
Python objects (tracemalloc), not timed.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from dataclasses import replace
from pathlib import Path

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.broker.scrubber import Scrubber
from logq.log.file_log import FileLog

TOPICS = 20
PARTITIONS = 6
# Python objects of one idle partition (its data and state logs not opened,
# no group, its share of its topic's): measured at about 3.3 KB (6.8 KB
# when each log made its counters, histogram and events up front); the
# bound leaves room for a field or two, not for eagerly built state.
IDLE_PARTITION_BYTES_MAX = 4_000


def _config(path: Path) -> BrokerConfig:
    return BrokerConfig(data_dir=path)


async def _fill(broker: Broker) -> None:
    for n in range(TOPICS):
        await broker.create_topic(f"t{n}", {"partitions": PARTITIONS})
        messages = [OutgoingMessage(f"t{n}/{p}".encode(), partition=p) for p in range(PARTITIONS)]
        await broker.publish(f"t{n}", messages)


def _opened(broker: Broker) -> int:
    """Partition logs (data and state) opened so far."""
    logs = [
        log
        for topic in broker.topics.values()
        for partition in topic.partitions
        for log in (partition.log, topic.state_of(partition.index).log)
    ]
    assert all(isinstance(log, FileLog) for log in logs)
    return sum(1 for log in logs if isinstance(log, FileLog) and log.opened)


def test_a_start_opens_no_file_of_an_idle_partition(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(_config(tmp_path), clock=clock)
        await _fill(broker)
        await broker.close()

        broker = await Broker.open(_config(tmp_path), clock=clock)
        files = broker.backend.file_statistics()
        assert files is not None
        assert _opened(broker) == 0
        assert files["opens"] == 0
        # first use opens that partition alone, and it holds what was acknowledged
        messages = await broker.read_messages("t7", partition=3, offset=0)
        assert [m.value for m in messages] == [b"t7/3"]
        assert _opened(broker) == 1
        result = await broker.publish("t7", [OutgoingMessage(b"more", partition=3)])
        assert result[0].offset == 1
        await broker.close()

    asyncio.run(main())


async def _reopened_idle(path: Path, clock: FakeClock) -> Broker:
    broker = await Broker.open(_config(path), clock=clock)
    await _fill(broker)
    await broker.close()
    return await Broker.open(_config(path), clock=clock)


def test_a_retention_pass_leaves_idle_partitions_unopened(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await _reopened_idle(tmp_path, clock)
        clock.advance(3_600_000)  # an hour: retention (a week) deletes nothing yet
        assert await broker.apply_retention() == 0
        assert await broker.apply_retention() == 0
        assert _opened(broker) == 0
        # the week passes: every idle partition is due, opened and emptied
        clock.advance(7 * 24 * 3_600_000)
        assert await broker.apply_retention() == TOPICS * PARTITIONS
        assert await broker.read_messages("t3", partition=2, offset=0) == []
        await broker.close()

    asyncio.run(main())


def test_a_scrub_pass_leaves_idle_partitions_unopened(tmp_path: Path) -> None:
    async def main() -> None:
        broker = await _reopened_idle(tmp_path, FakeClock())
        # single-segment logs have nothing sealed to verify: none is opened
        assert Scrubber(broker.topic_logs, 1 << 30).run_pass() == 0
        assert _opened(broker) == 0
        await broker.close()

    asyncio.run(main())


def test_an_idle_partition_costs_a_bounded_number_of_bytes(tmp_path: Path) -> None:
    async def main() -> None:
        broker = await Broker.open(_config(tmp_path), clock=FakeClock())
        await broker.create_topic("warm", {"partitions": PARTITIONS})
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for n in range(TOPICS):
                await broker.create_topic(f"t{n}", {"partitions": PARTITIONS})
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        per_partition = grown / (TOPICS * PARTITIONS)
        assert per_partition <= IDLE_PARTITION_BYTES_MAX, per_partition
        assert _opened(broker) == 0
        await broker.close()

    asyncio.run(main())


def _log_fsyncs(broker: Broker) -> int:
    return sum(
        int(partition.log.statistics()["fsyncs"])
        for topic in broker.topics.values()
        for partition in topic.partitions
    )


def test_a_shutdown_fsyncs_no_partition_log_of_its_own(tmp_path: Path) -> None:
    # no timed flush of the journal while the test runs, however slow the machine
    quiet = replace(_config(tmp_path), commit_flush_interval_ms=3_600_000)

    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(quiet, clock=clock)
        await _fill(broker)
        # the journal's flush, every 2 s of the machine's clock, fsyncs the
        # logs written since the last one: one now, so that none is due (or
        # under way) while the logs written next are closed
        await broker.writer.flush()
        for n in range(TOPICS):
            again = [OutgoingMessage(f"t{n}/{p}".encode(), partition=p) for p in range(PARTITIONS)]
            await broker.publish(f"t{n}", again)
        before = _log_fsyncs(broker)
        await broker.close()
        # one sync of the filesystem made every written partition durable
        assert _log_fsyncs(broker) == before
        assert list((tmp_path / "commit").glob("*.wal")) == []  # nothing left to replay

        broker = await Broker.open(_config(tmp_path), clock=clock)
        for n in range(TOPICS):
            for p in range(PARTITIONS):
                messages = await broker.read_messages(f"t{n}", partition=p, offset=0)
                assert [m.value for m in messages] == [f"t{n}/{p}".encode()] * 2
        await broker.close()

    asyncio.run(main())


def test_counting_every_topic_leaves_idle_partitions_unopened(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(_config(tmp_path), clock=clock)
        await _fill(broker)
        sizes = {c["name"]: c["bytes"] for c in broker.topic_counts()}
        await broker.close()

        broker = await Broker.open(_config(tmp_path), clock=clock)
        counted = broker.topic_counts()  # what a scrape and the dashboard read
        assert _opened(broker) == 0
        assert {c["name"]: c["messages"] for c in counted} == {
            f"t{n}": PARTITIONS for n in range(TOPICS)
        }
        assert {c["name"]: c["bytes"] for c in counted} == sizes
        await broker.close()

    asyncio.run(main())


def test_describing_a_new_topic_opens_none_of_its_logs(tmp_path: Path) -> None:
    """A create's answer describes the new topic: that must not open (and so
    make on disk, on the event loop) the logs of partitions nothing wrote."""

    async def main() -> None:
        broker = await Broker.open(_config(tmp_path), clock=FakeClock())
        await broker.create_topic("fresh", {"partitions": PARTITIONS})
        described = broker.describe_topic("fresh")
        assert _opened(broker) == 0
        assert [p["segments"] for p in described["partitions"]] == [1] * PARTITIONS
        assert [p["next_offset"] for p in described["partitions"]] == [0] * PARTITIONS
        assert described["damaged"] == []
        await broker.publish("fresh", [OutgoingMessage(b"x", partition=0)])
        assert broker.describe_topic("fresh")["partitions"][0]["next_offset"] == 1
        await broker.close()

    asyncio.run(main())
