"""A broker with an archive: a topic whose local disk keeps only a tail,
read whole by peeks, time windows and a new group at the earliest offset;
audit reads past retention; the manifest recovered after a restart; a
deleted topic's objects gone."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from logq.archive.settings import ArchiverSettings
from logq.archive.tiered_log import TieredLog
from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.broker.archive_restore import archived_topics, restore_topic
from logq.broker.archiving import ArchiveConfig
from logq.errors import AlreadyExistsError, BadArgumentError
from logq.log.config import LogConfig

HOUR = 3_600_000


def config(tmp_path: Path) -> BrokerConfig:
    return BrokerConfig(
        data_dir=tmp_path / "data",
        log=LogConfig(segment_bytes=16 * 1024),
        archive=ArchiveConfig(
            f"file://{tmp_path / 'archive'}", settings=ArchiverSettings(purge_grace_ms=HOUR)
        ),
    )


async def publish(broker: Broker, topic: str, count: int, clock: FakeClock) -> list[bytes]:
    values = []
    for start in range(0, count, 50):
        batch = [f"m{n:06d}-".encode() * 20 for n in range(start, start + 50)]
        await broker.publish(topic, [OutgoingMessage(v) for v in batch])
        values.extend(batch)
        clock.advance(60_000)
    return values


async def peek_all(broker: Broker, topic: str, **options: object) -> list[bytes]:
    found: list[bytes] = []
    offset = 0
    while True:
        page = await broker.read_messages(topic, 0, offset=offset, limit=1000, **options)  # type: ignore[arg-type]
        if not page:
            return found
        found.extend(m.value or b"" for m in page)
        offset = page[-1].offset + 1


def test_readers_reach_below_the_local_disk_and_after_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(config(tmp_path), clock=clock)
        await broker.create_topic(
            "orders", {"partitions": 1, "archive": True, "local_retention_bytes": 32 * 1024}
        )
        values = await publish(broker, "orders", 2000, clock)
        assert broker.archive is not None
        await broker.archive.tick()
        log = broker.topic("orders").partitions[0].log
        assert isinstance(log, TieredLog)
        assert log.local.first_offset > 0 and log.first_offset == 0
        assert await peek_all(broker, "orders") == values
        # a time window that lies wholly in the archive (50 messages a minute)
        first = (await broker.read_messages("orders", 0, offset=0, limit=1))[0].timestamp_ms
        window = await broker.read_messages(
            "orders",
            0,
            from_time_ms=first + 10 * 60_000,
            to_time_ms=first + 12 * 60_000,
            limit=1000,
        )
        assert [m.value for m in window] == values[500:600]
        # a new group at the earliest offset gets everything, in order
        await broker.put_group("orders", "late", {"mode": "ordered"})
        got: list[bytes] = []
        while len(got) < len(values):
            taken = await broker.receive("orders", "late", "c1", max_messages=500)
            assert taken
            got.extend(m.value or b"" for m in taken)
            await broker.ack("orders", "late", [m.id for m in taken])
        assert got == values
        status = broker.archive.status("orders")[0]
        assert status.archived_from == 0 and status.upload_lag_bytes == 0
        await broker.close()

        broker = await Broker.open(config(tmp_path), clock=clock)
        assert await peek_all(broker, "orders") == values
        assert broker.describe_topic("orders")["partitions"][0]["first_offset"] == 0
        await broker.close()

    asyncio.run(main())


def test_audit_reads_reach_past_retention_until_archive_retention(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(config(tmp_path), clock=clock)
        await broker.create_topic(
            "audit",
            {
                "partitions": 1,
                "archive": True,
                "retention": "10h",
                "local_retention": "1h",
                "archive_retention": "1000h",
            },
        )
        values = await publish(broker, "audit", 1000, clock)  # 20 minutes of messages
        clock.advance(20 * HOUR)
        values += await publish(broker, "audit", 500, clock)
        assert broker.archive is not None
        await broker.archive.tick()
        visible = await peek_all(broker, "audit")
        assert visible == values[-len(visible) :] and len(visible) < len(values)
        assert await peek_all(broker, "audit", include_deleted=True) == values
        await broker.close()

    asyncio.run(main())


def test_archive_settings_are_checked(tmp_path: Path) -> None:
    async def main() -> None:
        broker = await Broker.open(BrokerConfig(data_dir=tmp_path / "plain"))
        with pytest.raises(BadArgumentError, match="no archive"):
            await broker.create_topic("t", {"archive": True})
        await broker.close()
        broker = await Broker.open(config(tmp_path))
        with pytest.raises(BadArgumentError, match="local_retention"):
            await broker.create_topic("t", {"retention": "1h", "local_retention": "2h"})
        await broker.create_topic("t", {"archive": True})
        with pytest.raises(BadArgumentError, match="cannot be turned off"):
            await broker.update_topic("t", {"archive": False})
        await broker.close()

    asyncio.run(main())


def test_a_deleted_topic_leaves_nothing_in_the_archive(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(config(tmp_path), clock=clock)
        await broker.create_topic("gone", {"partitions": 1, "archive": True})
        await publish(broker, "gone", 800, clock)
        assert broker.archive is not None
        await broker.archive.tick()
        assert list((tmp_path / "archive" / "topics" / "gone").rglob("*.seg"))
        await broker.delete_topic("gone")
        assert not list((tmp_path / "archive").rglob("*.seg"))
        await broker.close()

    asyncio.run(main())


def test_a_broker_that_lost_its_disk_restores_a_topic_from_the_archive(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(config(tmp_path), clock=clock)
        await broker.create_topic("orders", {"partitions": 2, "archive": True, "ttl": "9h"})
        values = await publish(broker, "orders", 1500, clock)
        await broker.put_group("orders", "billing", {"mode": "ordered"})
        taken = await broker.receive("orders", "billing", "c1", max_messages=300)
        await broker.ack("orders", "billing", [m.id for m in taken])
        assert broker.archive is not None
        await broker.archive.tick()
        archived_to = {s.partition: s.archived_to or 0 for s in broker.archive.status("orders")}
        await broker.close()
        shutil.rmtree(tmp_path / "data")  # the disk is lost; the store is not

        broker = await Broker.open(config(tmp_path), clock=clock)
        assert await archived_topics(broker) == {"orders": [0, 1]}
        restored = await restore_topic(broker, "orders")
        assert [p["archived_to"] for p in restored["partitions"]] == [
            archived_to[0],
            archived_to[1],
        ]
        topic = broker.topic("orders")
        assert topic.settings.ttl_ms == 9 * HOUR and len(topic.partitions) == 2
        for index in (0, 1):
            found = await broker.read_messages("orders", index, offset=0, limit=10_000)
            assert [m.offset for m in found] == list(range(archived_to[index]))
            stored = set(values)
            assert all(m.value in stored for m in found)
        # the group is back at its committed positions
        described = broker.describe_group("orders", "billing")
        committed = {p["partition"]: p["committed"] for p in described["partitions"]}
        assert sum(committed.values()) == 300
        with pytest.raises(AlreadyExistsError):
            await restore_topic(broker, "orders")
        await broker.close()
        # and a restart keeps what was restored
        broker = await Broker.open(config(tmp_path), clock=clock)
        found = await broker.read_messages("orders", 0, offset=0, limit=10_000)
        assert len(found) == archived_to[0]
        await broker.close()

    asyncio.run(main())
