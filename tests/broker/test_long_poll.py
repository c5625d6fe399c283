"""A long-poll receive waits on the broker's clock: with a fake clock it
ends when the clock is moved past its wait or past a due redelivery, and
not before, whatever real time passes meanwhile."""

from __future__ import annotations

import asyncio

from logq.broker import Broker, FakeClock, Message, OutgoingMessage
from tests.broker.fake import run

BOUND_S = 5.0  # real seconds a test waits for the loop to run what is due
LOOP_TURNS_MAX = 1000  # event loop turns a receive may take to reach its wait


async def _until_waiting(clock: FakeClock) -> None:
    """Let the event loop run until a receive waits on the clock."""
    for _ in range(LOOP_TURNS_MAX):
        if clock.sleepers:
            return
        await asyncio.sleep(0)
    raise AssertionError("the receive never waited on the broker's clock")


def test_an_empty_long_poll_ends_when_the_fake_clock_passes_its_wait() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        waiting = asyncio.ensure_future(
            broker.receive("t", "g", "c", max_messages=1, wait_ms=60_000)
        )
        await _until_waiting(clock)
        clock.advance(59_999)
        await _until_waiting(clock)
        assert not waiting.done()
        clock.advance(1)
        assert await asyncio.wait_for(waiting, BOUND_S) == []

    run(test)


def test_a_long_poll_wakes_for_a_nacked_message_when_its_delay_has_passed() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.publish("t", [OutgoingMessage(b"job")])
        (first,) = await broker.receive("t", "g", "c", max_messages=1)
        await broker.nack("t", "g", [first.id], delay_ms=30_000)
        waiting = asyncio.ensure_future(
            broker.receive("t", "g", "c", max_messages=1, wait_ms=60_000)
        )
        await _until_waiting(clock)
        clock.advance(29_999)
        await _until_waiting(clock)
        assert not waiting.done()
        clock.advance(1)
        found: list[Message] = await asyncio.wait_for(waiting, BOUND_S)
        assert [(m.id, m.attempt) for m in found] == [(first.id, 2)]

    run(test)


def test_a_long_poll_wakes_at_the_due_time_of_a_delay_another_receive_held_back() -> None:
    """A receive that began waiting while another consumer's receive had
    leased a delayed message (to hold it back: not due yet) wakes at that
    message's due time, without the broker's timer running."""

    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "g", {"mode": "shared"})
        for consumer in ("other", "waiter"):  # members already: no join wakes the waiter
            assert await broker.receive("t", "g", consumer, max_messages=1) == []
        due_ms = clock.now_ms() + 500
        (later,) = await broker.publish("t", [OutgoingMessage(b"later", deliver_at_ms=due_ms)])
        # tasks start in order: the other consumer leases it first, and the
        # waiter finds nothing to plan while that receive reads it
        other = asyncio.ensure_future(broker.receive("t", "g", "other", max_messages=1))
        waiting = asyncio.ensure_future(
            broker.receive("t", "g", "waiter", max_messages=1, wait_ms=60_000)
        )
        assert await other == []  # met early: held back until its time
        assert broker.group("t", "g").deliveries[0].next_due_ms() == due_ms
        await _until_waiting(clock)
        clock.advance(499)
        await _until_waiting(clock)
        assert not waiting.done()
        clock.advance(1)
        found: list[Message] = await asyncio.wait_for(waiting, BOUND_S)
        assert [(m.id, m.attempt) for m in found] == [(later.id, 1)]

    run(test)
