"""The consumer's batch view end to end: messages handed out of pushed
batches by the plain loop and by `next_batch`, and their acks gathered as
ranges, against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from logq.client import AsyncClient
from tests.harness import Running, server_thread


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with server_thread() as running:
        yield running


def test_acks_of_some_messages_settle_exactly_those(server: Running) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.native) as client:
            await client.create_topic("some", partitions=2)
            producer = client.producer()
            for partition in (0, 1):
                await (await producer.send_batch("some", partition, [b"v"] * 40))
            taken = await client.receive("some", "g", max=100, wait="2s")
            assert len(taken) == 80
            acked = {m.id for m in taken if m.offset % 3 == 0 or 10 <= m.offset < 25}
            for message in taken:
                if message.id in acked:
                    message.ack()
            await client.settler("some", "g").flush()
            rest = [m for m in taken if m.id not in acked]
            await client.nack("some", "g", [m.id for m in rest])
            again = await client.receive("some", "g", max=100, wait="2s")
            assert sorted(m.id for m in again) == sorted(m.id for m in rest)
            assert {m.attempt for m in again} == {2}
            group = await client.describe_group("some", "g")
            assert group["counts"]["acked"] == len(acked)

    asyncio.run(scenario())


def test_leaving_the_loop_hands_back_the_rest_and_keeps_the_acks(server: Running) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.native) as client:
            await client.create_topic("leave", partitions=1)
            producer = client.producer()
            await (await producer.send_batch("leave", 0, [b"%d" % i for i in range(50)]))
            seen: list[int] = []
            async with client.consume("leave", "g", prefetch=100) as consumer:
                async for message in consumer:
                    assert message.value == b"%d" % message.offset
                    message.ack()
                    seen.append(message.offset)
                    if len(seen) == 7:
                        break
            assert seen == list(range(7))
            # the 43 leased but not handed out were given back at close
            async with client.consume("leave", "g", prefetch=100) as consumer:
                rest = await consumer.next_batch(100, timeout_s=5)
                assert [m.offset for m in rest] == list(range(7, 50))
                assert {m.attempt for m in rest} == {2}
                await consumer.ack_all(rest)
            group = await client.describe_group("leave", "g")
            assert group["counts"]["acked"] == 50

    asyncio.run(scenario())


def test_the_loop_and_next_batch_share_one_cursor(server: Running) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.native) as client:
            await client.create_topic("mixed", partitions=1)
            producer = client.producer()
            await (await producer.send_batch("mixed", 0, [b"x"] * 30))
            offsets: list[int] = []
            async with client.consume("mixed", "g", prefetch=8) as consumer:
                async for message in consumer:
                    offsets.append(message.offset)
                    message.ack()
                    if message.offset % 5 == 4 and message.offset < 25:
                        taken = await consumer.next_batch(2)
                        offsets += [m.offset for m in taken]
                        consumer.ack_all(taken + await consumer.next_batch(0))
                    if len(offsets) >= 30:
                        break
                await consumer.settler.flush()
            assert offsets == list(range(30))
            group = await client.describe_group("mixed", "g")
            assert group["counts"]["acked"] == 30

    asyncio.run(scenario())


def test_acking_no_messages_settles_at_once(server: Running) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.native) as client:
            await client.create_topic("none", partitions=1)
            async with client.consume("none", "g") as consumer:
                await asyncio.wait_for(consumer.ack_all([]), 5)
                await asyncio.wait_for(consumer.settler.flush(), 5)

    asyncio.run(scenario())


def test_the_loop_stops_at_the_limit_and_auto_acks_what_it_hands_out(server: Running) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.native) as client:
            await client.create_topic("limited", partitions=1)
            producer = client.producer()
            await (await producer.send_batch("limited", 0, [b"x"] * 40))
            async with client.consume(
                "limited", "g", prefetch=16, limit=13, auto_ack=True
            ) as consumer:
                handed = [message.offset async for message in consumer]
                assert handed == list(range(13))
                assert await consumer.next(timeout_s=0.1) is None  # at its limit
                await consumer.settler.flush()
            group = await client.describe_group("limited", "g")
            assert group["counts"]["acked"] == 13
            async with client.consume("limited", "g", prefetch=100) as consumer:
                rest = await consumer.next_batch(100, timeout_s=5)
                assert [m.offset for m in rest] == list(range(13, 40))

    asyncio.run(scenario())
