"""logq through its own asyncio client (`AsyncClient`), native protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from logq.bench.compare.system import Conn, OnBatch, PeerUnavailableError, Queue, System
from logq.client import AsyncClient
from logq.client.producer import AsyncProducer


class LogqConn(Conn):
    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.producer: AsyncProducer = client.producer(linger_ms=0)

    async def publish(self, queue: Queue, partition: int, values: Sequence[bytes]) -> None:
        future = await self.producer.send_batch(queue.name, partition, list(values))
        await future

    async def close(self) -> None:
        await self.client.close()


class LogqSystem(System):
    name = "logq"

    def __init__(self, address: str, http: str | None) -> None:
        self.address = address
        self.rest_url = http
        self.settings = (
            "fsync always (a publish is acked once fdatasync'd, group commit); "
            "AsyncClient on one TCP connection each; tracing on"
        )
        self.admin = AsyncClient(address)

    async def open(self) -> None:
        try:
            await self.admin.connect()
        except OSError as error:
            raise PeerUnavailableError(f"no logq at {self.address}: {error}") from error

    async def close(self) -> None:
        await self.admin.close()

    async def connect(self) -> Conn:
        client = AsyncClient(self.address)
        await client.connect()
        return LogqConn(client)

    async def create(self, queue: Queue) -> None:
        await self.admin.create_topic(queue.name, partitions=queue.partitions)

    async def drop(self, queue: Queue) -> None:
        await self.admin.delete_topic(queue.name)

    async def consume(
        self, queue: Queue, count: int, *, ordered: bool, workers: int, on_batch: OnBatch | None
    ) -> None:
        mode = "ordered" if ordered else "shared"
        await self.admin.put_group(queue.name, "bench", mode=mode)
        if ordered:
            await self._ordered(queue, count, on_batch)
            return
        left = [count]
        await asyncio.gather(*(self._worker(queue, left, on_batch) for _ in range(workers)))

    async def _ordered(self, queue: Queue, count: int, on_batch: OnBatch | None) -> None:
        seen = 0
        async with (
            AsyncClient(self.address) as client,
            client.consume(queue.name, "bench", prefetch=10_000) as consumer,
        ):
            while seen < count:
                messages = await consumer.next_batch(1000, 30)
                if not messages:
                    raise RuntimeError(f"logq: consume stalled after {seen} messages")
                if on_batch is not None:
                    on_batch([m.value or b"" for m in messages])
                consumer.ack_all(messages)  # a commit per poll, as the peers' ordered consumers
                seen += len(messages)
            await consumer.settler.flush()

    async def _worker(self, queue: Queue, left: list[int], on_batch: OnBatch | None) -> None:
        async with AsyncClient(self.address) as client:
            while left[0] > 0:
                messages = await client.receive(queue.name, "bench", max=1000, wait="100ms")
                if on_batch is not None and messages:
                    on_batch([m.value or b"" for m in messages])
                for message in messages:
                    message.ack()
                left[0] -= len(messages)
            await client.settler(queue.name, "bench").flush()
