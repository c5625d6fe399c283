"""Delayed and scheduled messages with a fake clock: held back until due."""

from __future__ import annotations

from pathlib import Path

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.broker.delays import held_back
from logq.errors import BadArgumentError
from logq.log.batch import DELAYED, encode_batch
from tests.broker.fake import run


async def take(broker: Broker, topic: str, group: str = "g") -> list[tuple[bytes | None, int]]:
    return [(m.value, m.attempt) for m in await broker.receive(topic, group, "c", max_messages=100)]


def test_a_delayed_message_goes_to_every_group_at_its_time_not_before() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        now = clock.now_ms()
        (later,) = await broker.publish("t", [OutgoingMessage(b"later", deliver_at_ms=now + 5_000)])
        await broker.publish("t", [OutgoingMessage(b"now")])
        for group in ("a", "b"):
            assert await take(broker, "t", group) == [(b"now", 1)]  # the next one does not wait
        clock.advance(4_999)
        assert await take(broker, "t", "a") == []
        clock.advance(1)
        for group in ("a", "b"):
            assert await take(broker, "t", group) == [(b"later", 1)]  # a first delivery
        # a group that starts after the time sees it in offset order
        assert [v for v, _ in await take(broker, "t", "c")] == [b"later", b"now"]
        # replay by time finds it at the time it became deliverable
        window = await broker.read_messages("t", from_time_ms=now + 5_000, to_time_ms=now + 5_001)
        assert [m.id for m in window] == [later.id]

    run(test)


def test_an_auto_ack_group_gets_a_delayed_message_it_met_early_at_its_time() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "g", {"mode": "shared", "auto_ack": True})
        now = clock.now_ms()
        await broker.publish(
            "t", [OutgoingMessage(b"later", deliver_at_ms=now + 5_000), OutgoingMessage(b"now")]
        )
        assert await take(broker, "t") == [(b"now", 1)]  # settled as it goes
        clock.advance(5_000)
        assert await take(broker, "t") == [(b"later", 1)]  # held back, not settled unseen
        assert await take(broker, "t") == []  # and settled once it went out
        (part,) = broker.describe_group("t", "g")["partitions"]
        assert (part["committed"], part["in_flight"]) == (2, 0)

    run(test)


def test_the_wait_of_a_receive_ends_when_the_message_is_due() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.publish("t", [OutgoingMessage(b"x", deliver_at_ms=clock.now_ms() + 50)])
        assert await take(broker, "t") == []
        state = broker.group("t", "g").deliveries[0]
        assert state.next_due_ms() == clock.now_ms() + 50  # the receive knows when to wake
        assert broker.describe_group("t", "g")["partitions"][0]["pending_redelivery"] == 1

    run(test)


def test_max_delay_is_enforced_for_messages_and_batches() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1, "max_delay": "1h"})
        with pytest.raises(BadArgumentError, match="max_delay"):
            await broker.publish(
                "t", [OutgoingMessage(b"x", deliver_at_ms=clock.now_ms() + 3_600_001)]
            )
        far = encode_batch([b"x"], timestamp_ms=clock.now_ms() + 7_200_000, delayed=True)
        with pytest.raises(BadArgumentError, match="max_delay"):
            await broker.publish_batch("t", 0, far)
        assert broker.describe_topic("t")["messages"] == 0
        near = encode_batch([b"y"], timestamp_ms=clock.now_ms() + 1_000, delayed=True)
        await broker.publish_batch("t", 0, near)
        data = await broker.read_raw("t", 0, 0, 1 << 20)
        assert data[21] & DELAYED  # stored as it came: the mark stays on the batch
        assert await take(broker, "t") == []
        clock.advance(1_000)
        assert await take(broker, "t") == [(b"y", 1)]

    run(test)


def test_a_held_back_message_survives_a_restart(tmp_path: Path) -> None:
    due: list[int] = []

    async def before(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        due.append(clock.now_ms() + 60_000)
        await broker.publish(
            "t",
            [
                OutgoingMessage(b"soon", deliver_at_ms=clock.now_ms() - 1),
                OutgoingMessage(b"later", deliver_at_ms=due[0]),
            ],
        )
        assert await take(broker, "t") == [(b"soon", 1)]  # "later" is now held by the group

    async def after(broker: Broker, clock: FakeClock) -> None:
        assert await take(broker, "t") == []  # FakeClock starts at the same time again
        clock.advance(60_000)
        assert await take(broker, "t") == [(b"later", 1)]
        assert await take(broker, "t") == []  # once

    run(before, BrokerConfig(data_dir=tmp_path))
    run(after, BrokerConfig(data_dir=tmp_path))


def test_the_timing_wheel_wakes_waiting_receives_when_a_message_comes_due() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.publish("t", [OutgoingMessage(b"x", deliver_at_ms=clock.now_ms() + 500)])
        assert await take(broker, "t") == []  # held back, and put on the wheel
        topic = broker.topic("t")
        topic.changed.clear()
        assert len(broker.scheduler) == 1
        clock.advance(499)
        await broker.tick()
        assert not topic.changed.is_set()
        clock.advance(1)
        await broker.tick()
        assert topic.changed.is_set()  # waiters wake
        assert len(broker.scheduler) == 0

    run(test)


def test_held_back_finds_the_records_not_due_within_the_range_asked() -> None:
    first = encode_batch([b"a", b"b", b"c", b"d"], timestamps=[5, 50, 7, 60], delayed=True)
    second = encode_batch([b"e", b"f"], timestamps=[90, 8], delayed=True, base_offset=4)
    plain = encode_batch([b"g"], timestamp_ms=500, base_offset=6)  # not marked: never held
    data = first + second + plain
    assert held_back(data, 0, 7, 10) == ([1, 3, 4], [50, 60, 90])
    assert held_back(data, 2, 5, 10) == ([3, 4], [60, 90])
    assert held_back(data, 0, 7, 1_000) == ([], [])
