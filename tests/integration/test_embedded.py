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
