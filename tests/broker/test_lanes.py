"""Priority lanes: shared groups serve high before normal before low, with a
starvation guard; ordered groups keep offset order."""

from __future__ import annotations

from pathlib import Path

import pytest

import logq
from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.errors import BadArgumentError
from logq.lanes import DEFAULT_LANES, Lanes
from logq.state.delivery import PartitionDelivery, Planned
from logq.state.events import Leased, Settled
from logq.state.lane_guard import LaneGuard, LanePolicy
from tests.broker.fake import run


async def backlog(broker: Broker) -> None:
    await broker.create_topic("t", {"partitions": 1})
    await broker.publish("t", [OutgoingMessage(f"n{i}".encode()) for i in range(50)])
    await broker.publish(
        "t", [OutgoingMessage(f"l{i}".encode(), priority="low") for i in range(10)]
    )
    await broker.publish(
        "t", [OutgoingMessage(f"h{i}".encode(), priority="high") for i in range(5)]
    )


async def take(broker: Broker, group: str, count: int) -> list[str]:
    messages = await broker.receive("t", group, "c", max_messages=count)
    if messages:
        await broker.ack("t", group, [m.id for m in messages])
    return [(m.value or b"").decode() for m in messages]


def test_shared_groups_serve_high_first_and_never_starve_low() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await backlog(broker)
        await broker.put_group("t", "s", {"mode": "shared", "starvation_share": 0.1})
        first = await take(broker, "s", 20)
        assert first[:5] == [f"h{i}" for i in range(5)]  # the high ones, though published last
        # the guard: 19 messages of higher lanes went out, so low got one after the tenth
        assert [v for v in first if v.startswith("l")] == ["l0"]
        rest: list[str] = []
        while batch := await take(broker, "s", 20):
            rest += batch
        everything = first + rest
        assert sorted(everything) == sorted(
            [f"n{i}" for i in range(50)]
            + [f"l{i}" for i in range(10)]
            + [f"h{i}" for i in range(5)]
        )
        for lane in "nlh":  # within a lane, offset order
            values = [v for v in everything if v[0] == lane]
            assert values == sorted(values, key=lambda v: int(v[1:]))
        assert broker.describe_group("t", "s")["lag"] == 0
        # replay sees every lane in the one log, in offset order
        replay = await broker.read_messages("t", 0, offset=0, limit=100)
        assert [(m.value or b"").decode()[0] for m in replay] == ["n"] * 50 + ["l"] * 10 + ["h"] * 5

    run(test)


def test_ordered_groups_keep_offset_order_and_report_the_lane() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await backlog(broker)
        await broker.put_group("t", "o", {"mode": "ordered"})
        messages = await broker.receive("t", "o", "c", max_messages=100)
        assert [m.offset for m in messages] == list(range(65))
        assert {m.priority for m in messages[60:]} == {"high"}

    run(test)


def test_lanes_are_found_again_after_a_restart(tmp_path: Path) -> None:
    async def before(broker: Broker, clock: FakeClock) -> None:
        await backlog(broker)
        await broker.put_group("t", "s", {"mode": "shared"})

    async def after(broker: Broker, clock: FakeClock) -> None:
        assert (await take(broker, "s", 20))[:5] == [f"h{i}" for i in range(5)]

    run(before, BrokerConfig(data_dir=tmp_path))
    run(after, BrokerConfig(data_dir=tmp_path))


def test_leases_taken_ahead_keep_next_offset_at_the_first_offset_never_handed_out() -> None:
    state = PartitionDelivery()
    rank = {1: 0, 0: 1, 2: 2}  # high, normal, low
    plan = state.plan_lanes(0, 3, 10, [(6, 8, 1)], rank, LaneGuard(), LanePolicy())
    assert plan == [Planned(6, 8, 1), Planned(0, 1, 1)]
    state.apply(Leased("t/g", 0, [(6, 8)], "c", 100, 1))
    assert state.next_offset == 0
    state.apply(Leased("t/g", 0, [(0, 6)], "c", 100, 1))
    assert state.next_offset == 8  # jumped over the lease taken ahead
    state.apply(Settled("t/g", 0, [(6, 8)]))
    assert state.delivered_unsettled(0, 10) == [(0, 6)]
    assert state.plan_lanes(0, 5, 10, [], rank, LaneGuard(), LanePolicy()) == [Planned(8, 10, 1)]


