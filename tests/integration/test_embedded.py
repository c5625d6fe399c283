"""logq.Broker inside this process: the same client API, no port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import logq


def test_embedded_broker_in_memory_with_the_client_api() -> None:
    with logq.Broker() as broker:
        client = broker.client()
        client.create_topic("jobs", partitions=2)
        sent = client.publish("jobs", b"hello", key="k")
        (message,) = client.receive("jobs", "workers", max=5)
        assert (message.id, message.value) == (sent.id, b"hello")
        message.ack().result(5)
        assert client.describe_group("jobs", "workers")["counts"]["acked"] == 1
        with client.consume("jobs", "other") as consumer:
            pushed = consumer.next(5)
            assert pushed is not None and pushed.value == b"hello"


def test_embedded_broker_on_a_data_dir_survives_a_restart(tmp_path: Path) -> None:
    with logq.Broker(tmp_path) as broker:
        client = broker.client()
        client.create_topic("jobs", partitions=1)
        client.publish_many("jobs", [b"a", b"b", b"c"])
        (first,) = client.receive("jobs", "g", max=1)
        first.ack().result(5)
    with logq.Broker(tmp_path) as broker:
        client = broker.client()
        rest = client.receive("jobs", "g", max=10)
        assert [m.value for m in rest] == [b"b", b"c"]


def test_embedded_async_client() -> None:
    with logq.Broker() as broker:

        async def run() -> bytes | None:
            async with broker.async_client() as client:
                await client.create_topic("t", partitions=1)
                await client.publish("t", b"async")
                (message,) = await client.receive("t", "g", max=1)
                await message.ack()
                return message.value

        assert asyncio.run(run()) == b"async"


def test_next_batch_hands_out_what_has_arrived_within_the_limit() -> None:
    with logq.Broker() as broker:
        client = broker.client()
        client.create_topic("t", partitions=1)
        client.publish_many("t", [f"{i}".encode() for i in range(50)])
        with client.consume("t", "g", prefetch=100, limit=30) as consumer:
            seen = []
            while batch := consumer.next_batch(20, 5):
                seen += [m.value for m in batch]
                for message in batch:
                    message.ack()
            assert seen == [f"{i}".encode() for i in range(30)]
        # it leased no more than its limit: the other 20 are free at once
        rest = client.receive("t", "g", max=100, wait="1s")
        assert [m.value for m in rest] == [f"{i}".encode() for i in range(30, 50)]


def test_a_backoff_wait_survives_a_restart(tmp_path: Path) -> None:
    with logq.Broker(tmp_path) as broker:
        client = broker.client()
        client.create_topic("jobs", partitions=1, backoff={"initial": "1h"})
        client.publish("jobs", b"later")
        (message,) = client.receive("jobs", "g", max=1)
        message.nack()
    with logq.Broker(tmp_path) as broker:
        client = broker.client()
        assert client.receive("jobs", "g", max=1) == []  # still waiting its hour
        (partition,) = client.describe_group("jobs", "g")["partitions"]
        assert partition["pending_redelivery"] == 1
        message_id = client.peek("jobs", partition=0, offset=0)[0].id
        client.nack("jobs", "g", [message_id], delay=0)  # not leased: changes nothing
        assert client.receive("jobs", "g", max=1) == []


def test_ack_all_settles_a_whole_batch_at_once() -> None:
    with logq.Broker() as broker:

        async def run() -> dict[str, int]:
            async with broker.async_client() as client:
                await client.create_topic("t", partitions=2)
                await client.publish_many("t", [f"{i}".encode() for i in range(40)])
                async with client.consume("t", "g", prefetch=100) as consumer:
                    taken = 0
                    while taken < 40:
                        batch = await consumer.next_batch(15, 5)
                        assert batch
                        await consumer.ack_all(batch)
                        taken += len(batch)
                counts: dict[str, int] = (await client.describe_group("t", "g"))["counts"]
                return counts

        counts = asyncio.run(run())
        assert counts["acked"] == 40
