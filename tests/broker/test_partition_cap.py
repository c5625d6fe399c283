"""limits.partitions: a create, a partition-count increase or a dead-letter
topic that would pass the cap is refused with CAPACITY, naming the cap and
the count, and changes nothing; deleting makes room again."""

from __future__ import annotations

import asyncio

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.broker.delivery import DLQ_HOLD_MS
from logq.errors import CapacityError
from tests.broker.fake import run

CAP = 10


def test_a_create_past_the_cap_is_refused_and_makes_nothing() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("a", {"partitions": 6})
        await broker.create_topic("b", {"partitions": 3})
        with pytest.raises(CapacityError, match=r"holds 9, the limit limits\.partitions is 10"):
            await broker.create_topic("c", {"partitions": 2})
        assert sorted(broker.topics) == ["a", "b"]
        assert broker.partitions_held == 9
        # growing a topic past it is refused the same, and leaves the topic as it was
        with pytest.raises(CapacityError, match="topic 'b' needs 2 more partitions"):
            await broker.update_topic("b", {"partitions": 5})
        assert len(broker.topic("b").partitions) == 3
        # a change that adds no partition is no create
        await broker.update_topic("b", {"max_deliveries": 3})
        await broker.create_topic("c", {"partitions": 1})
        assert broker.partitions_held == CAP
        await broker.delete_topic("a")
        assert broker.partitions_held == 4
        await broker.update_topic("b", {"partitions": 9})
        assert broker.partitions_held == CAP

    run(test, BrokerConfig(partitions_max=CAP))


def test_concurrent_creates_never_pass_the_cap() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        outcomes = await asyncio.gather(
            *(broker.create_topic(f"t{n}", {"partitions": 3}) for n in range(5)),
            return_exceptions=True,
        )
        refused = [o for o in outcomes if isinstance(o, CapacityError)]
        assert len(refused) == 2
        assert len(broker.topics) == 3
        assert broker.partitions_held == 9

    run(test, BrokerConfig(partitions_max=CAP))


def test_a_dead_letter_topic_past_the_cap_waits_and_loses_nothing() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.create_topic("filler", {"partitions": 1})
        await broker.publish("t", [OutgoingMessage(b"poison")])
        taken = await broker.receive("t", "g", "c", max_messages=10)
        with pytest.raises(CapacityError, match=r"topic 't\.dlq' needs 1 more partitions"):
            await broker.reject("t", "g", [m.id for m in taken], "bad")
        assert "t.dlq" not in broker.topics
        # the message is held for its move, not delivered, not lost
        assert await broker.receive("t", "g", "c", max_messages=10) == []
        await broker.delete_topic("filler")
        clock.advance(DLQ_HOLD_MS + 1)
        await broker.tick()  # the hold expires and the move runs again
        assert [m.value for m in await broker.dlq_messages("t", 10)] == [b"poison"]

    run(test, BrokerConfig(partitions_max=2))
