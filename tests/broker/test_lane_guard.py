"""The starvation guard works across receives: strict priority for any
receive size, a lower lane served once its bound has passed; and the lane
index holds only what some shared group has not settled."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.state.delivery import PartitionDelivery, Planned
from logq.state.lane_guard import LaneGuard, LanePolicy
from tests.broker.fake import run


async def low_then_high(broker: Broker, low: int = 50, high: int = 20) -> None:
    await broker.create_topic("t", {"partitions": 1})
    await broker.put_group("t", "s", {"mode": "shared"})
    for i in range(low):
        await broker.publish("t", [OutgoingMessage(f"low{i}".encode(), priority="low")])
    for i in range(high):
        await broker.publish("t", [OutgoingMessage(f"high{i}".encode(), priority="high")])


async def take(broker: Broker, count: int, group: str = "s") -> list[str]:
    messages = await broker.receive("t", group, "c", max_messages=count)
    if messages:
        await broker.ack("t", group, [m.id for m in messages])
    return [(m.value or b"").decode() for m in messages]


def test_receives_of_one_serve_high_first_then_low_once_ten_high_went_ahead() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await low_then_high(broker)
        firsts = [(await take(broker, 1))[0] for _ in range(10)]
        assert firsts == [f"high{i}" for i in range(10)]
        # the default share, 0.1, lets 10 high messages pass a waiting low one
        assert await take(broker, 1) == ["low0"]
        nexts = [(await take(broker, 1))[0] for _ in range(11)]
        assert nexts == [f"high{i}" for i in range(10, 20)] + ["low1"]  # high ran out

    run(test)


def test_receives_of_five_serve_high_first() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await low_then_high(broker)
        assert await take(broker, 5) == [f"high{i}" for i in range(5)]
        assert await take(broker, 5) == [f"high{i}" for i in range(5, 10)]
        # ten high went ahead of low: it gets one, the rest stays high
        assert await take(broker, 5) == ["high10", "high11", "high12", "high13", "low0"]
        assert await take(broker, 5) == [f"high{i}" for i in range(14, 19)]

    run(test)


def test_a_lower_lane_is_served_once_it_has_waited_the_time_bound() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await low_then_high(broker, low=5, high=50)
        await broker.put_group("t", "s", {"starvation_share": 0.01, "starvation_timeout": "5s"})
        assert await take(broker, 1) == ["high0"]  # low starts waiting now
        clock.advance(4_999)
        assert await take(broker, 1) == ["high1"]
        clock.advance(1)
        assert await take(broker, 1) == ["low0"]
        assert await take(broker, 1) == ["high2"]  # the wait starts again

    run(test)


def test_a_receive_of_many_gives_what_as_many_receives_of_one_give() -> None:
    policy = LanePolicy(interval=3)
    generator = random.Random(7)
    for _ in range(200):
        counts = [generator.randrange(0, 12) for _ in range(3)]
        budget = generator.randrange(1, 20)
        one_by_one, at_once = LaneGuard(), LaneGuard()
        for guard in (one_by_one, at_once):  # a history to start from
            guard.allot([(1, 50), (0, 50), (2, 50)], generator.randrange(0, 9), 0, policy)
        at_once.waits = {k: type(v)(v.passed, v.since_ms) for k, v in one_by_one.waits.items()}
        left = list(counts)
        singles = [0, 0, 0]
        for _ in range(budget):
            waiting = list(zip((1, 0, 2), left, strict=True))
            takes = one_by_one.allot(waiting, 1, 0, policy)
            singles = [a + b for a, b in zip(singles, takes, strict=True)]
            left = [a - b for a, b in zip(left, takes, strict=True)]
        whole = at_once.allot(list(zip((1, 0, 2), counts, strict=True)), budget, 0, policy)
        assert whole == singles, (counts, budget)
        assert at_once.waits == one_by_one.waits, (counts, budget)


def test_the_guard_keeps_nothing_for_lanes_with_nothing_above_them() -> None:
    guard = LaneGuard()
    policy = LanePolicy(interval=10)
    assert guard.allot([(1, 0), (0, 5), (2, 5)], 3, 0, policy) == [0, 3, 0]
    assert set(guard.waits) == {2}  # low waits behind normal
    assert guard.allot([(1, 0), (0, 2), (2, 5)], 3, 0, policy) == [0, 2, 1]
    assert guard.waits == {}  # normal ran out: low waits behind nobody


def test_lane_memory_follows_what_is_unsettled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("logq.broker.topic.LANE_BATCHES_MAX", 4)

    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "s", {"mode": "shared"})
        await broker.put_group("t", "other", {"mode": "shared"})
        await broker.publish("t", [OutgoingMessage(f"n{i}".encode()) for i in range(30)])
        for i in range(12):  # three times the index's size, one run each
            await broker.publish("t", [OutgoingMessage(f"m{i}".encode())])
            await broker.publish("t", [OutgoingMessage(f"h{i}".encode(), priority="high")])
            assert await take(broker, 1) == [f"h{i}"]
            assert await take(broker, 1, "other") == [f"h{i}"]
        partition = broker.topic("t").partitions[0]
        assert partition.lanes == []  # both groups settled every high batch
        await broker.publish("t", [OutgoingMessage(b"late", priority="high")])
        assert await take(broker, 1) == ["late"]  # still before the 30 normal ones
        assert len(partition.lanes) == 1  # "other" has not settled it
        assert await take(broker, 1, "other") == ["late"]
        assert partition.lanes == []

    run(test)


def test_a_group_made_after_the_index_was_trimmed_still_serves_high_first() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await low_then_high(broker, low=5, high=3)
        assert await take(broker, 3) == ["high0", "high1", "high2"]
        assert broker.topic("t").partitions[0].lanes == [(0, 5, 2)]  # one run of low
        await broker.put_group("t", "late", {"mode": "shared"})
        assert await take(broker, 3, "late") == ["high0", "high1", "high2"]  # found again
        await broker.seek("t", "s", "earliest")
        assert await take(broker, 1) == ["high0"]

    run(test)


def test_an_overflowing_index_is_scanned_again_once_it_drains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("logq.broker.topic.LANE_BATCHES_MAX", 4)

    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "s", {"mode": "shared"})
        await broker.publish("t", [OutgoingMessage(f"n{i}".encode()) for i in range(5)])
        for i in range(8):  # twice what the index holds: runs apart, by normal ones
            await broker.publish("t", [OutgoingMessage(f"h{i}".encode(), priority="high")])
            await broker.publish("t", [OutgoingMessage(f"m{i}".encode())])
        received = await take(broker, 1)
        assert broker.topic("t").partitions[0].lanes_overflowed  # it holds four of eight
        received += itertools.chain.from_iterable([await take(broker, 1) for _ in range(7)])
        assert received == [f"h{i}" for i in range(8)]  # the four left out came back in

    run(test)


def test_no_lane_memory_while_no_shared_group_reads_the_topic() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "o", {"mode": "ordered"})
        await broker.publish("t", [OutgoingMessage(f"n{i}".encode()) for i in range(5)])
        for i in range(3):
            await broker.publish("t", [OutgoingMessage(f"h{i}".encode(), priority="high")])
        assert len(await broker.receive("t", "o", "c", max_messages=10)) == 8
        assert broker.topic("t").partitions[0].lanes == []
        await broker.put_group("t", "s", {"mode": "shared"})
        assert await take(broker, 3) == ["h0", "h1", "h2"]  # a shared group finds them
        await broker.publish("t", [OutgoingMessage(b"h3", priority="high")])
        assert await take(broker, 1) == ["h3"]
        for value in (b"h4", b"h5"):  # adjoining batches of one lane: one run
            await broker.publish("t", [OutgoingMessage(value, priority="high")])
        assert broker.topic("t").partitions[0].lanes == [(9, 11, 1)]

    run(test)


def test_a_lane_no_longer_configured_is_served_as_normal() -> None:
    state = PartitionDelivery()
    rank = {1: 0, 0: 1, 2: 2}  # high, normal, low; lane 5 is gone from the config
    plan = state.plan_lanes(0, 3, 6, [(0, 2, 5), (4, 5, 1)], rank, LaneGuard(), LanePolicy())
    assert plan == [Planned(4, 5, 1), Planned(0, 2, 1)]


def test_after_a_restart_the_index_holds_only_what_is_unsettled(tmp_path: Path) -> None:
    async def before(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "s", {"mode": "shared"})
        await broker.publish("t", [OutgoingMessage(b"n0")])  # keeps the floor at 0
        for value in (b"h0", b"h1", b"h2"):
            await broker.publish("t", [OutgoingMessage(value, priority="high")])
        assert await take(broker, 3) == ["h0", "h1", "h2"]
        await broker.publish("t", [OutgoingMessage(b"h3", priority="high")])
        await broker.publish("t", [OutgoingMessage(b"low", priority="low")])

    async def after(broker: Broker, clock: FakeClock) -> None:
        (message,) = await broker.receive("t", "s", "c", max_messages=1)
        assert message.value == b"h3"
        assert broker.topic("t").partitions[0].lanes == [(4, 5, 1), (5, 6, 2)]

    run(before, BrokerConfig(data_dir=tmp_path))
    run(after, BrokerConfig(data_dir=tmp_path))
