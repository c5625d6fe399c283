"""Replaying a time window, or the dead letters, into a new group."""

from __future__ import annotations

import pytest

from logq.broker import Broker, FakeClock, OutgoingMessage
from logq.errors import AlreadyExistsError, BadArgumentError
from tests.broker.fake import run


async def values(broker: Broker, group: str, topic: str = "t") -> list[bytes]:
    taken = await broker.receive(topic, group, "c", max_messages=100)
    if taken:
        await broker.ack(topic, group, [m.id for m in taken])
    return [m.value or b"" for m in taken]


def test_a_window_replays_into_a_new_group_and_stops_at_its_end() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 2})
        start = clock.now_ms()
        for index in range(6):
            await broker.publish("t", [OutgoingMessage(f"m{index}".encode(), partition=index % 2)])
            clock.advance(1_000)
        described = await broker.replay(
            "t", "window", from_time=start + 2_000, to_time=start + 4_000
        )
        assert described["lag"] == 2
        assert sorted(await values(broker, "window")) == [b"m2", b"m3"]
        await broker.publish("t", [OutgoingMessage(b"later", partition=0)])
        assert await values(broker, "window") == []  # the window is closed
        assert sorted(await values(broker, "everything")) == [
            b"later",
            *(f"m{i}".encode() for i in range(6)),
        ]
        with pytest.raises(AlreadyExistsError):
            await broker.replay("t", "window")
        with pytest.raises(BadArgumentError):
            await broker.replay("t", "backwards", from_time=start + 5, to_time=start)

    run(test)


def test_the_dlq_replays_into_a_new_group() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.publish("t", [OutgoingMessage(b"bad"), OutgoingMessage(b"worse")])
        taken = await broker.receive("t", "g", "c", max_messages=10)
        await broker.reject("t", "g", [m.id for m in taken], "poison")
        described = await broker.replay("t", "inspect", dlq=True)
        assert described["topic"] == "t.dlq"
        assert await values(broker, "inspect", "t.dlq") == [b"bad", b"worse"]

    run(test)
