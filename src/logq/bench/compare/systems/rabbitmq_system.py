"""RabbitMQ through aio-pika: durable classic queues, persistent messages,
publisher confirms.

A partition is one durable queue (`<queue>.<partition>`). A publish sends
every message of the batch on a confirming channel and returns once all
confirms are in (RabbitMQ confirms a persistent message once it is
fsync'd). Consumers use basic.consume with a prefetch of 2000: ordered is
one consumer acking each batch with `multiple` (a commit), shared is
competing consumers, each on its own channel, acking each message.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from logq.bench.compare.system import Conn, OnBatch, PeerUnavailableError, Queue, System

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:25672/"
PREFETCH = 2000


def _queue(queue: Queue, partition: int) -> str:
    return f"{queue.name}.{partition}"


class RabbitConn(Conn):
    def __init__(self, connection: Any, channel: Any) -> None:
        self.connection = connection
        self.channel = channel

    async def publish(self, queue: Queue, partition: int, values: Sequence[bytes]) -> None:
        from aio_pika import DeliveryMode, Message  # noqa: PLC0415

        exchange = self.channel.default_exchange
        name = _queue(queue, partition)
        await asyncio.gather(
            *(
                exchange.publish(Message(v, delivery_mode=DeliveryMode.PERSISTENT), name)
                for v in values
            )
        )

    async def close(self) -> None:
        await self.connection.close()


class _Inbox:
    """Deliveries of one channel's consumers, taken in batches."""

    def __init__(self) -> None:
        self.messages: deque[Any] = deque()
        self.arrived = asyncio.Event()

    async def put(self, message: Any) -> None:
        self.messages.append(message)
        self.arrived.set()

    async def take(self, most: int) -> list[Any]:
        while not self.messages:
            self.arrived.clear()
            await self.arrived.wait()
        count = min(most, len(self.messages))
        return [self.messages.popleft() for _ in range(count)]


class RabbitSystem(System):
    name = "rabbitmq"

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        self.rest_url = None
        self.admin: Any = None
        self.settings = "durable queues, persistent messages, publisher confirms; aio-pika"

    async def _connection(self) -> Any:
        import aio_pika  # noqa: PLC0415

        return await aio_pika.connect(self.url, timeout=30)

    async def open(self) -> None:
        try:
            import aio_pika  # noqa: F401, PLC0415
        except ImportError as error:
            raise PeerUnavailableError(
                "aio-pika is not installed (pip install 'logq[bench]')"
            ) from error
        try:
            self.admin = await self._connection()
        except Exception as error:  # aio-pika raises its own family, and OSError
            raise PeerUnavailableError(f"no RabbitMQ at {self.url}: {error}") from error
        version = self.admin.transport.connection.server_properties.get("version", b"?")
        if isinstance(version, bytes):
            version = version.decode()
        self.settings = (
            f"RabbitMQ {version}: durable classic queues, persistent messages, "
            f"publisher confirms; aio-pika; prefetch {PREFETCH}"
        )
        self.admin_channel = await self.admin.channel()

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.close()

    async def connect(self) -> Conn:
        connection = await self._connection()
        return RabbitConn(connection, await connection.channel(publisher_confirms=True))

    async def create(self, queue: Queue) -> None:
        for partition in range(queue.partitions):
            await self.admin_channel.declare_queue(_queue(queue, partition), durable=True)

    async def drop(self, queue: Queue) -> None:
        for partition in range(queue.partitions):
            await self.admin_channel.queue_delete(_queue(queue, partition))

    async def consume(
        self, queue: Queue, count: int, *, ordered: bool, workers: int, on_batch: OnBatch | None
    ) -> None:
        connection = await self._connection()
        left = [count]
        try:
            await asyncio.gather(
                *(
                    self._worker(connection, queue, ordered, left, on_batch)
                    for _ in range(1 if ordered else workers)
                )
            )
        finally:
            await connection.close()

    async def _worker(
        self,
        connection: Any,
        queue: Queue,
        ordered: bool,
        left: list[int],
        on_batch: OnBatch | None,
    ) -> None:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        inbox = _Inbox()
        for partition in range(queue.partitions):
            declared = await channel.declare_queue(_queue(queue, partition), passive=True)
            await declared.consume(inbox.put)
        while left[0] > 0:
            try:
                messages = await asyncio.wait_for(inbox.take(1000), 0.2)
            except TimeoutError:
                continue
            if on_batch is not None:
                on_batch([m.body for m in messages])
            if ordered:
                await messages[-1].ack(multiple=True)
            else:
                for message in messages:
                    await message.ack()
            left[0] -= len(messages)
        await channel.close()
