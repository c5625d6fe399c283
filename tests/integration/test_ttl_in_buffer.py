"""A message is never handed to the application after its TTL, however far
ahead the consumer leased it: what expires in the client's buffer is
skipped and released to the broker as expired (counted, traced, and
dead-lettered when the topic says so).

The embedded broker runs on a fake clock its clients share, so "the
application takes one message every 100 ms" is the clock moved by 100 ms
per message, and nothing waits for time to pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

import logq
from logq.broker import Broker as DomainBroker
from logq.broker import FakeClock, OutgoingMessage
from logq.client import Client
from logq.client.messages import Message
from logq.client.records import MessageData
from logq.errors import NotExpiredError
from tests.harness import server_thread

MESSAGES = 100
TTL_MS = 2_000
PACE_MS = 100  # the application takes one message this often
FRESH = TTL_MS // PACE_MS  # handed out before the clock reaches the TTL: 0 ms .. 1900 ms


def _publish(client: Client, topic: str, per_message_ttl: bool) -> None:
    with client.producer() as producer:
        for index in range(MESSAGES):
            ttl = TTL_MS if per_message_ttl else None
            producer.send(topic, f"m{index}".encode(), ttl=ttl)


def _expires_at(message: MessageData, topic_ttl_ms: int | None) -> int:
    if topic_ttl_ms is None:
        return int(message.headers["logq-expires-at"])
    return message.timestamp_ms + topic_ttl_ms + 1


def _lateness(
    clock: FakeClock, topic_ttl_ms: int | None, take: Callable[[], Message | None]
) -> list[int]:
    """Take messages at the application's pace; how late each was handed out
    (ms past its expiry, negative when in time)."""
    late: list[int] = []
    while (message := take()) is not None:
        late.append(clock.now_ms() - _expires_at(message, topic_ttl_ms))
        message.ack()
        clock.advance(PACE_MS)
    return late


@pytest.mark.parametrize("per_message_ttl", [True, False], ids=["message-ttl", "topic-ttl"])
def test_the_blocking_consumer_never_hands_out_a_message_after_its_ttl(
    per_message_ttl: bool,
) -> None:
    clock = FakeClock()
    with logq.Broker(clock=clock) as broker:
        client = broker.client()
        topic_ttl = None if per_message_ttl else TTL_MS
        client.create_topic("jobs", partitions=1, ttl=topic_ttl)
        _publish(client, "jobs", per_message_ttl)
        with client.consume("jobs", "workers", limit=MESSAGES) as consumer:
            iterator = iter(consumer)
            late = _lateness(clock, topic_ttl, lambda: next(iterator, None))
        client.flush()
        assert max(late) < 0, f"handed out {sum(1 for x in late if x >= 0)} after expiry"
        # a topic TTL is over once it is exceeded: the message of 2000 ms goes out too
        fresh = FRESH if per_message_ttl else FRESH + 1
        assert len(late) == fresh
        counts = client.describe_group("jobs", "workers")["counts"]
        assert counts["acked"] == fresh
        assert counts["ttl_expired"] == MESSAGES - fresh
        assert client.describe_group("jobs", "workers")["lag"] == 0


def test_the_async_consumer_and_next_batch_skip_what_expired_in_the_buffer() -> None:
    clock = FakeClock()
    with logq.Broker(clock=clock) as broker:

        async def run() -> tuple[list[int], list[int], dict[str, Any]]:
            async with broker.async_client() as client:
                await client.create_topic("jobs", partitions=1)
                for index in range(MESSAGES):
                    await client.publish("jobs", f"m{index}".encode(), ttl=TTL_MS)
                late: list[int] = []
                async with client.consume("jobs", "a", limit=MESSAGES) as consumer:
                    async for message in consumer:
                        late.append(clock.now_ms() - _expires_at(message, None))
                        await message.ack()
                        clock.advance(PACE_MS)
                # next_batch: what is left of the buffer has expired when it is taken
                await client.create_topic("polled", partitions=1)
                for index in range(MESSAGES):
                    await client.publish("polled", f"m{index}".encode(), ttl=TTL_MS)
                taken: list[int] = []
                async with client.consume("polled", "b", limit=MESSAGES) as consumer:
                    first = await consumer.next_batch(MESSAGES // 2, 5)
                    while len(first) < MESSAGES // 2:
                        first += await consumer.next_batch(MESSAGES // 2 - len(first), 5)
                    clock.advance(TTL_MS)
                    while rest := await consumer.next_batch(MESSAGES, 0.2):
                        first += rest
                    for message in first:
                        taken.append(clock.now_ms() - _expires_at(message, None))
                        await message.ack()
                await client.flush()
                return late, taken, await client.describe_group("polled", "b")

        late, taken, group_b = asyncio.run(run())
        assert len(late) == FRESH and max(late) < 0
        assert len(taken) == MESSAGES // 2  # the first half, taken before the clock moved
        assert group_b["counts"]["ttl_expired"] == MESSAGES // 2
        assert group_b["counts"]["acked"] == MESSAGES // 2


def test_receive_leaves_out_what_expired_before_the_reply_was_read() -> None:
    """The FETCH reply is read 10 s after the broker leased (the broker's
    receive is wrapped to move the shared clock on once it has leased)."""
    clock = FakeClock()
    with logq.Broker(clock=clock) as broker:
        client = broker.client()
        client.create_topic("jobs", partitions=1, ttl="10s")
        client.publish("jobs", b"old")
        clock.advance(5_000)
        client.publish("jobs", b"new")
        domain = broker.domain
        leased = domain.receive_raw

        async def slow_reply(*args: Any, **kwargs: Any) -> Any:
            found = await leased(*args, **kwargs)
            clock.advance(5_001)  # "old" is past its 10 s when the reply is read
            return found

        domain.receive_raw = slow_reply
        received = client.receive("jobs", "g", max=10)
        domain.receive_raw = leased
        assert [m.value for m in received] == [b"new"]
        client.flush()
        group = client.describe_group("jobs", "g")
        assert group["counts"]["ttl_expired"] == 1
        assert group["lag"] == 1  # "new" only: "old" is settled as expired
        kinds = [event["event"] for event in client.trace("jobs:0:0")["events"]]
        assert kinds[-2:] == ["DELIVERED", "EXPIRED"]


def test_expired_in_the_buffer_is_counted_traced_and_dead_lettered() -> None:
    clock = FakeClock()
    with logq.Broker(clock=clock) as broker:
        client = broker.client()
        client.create_topic("jobs", partitions=1, ttl_dead_letter=True)
        _publish(client, "jobs", per_message_ttl=True)
        with client.consume("jobs", "workers", limit=MESSAGES) as consumer:
            iterator = iter(consumer)
            late = _lateness(clock, None, lambda: next(iterator, None))
        client.flush()
        assert len(late) == FRESH and max(late) < 0
        counts = client.describe_group("jobs", "workers")["counts"]
        assert counts["ttl_expired"] == MESSAGES - FRESH
        assert counts["dead_lettered"] == MESSAGES - FRESH
        dead = client.dlq("jobs", limit=1000)
        assert len(dead) == MESSAGES - FRESH
        assert {m.headers["logq-reason"] for m in dead} == {"expired (ttl)"}
        assert {m.headers["logq-origin-id"] for m in dead} == {
            f"jobs:0:{offset}" for offset in range(FRESH, MESSAGES)
        }
        kinds = [event["event"] for event in client.trace(f"jobs:0:{FRESH}")["events"]]
        assert "EXPIRED" in kinds and "DEAD-LETTERED" in kinds
        assert "ACKED" not in kinds


def test_the_broker_refuses_to_expire_what_has_not_expired_by_its_clock() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        broker = await DomainBroker.open(clock=clock)
        try:
            await broker.create_topic("t", {"partitions": 1})
            await broker.publish(
                "t", [OutgoingMessage(b"a", ttl_ms=1_000), OutgoingMessage(b"b", ttl_ms=5_000)]
            )
            first, second = await broker.receive("t", "g", "c", max_messages=2)
            assert (first.expires_at_ms, second.expires_at_ms) == (
                first.timestamp_ms + 1_000,
                first.timestamp_ms + 5_000,
            )
            with pytest.raises(NotExpiredError) as refused:
                await broker.release_expired("t", "g", [first.receipt, second.receipt])
            assert refused.value.count == 0 and len(refused.value.not_expired) == 2
            clock.advance(1_000)  # "a" has expired now, "b" has not
            with pytest.raises(NotExpiredError) as partly:
                await broker.release_expired("t", "g", [first.receipt, second.receipt])
            assert (partly.value.count, partly.value.not_expired) == (1, ["t:0:1"])
            group = broker.describe_group("t", "g")
            assert group["counts"]["ttl_expired"] == 1
            assert group["lag"] == 1  # "b" stays leased where it was
            assert await broker.ack("t", "g", [second.receipt]) == 1
        finally:
            await broker.close()

    asyncio.run(scenario())


def test_a_real_server_sees_no_message_handed_out_after_its_ttl() -> None:
    """Against `logq serve` with real time: a short TTL, and an application
    slow enough that most of the buffer expires before it gets there."""
    ttl_ms, pace_s, count = 300, 0.02, 60
    with server_thread() as server, Client(server.native) as client:
        client.create_topic("slow", partitions=1)
        client.publish_many("slow", [{"value": f"m{i}", "ttl": ttl_ms} for i in range(count)])
        handed = 0
        with client.consume("slow", "workers", limit=count) as consumer:
            for message in consumer:
                assert time.time() * 1000 < int(message.headers["logq-expires-at"])
                handed += 1
                message.ack()
                time.sleep(pace_s)  # the application's own work
        client.flush()
        counts = client.describe_group("slow", "workers")["counts"]
        assert counts["acked"] == handed
        assert counts["ttl_expired"] == count - handed
        assert 1 <= handed < count
