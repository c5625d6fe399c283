"""A group passing tens of thousands of delayed messages, each its own due
time: receives and acks of plain messages behind them cost what they cost
without them, the due ones go out at their time, and a restart reads them
back from a snapshot without an object (or a replayed step) per message."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.broker.lane_index import forget_loaded
from tests.broker.fake import run
from tests.state.work import lines_awaited, lines_run

DELAYED = 20_000


async def publish_delayed(broker: Broker, clock: FakeClock, topic: str) -> list[int]:
    """DELAYED messages, due from 1 s to a few days ahead, each its own time."""
    now = clock.now_ms()
    dues = [now + 1_000 + (index * 7_919) % DELAYED * 17_000 + index for index in range(DELAYED)]
    for start in range(0, DELAYED, 1000):
        await broker.publish(
            topic, [OutgoingMessage(b"d", deliver_at_ms=due) for due in dues[start : start + 1000]]
        )
    return dues


async def receive_and_ack(broker: Broker, topic: str, count: int) -> int:
    got = await broker.receive(topic, "g", "c", max_messages=count)
    await broker.ack(topic, "g", [message.id for message in got])
    return len(got)


async def pass_them(broker: Broker, topic: str) -> None:
    """Receive until the group has reached every delayed message."""
    for _ in range(DELAYED // 5000 + 1):
        assert await broker.receive(topic, "g", "c", max_messages=5000) == []


def test_receives_and_acks_cost_the_same_with_twenty_thousand_delays_pending() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        for topic in ("quiet", "busy"):
            await broker.create_topic(topic, {"partitions": 1})
        await publish_delayed(broker, clock, "busy")
        await pass_them(broker, "busy")
        state = broker.group("busy", "g").deliveries[0]
        assert state.pending_count == DELAYED
        assert len(state.pending) == 0  # no Python object per delayed message
        work: dict[str, int] = {}
        for topic in ("quiet", "busy"):
            await broker.publish(topic, [OutgoingMessage(b"plain")] * 200)
            assert await receive_and_ack(broker, topic, 100) == 100  # warm
            work[topic] = await lines_awaited(partial(receive_and_ack, broker, topic, 100))
        assert work["busy"] <= 2 * work["quiet"] + 500, work
        assert lines_run(state.next_due_ms) < 200  # the next due one is found without a scan

    run(test)


def test_due_ones_go_out_at_their_time_past_thousands_not_due(tmp_path: Path) -> None:
    dues: list[int] = []

    async def before(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        dues.extend(await publish_delayed(broker, clock, "t"))
        await pass_them(broker, "t")
        await broker.publish("t", [OutgoingMessage(b"plain")])
        assert await receive_and_ack(broker, "t", 10) == 1  # not behind the delayed ones
        await broker.snapshot_delivery_state()

    async def after(broker: Broker, clock: FakeClock) -> None:
        state = broker.group("t", "g").deliveries[0]
        assert state.pending_count == DELAYED and len(state.pending) == 0
        first = sorted(dues)[:50]
        clock.advance(first[-1] - clock.now_ms())
        got = await broker.receive("t", "g", "c", max_messages=1000)
        assert sorted(m.offset for m in got) == sorted(dues.index(due) for due in first)
        assert all(m.attempt == 1 for m in got)
        assert state.pending_count == DELAYED - 50

    run(before, BrokerConfig(data_dir=tmp_path))
    run(after, BrokerConfig(data_dir=tmp_path))


def test_the_lane_scan_starts_past_what_the_group_handed_out_not_at_a_held_delay() -> None:
    """A delayed message due in days keeps a shared group's floor low; the
    scan for lane batches (after a restart) does not start there."""

    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.publish(
            "t", [OutgoingMessage(b"d", deliver_at_ms=clock.now_ms() + 86_400_000)]
        )
        for _ in range(300):  # one batch each
            await broker.publish("t", [OutgoingMessage(b"plain")])
        assert await receive_and_ack(broker, "t", 1000) == 300
        state = broker.group("t", "g").deliveries[0]
        assert state.floor == 0 and state.next_offset == 301
        topic = broker.topic("t")
        forget_loaded(topic.partitions[0])  # as after a restart
        work = await lines_awaited(partial(broker._commit.load_lanes, topic))
        assert work < 300, work  # not a step per batch below next_offset

    run(test)
