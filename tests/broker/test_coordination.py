"""Group coordination in the broker: join, heartbeat, leave, sessions, hand-overs."""

from __future__ import annotations

import asyncio

import pytest

from logq.broker import Broker, FakeClock, coordination
from logq.broker.messages import OutgoingMessage
from logq.errors import LimitError
from tests.broker.fake import run


async def ordered(broker: Broker, partitions: int = 4) -> None:
    await broker.create_topic("t", {"partitions": partitions})
    await broker.put_group("t", "g", {"mode": "ordered", "visibility_timeout": "10s"})
    for partition in range(partitions):
        await broker.publish("t", [OutgoingMessage(value=b"v", partition=partition)] * 3)


def test_members_join_heartbeat_and_expire() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await ordered(broker)
        a = await broker.join("t", "g", "a", session_timeout_ms=1_000)
        assert a["partitions"] == [0, 1, 2, 3]
        b = await broker.join("t", "g", "b", session_timeout_ms=5_000)
        assert len(b["partitions"]) == 2  # nothing in flight: moved at once
        clock.advance(900)
        broker.heartbeat("t", "g", "a")
        clock.advance(900)
        await broker.tick()
        assert set(broker.describe_group("t", "g")["assignment"]) == {"a", "b"}
        clock.advance(200)
        await broker.tick()  # a silent for 1.1 s > its 1 s session
        info = broker.describe_group("t", "g")
        assert info["assignment"] == {"b": [0, 1, 2, 3]}
        assert info["rebalances"][-1]["reason"] == "a session expired"

    run(scenario)


def test_a_moving_partition_waits_for_its_in_flight_messages() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await ordered(broker, partitions=2)
        await broker.join("t", "g", "a")
        taken = await broker.receive("t", "g", "a", max_messages=100)
        assert {m.partition for m in taken} == {0, 1}
        view = await broker.join("t", "g", "b")
        assert view["partitions"] == [] and len(view["incoming"]) == 1
        moving = view["incoming"][0]
        # b gets nothing from the moving partition while a holds its messages
        assert await broker.receive("t", "g", "b", max_messages=100) == []
        # a gets nothing new from it either
        await broker.publish("t", [OutgoingMessage(value=b"w", partition=moving)])
        again = await broker.receive("t", "g", "a", max_messages=100)
        assert {m.partition for m in again} <= {1 - moving}
        waiter = asyncio.create_task(broker.receive("t", "g", "b", max_messages=100, wait_ms=5_000))
        await asyncio.sleep(0)
        await broker.ack("t", "g", [m.id for m in taken if m.partition == moving])
        got = await asyncio.wait_for(waiter, 5)
        assert [m.offset for m in got] == [3]  # the new message, at once after the hand-over
        info = broker.describe_group("t", "g")
        assert info["assignment"] == {"a": [1 - moving], "b": [moving]}
        assert info["rebalances"][-1]["done_ms"] is not None
        by_partition = {p["partition"]: p for p in info["partitions"]}
        assert by_partition[moving]["owner"] == "b"
        assert by_partition[moving]["in_flight"] == 1

    run(scenario)


def test_revoke_timeout_bounds_the_wait_and_leases_stay_with_the_old_owner() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await ordered(broker, partitions=2)
        await broker.put_group("t", "g", {"revoke_timeout": "2s"})
        await broker.join("t", "g", "a")
        taken = await broker.receive("t", "g", "a", max_messages=100)
        view = await broker.join("t", "g", "b")
        moving = view["incoming"][0]
        clock.advance(2_000)
        await broker.tick()
        assert broker.describe_group("t", "g")["assignment"]["b"] == [moving]
        # the messages a still holds are not handed to b until their lease ends
        assert await broker.receive("t", "g", "b", max_messages=100) == []
        clock.advance(8_001)
        await broker.tick()
        again = await broker.receive("t", "g", "b", max_messages=100)
        assert sorted(m.offset for m in again) == sorted(
            m.offset for m in taken if m.partition == moving
        )

    run(scenario)


def test_leave_hands_partitions_over_at_once() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await ordered(broker)
        await broker.join("t", "g", "a")
        await broker.join("t", "g", "b")
        assert broker.leave("t", "g", "a")
        assert not broker.leave("t", "g", "a")
        assert broker.describe_group("t", "g")["assignment"] == {"b": [0, 1, 2, 3]}
        await broker.put_group("t", "g", {"assignor": "range"})
        await broker.join("t", "g", "c")
        assert broker.describe_group("t", "g")["assignment"] == {"b": [0, 1], "c": [2, 3]}

    run(scenario)


def test_members_per_group_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordination, "MEMBERS_MAX", 2)

    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await ordered(broker)
        await broker.join("t", "g", "a")
        await broker.join("t", "g", "b")
        with pytest.raises(LimitError):
            await broker.receive("t", "g", "c")
        await broker.join("t", "g", "a")  # a member already: fine

    run(scenario)
