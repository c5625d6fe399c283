"""One readable end per partition: no reader sees a message before it is durable.

Under `fsync: always` a publish is answered once the commit journal holds
it durably; between the write to the partition's file and that fsync the
message is in the log but not durable. The test holds the journal's fsync
open there and asks every reader: groups, peek, replay by time, raw reads,
the message lookup, counts and stats must all stop at the partition's
readable end until the fsync lets the message through.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.errors import MessageNotFoundError

WAIT_S = 10  # a bound on waiting for the writer's thread, never reached when all is well


async def _seen(broker: Broker) -> dict[str, object]:
    """What each reader shows of partition 0 of topic t."""
    try:
        found: object = (await broker.get_message("t:0:0")).value
    except MessageNotFoundError:
        found = None
    stats = broker.stats()
    described = broker.describe_topic("t")["partitions"][0]
    return {
        "peek": [m.value for m in await broker.read_messages("t", 0, offset=0)],
        "replay": [m.value for m in await broker.read_messages("t", from_time_ms=0)],
        "raw": len(await broker.read_raw("t", 0, 0, 1 << 20)) > 0,
        "lookup": found,
        "stats": stats["queues"]["t-0"],
        "messages": (described["messages"], described["next_offset"], described["pending"]),
        "counts": broker.topic_counts()[0]["messages"],
        "lag": broker.describe_group("t", "g")["lag"],
        "group": [m.value for m in await broker.receive("t", "g", "c", max_messages=10)],
    }


def test_a_message_not_yet_durable_is_visible_to_no_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        broker = await Broker.open(BrokerConfig(data_dir=tmp_path), clock=FakeClock())
        entered, release = threading.Event(), threading.Event()
        try:
            await broker.create_topic("t", {"partitions": 1})
            await broker.put_group("t", "g", {"mode": "shared"})
            journal = broker.writer.journal
            assert journal is not None
            real_sync = journal.sync

            def held_sync() -> None:
                entered.set()
                release.wait(WAIT_S)
                real_sync()

            monkeypatch.setattr(journal, "sync", held_sync)
            publish = asyncio.ensure_future(broker.publish("t", [OutgoingMessage(b"m")]))
            assert await asyncio.to_thread(entered.wait, WAIT_S)
            log = broker.topics["t"].partitions[0].log
            assert (log.next_offset, log.durable_offset) == (1, 0)  # written, not durable
            assert await _seen(broker) == {
                "peek": [],
                "replay": [],
                "raw": False,
                "lookup": None,
                "stats": 0,
                "messages": (0, 0, 0),
                "counts": 0,
                "lag": 0,
                "group": [],
            }
            assert not publish.done()
            release.set()
            assert [r.offset for r in await publish] == [0]
            assert await _seen(broker) == {
                "peek": [b"m"],
                "replay": [b"m"],
                "raw": True,
                "lookup": b"m",
                "stats": 1,
                "messages": (1, 1, 1),
                "counts": 1,
                "lag": 1,
                "group": [b"m"],
            }
        finally:
            release.set()
            await broker.close()

    asyncio.run(main())
