"""Redis Streams through redis-py's asyncio client (hiredis parser):
pipelined XADD, XREADGROUP + XACK.

A partition is one stream (`<queue>:<n>`). A publish is one pipeline of
XADDs (no MULTI); with `appendonly yes` and `appendfsync always` Redis
fsyncs the AOF before it answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from logq.bench.compare.system import Conn, OnBatch, PeerUnavailableError, Queue, System

DEFAULT_URL = "redis://127.0.0.1:26379"


def _stream(queue: Queue, partition: int) -> str:
    return f"{queue.name}:{partition}"


class RedisConn(Conn):
    def __init__(self, client: Any) -> None:
        self.client = client

    async def publish(self, queue: Queue, partition: int, values: Sequence[bytes]) -> None:
        stream = _stream(queue, partition)
        if len(values) == 1:
            await self.client.xadd(stream, {"v": values[0]})
            return
        pipe = self.client.pipeline(transaction=False)
        for value in values:
            pipe.xadd(stream, {"v": value})
        await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()


class RedisSystem(System):
    name = "redis"

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        self.rest_url = None
        self.admin: Any = None
        self.settings = "appendonly yes, appendfsync always; redis-py asyncio + hiredis"

    def _client(self) -> Any:
        import redis.asyncio  # noqa: PLC0415

        return redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=5)

    async def open(self) -> None:
        try:
            import redis.asyncio  # noqa: PLC0415
        except ImportError as error:
            raise PeerUnavailableError(
                "redis-py is not installed (pip install 'logq[bench]')"
            ) from error
        self.admin = self._client()
        try:
            await self.admin.ping()
            aof = await self.admin.config_get("append*")
        except (OSError, redis.RedisError) as error:
            await self.admin.aclose()
            self.admin = None
            raise PeerUnavailableError(f"no Redis at {self.url}: {error}") from error
        self.settings = (
            f"appendonly {aof.get('appendonly')}, appendfsync {aof.get('appendfsync')}; "
            "redis-py asyncio + hiredis; pipelined XADD; XREADGROUP + XACK"
        )

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.aclose()

    async def connect(self) -> Conn:
        client = self._client()
        await client.ping()
        return RedisConn(client)

    async def create(self, queue: Queue) -> None:
        pipe = self.admin.pipeline(transaction=False)
        for partition in range(queue.partitions):
            pipe.xgroup_create(_stream(queue, partition), "bench", id="0", mkstream=True)
        await pipe.execute()

    async def drop(self, queue: Queue) -> None:
        streams = [_stream(queue, p) for p in range(queue.partitions)]
        for start in range(0, len(streams), 500):
            await self.admin.delete(*streams[start : start + 500])

    async def consume(
        self, queue: Queue, count: int, *, ordered: bool, workers: int, on_batch: OnBatch | None
    ) -> None:
        left = [count]
        streams = {_stream(queue, p): ">" for p in range(queue.partitions)}
        await asyncio.gather(
            *(
                self._worker(streams, f"c{n}", left, on_batch)
                for n in range(1 if ordered else workers)
            )
        )

    async def _worker(
        self, streams: dict[str, str], name: str, left: list[int], on_batch: OnBatch | None
    ) -> None:
        client = self._client()
        try:
            while left[0] > 0:
                reply = await client.xreadgroup("bench", name, streams, count=1000, block=100)
                if not reply:
                    continue
                pipe = client.pipeline(transaction=False)
                for stream, entries in reply:
                    if not entries:
                        continue
                    if on_batch is not None:
                        on_batch([fields[b"v"] for _, fields in entries])
                    pipe.xack(stream, "bench", *[entry_id for entry_id, _ in entries])
                    left[0] -= len(entries)
                await pipe.execute()
        finally:
            await client.aclose()