def test_lane_names_and_order_are_configurable() -> None:
    lanes = Lanes(("urgent", "high", "normal", "low"))
    assert lanes.by_index == ("normal", "urgent", "high", "low")  # normal stays index 0
    assert [lanes.rank[lanes.index_of(name)] for name in ("urgent", "high", "normal", "low")] == [
        0,
        1,
        2,
        3,
    ]
    assert DEFAULT_LANES.by_index == ("normal", "high", "low")  # the format's default indexes
    for bad in (
        (),
        ("high", "low"),
        ("normal", "normal"),
        ("Normal",),
        tuple(f"l{i}" for i in range(9)),
    ):
        with pytest.raises(BadArgumentError):
            Lanes(bad)

    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "s", {"mode": "shared", "starvation_share": 0.1})
        await broker.publish("t", [OutgoingMessage(f"n{i}".encode()) for i in range(30)])
        await broker.publish("t", [OutgoingMessage(b"h0", priority="high")])
        await broker.publish("t", [OutgoingMessage(b"u0", priority="urgent")])
        assert (await take(broker, "s", 10))[:2] == ["u0", "h0"]
        with pytest.raises(BadArgumentError, match="urgent, high, normal, low"):
            await broker.publish("t", [OutgoingMessage(b"x", priority="bulk")])

    run(test, BrokerConfig(lanes=("urgent", "high", "normal", "low")))


def test_clients_learn_the_lanes_from_the_server() -> None:
    config = BrokerConfig(lanes=("urgent", "normal", "bulk"))
    with logq.Broker(config=config) as broker:
        client = broker.client()
        client.create_topic("t", partitions=1)
        client.publish("t", b"later", priority="bulk")
        client.publish("t", b"now", priority="urgent")
        received = client.receive("t", "g", max=10)
        assert [(m.value, m.priority) for m in received] == [(b"now", "urgent"), (b"later", "bulk")]
        with pytest.raises(BadArgumentError):
            client.publish("t", b"x", priority="high")


def test_what_a_shared_group_settled_ahead_of_its_position_never_goes_out_again() -> None:
    """A high message is handed out and acked before the normal ones below
    it; once every shared group has settled it, the lane index forgets it,
    and planning in offset order must still pass over it."""

    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "s", {"mode": "shared"})
        await broker.publish("t", [OutgoingMessage(b"n0"), OutgoingMessage(b"h1", priority="high")])
        await broker.publish("t", [OutgoingMessage(b"n2")])
        first = await broker.receive("t", "s", "c", max_messages=1)
        assert [m.offset for m in first] == [1]
        assert await broker.ack("t", "s", ["t:0:1"]) == 1
        rest = await broker.receive("t", "s", "c", max_messages=10)
        assert [m.offset for m in rest] == [0, 2]
        assert broker.describe_group("t", "s")["in_flight"] == 2

    run(test)


def test_a_message_nacked_ahead_of_the_groups_position_can_be_acked() -> None:
    """A high message handed out ahead of normal ones below it, then nacked,
    waits for redelivery: an ack settles it as it settles any message
    waiting below the group's position."""

    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "s", {"mode": "shared"})
        await broker.publish("t", [OutgoingMessage(b"n0"), OutgoingMessage(b"n1")])
        await broker.publish("t", [OutgoingMessage(b"h2", priority="high")])
        taken = await broker.receive("t", "s", "c", max_messages=1)
        assert [m.offset for m in taken] == [2]
        assert await broker.nack("t", "s", ["t:0:2"], delay_ms=5_000) == 1
        assert await broker.ack("t", "s", ["t:0:2"]) == 1
        clock.advance(5_000)
        rest = await broker.receive("t", "s", "c", max_messages=10)
        assert [m.offset for m in rest] == [0, 1]
        assert broker.describe_group("t", "s")["lag"] == 2

    run(test)
