"""NATS JetStream (file storage) through nats-py.

A queue is one stream over the subjects `<queue>.<partition>`. A publish is
one asynchronous JetStream publish per message (`publish_async`, the
client's batching path), returning once every PubAck is in; a single
message uses `publish`, which waits for its PubAck. Consumers are durable
pull consumers fetching up to 1000: ordered takes one consumer with
AckPolicy.ALL (acking a batch's last message commits it), shared takes
competing fetchers on one AckPolicy.EXPLICIT consumer, acking each message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from logq.bench.compare.system import Conn, OnBatch, PeerUnavailableError, Queue, System

DEFAULT_URL = "nats://127.0.0.1:24222"


def _stream(queue: Queue) -> str:
    return queue.name.replace(".", "_")


class NatsConn(Conn):
    def __init__(self, client: Any) -> None:
        self.client = client
        self.js = client.jetstream(publish_async_max_pending=100_000)

    async def publish(self, queue: Queue, partition: int, values: Sequence[bytes]) -> None:
        subject = f"{_stream(queue)}.{partition}"
        if len(values) == 1:
            await self.js.publish(subject, values[0])
            return
        futures = [await self.js.publish_async(subject, value) for value in values]
        await asyncio.gather(*futures)

    async def close(self) -> None:
        await self.client.close()


class NatsSystem(System):
    name = "nats"

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        self.rest_url = None
        self.admin: Any = None
        self.settings = "JetStream file storage; nats-py"

    async def _client(self) -> Any:
        import nats  # noqa: PLC0415

        return await nats.connect(
            self.url, connect_timeout=5, max_reconnect_attempts=0, allow_reconnect=False
        )

    async def open(self) -> None:
        try:
            import nats  # noqa: F401, PLC0415
        except ImportError as error:
            raise PeerUnavailableError(
                "nats-py is not installed (pip install 'logq[bench]')"
            ) from error
        try:
            self.admin = await self._client()
            info = await self.admin.jetstream().account_info()
        except Exception as error:  # nats-py raises its own family, and OSError
            raise PeerUnavailableError(f"no NATS JetStream at {self.url}: {error}") from error
        version = self.admin.connected_server_version
        self.settings = (
            f"nats-server {version}, JetStream file storage "
            f"({info.limits.max_storage if info.limits else 'no'} storage limit), "
            "default sync (the server fsyncs on its own interval, not per PubAck); nats-py; "
            "publish_async batches, pull consumers"
        )

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.close()

    async def connect(self) -> Conn:
        return NatsConn(await self._client())

    async def create(self, queue: Queue) -> None:
        from nats.js.api import StorageType, StreamConfig  # noqa: PLC0415

        await self.admin.jetstream().add_stream(
            StreamConfig(
                name=_stream(queue), subjects=[f"{_stream(queue)}.*"], storage=StorageType.FILE
            )
        )

    async def drop(self, queue: Queue) -> None:
        await self.admin.jetstream().delete_stream(_stream(queue))

    async def consume(
        self, queue: Queue, count: int, *, ordered: bool, workers: int, on_batch: OnBatch | None
    ) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig  # noqa: PLC0415

        config = ConsumerConfig(
            durable_name="bench",
            ack_policy=AckPolicy.ALL if ordered else AckPolicy.EXPLICIT,
            max_ack_pending=100_000,
            max_waiting=1024,
        )
        await self.admin.jetstream().add_consumer(_stream(queue), config)
        left = [count]
        await asyncio.gather(
            *(
                self._worker(queue, ordered, left, on_batch)
                for _ in range(1 if ordered else workers)
            )
        )

    async def _worker(
        self, queue: Queue, ordered: bool, left: list[int], on_batch: OnBatch | None
    ) -> None:
        client = await self._client()
        try:
            subscription = await client.jetstream().pull_subscribe_bind(
                "bench", stream=_stream(queue)
            )
            while left[0] > 0:
                try:
                    messages = await subscription.fetch(1000, timeout=0.2)
                except TimeoutError:  # nats-py raises its own subclass, or asyncio's bare one
                    continue
                if on_batch is not None:
                    on_batch([m.data for m in messages])
                if ordered:
                    await messages[-1].ack()
                else:
                    for message in messages:
                        await message.ack()
                left[0] -= len(messages)
            await client.flush()
        finally:
            await client.close()
