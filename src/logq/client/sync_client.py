"""`Client`: the blocking Python client, with the same names as `AsyncClient`.

It runs an `AsyncClient` on an event loop in a background thread and waits
for each call, so there is one implementation of the wire behaviour
(batching, reconnects, acks in ranges) for both.

    with Client() as client:
        client.publish("orders", b"hello")
        for msg in client.consume("orders", "workers"):
            print(msg.value)
            msg.ack()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from logq.client.async_client import (
    DELIVERY_TIMEOUT_DEFAULT_S,
    REQUEST_TIMEOUT_DEFAULT_S,
    AsyncClient,
    Duration,
    Time,
)
from logq.client.connection import Connector
from logq.client.consumer import AsyncConsumer
from logq.client.messages import AsyncMessage, Message
from logq.client.producer import AsyncProducer
from logq.client.records import MessageData, PublishResult

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="logq-client", daemon=True
        )
        self.thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.submit(coroutine).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


def _sync_message(runner: _LoopThread, inner: AsyncMessage) -> Message:
    def call(action: Callable[[], Awaitable[Any]]) -> concurrent.futures.Future[Any]:
        async def run() -> Any:
            return await action()

        return runner.submit(run())

    return Message(inner, call)


class Producer:
    """Blocking face of `AsyncProducer`: `send` returns a concurrent future."""

    def __init__(self, runner: _LoopThread, producer: AsyncProducer) -> None:
        self._runner = runner
        self._producer = producer

    def send(
        self,
        topic: str,
        value: bytes | str | None,
        *,
        key: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        priority: str = "normal",
        partition: int | None = None,
        ttl: str | int | timedelta | None = None,
        delay: str | int | timedelta | None = None,
        deliver_at: datetime | int | str | None = None,
        dedup_id: str | None = None,
        delivery_timeout_s: float | None = None,
    ) -> concurrent.futures.Future[PublishResult]:
        """Queue one message; returns once it is queued (waiting while the
        producer's buffer is full), with a future of its result."""

        async def queue() -> asyncio.Future[PublishResult]:
            return await self._producer.send(
                topic,
                value,
                key=key,
                headers=headers,
                priority=priority,
                partition=partition,
                ttl=ttl,
                delay=delay,
                deliver_at=deliver_at,
                dedup_id=dedup_id,
                delivery_timeout_s=delivery_timeout_s,
            )

        queued = self._runner.run(queue())

        async def result() -> PublishResult:
            return await queued

        return self._runner.submit(result())

    def flush(self) -> None:
        self._runner.run(self._producer.flush())

    def close(self) -> None:
        self._runner.run(self._producer.close())

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumer:
    """Blocking iterator over an `AsyncConsumer`."""

    def __init__(self, runner: _LoopThread, consumer: AsyncConsumer) -> None:
        self._runner = runner
        self._consumer = consumer

    def __iter__(self) -> Iterator[Message]:
        while True:
            message = self.next()
            if message is None:
                return
            yield message

    def next_batch(self, max_messages: int = 1000, timeout_s: float | None = None) -> list[Message]:
        """Up to `max_messages` that have arrived, waiting up to `timeout_s` for the first."""
        batch = self._runner.run(self._consumer.next_batch(max_messages, timeout_s))
        return [_sync_message(self._runner, inner) for inner in batch]

    def next(self, timeout_s: float | None = None) -> Message | None:
        inner = self._runner.run(self._consumer.next(timeout_s))
        return None if inner is None else _sync_message(self._runner, inner)

    def close(self) -> None:
        self._runner.run(self._consumer.close())

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    def __init__(
        self,
        server: str | None = None,
        *,
        request_timeout_s: float = REQUEST_TIMEOUT_DEFAULT_S,
        delivery_timeout_s: float = DELIVERY_TIMEOUT_DEFAULT_S,
        connect_timeout_s: float = 5.0,
        connector: Connector | None = None,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | bool | None = None,
    ) -> None:
        """`server` is "host:port" (default LOGQ_SERVER, else 127.0.0.1:7070);
        signing in, TLS and timeouts as AsyncClient takes them."""
        self._async = AsyncClient(
            server,
            request_timeout_s=request_timeout_s,
            delivery_timeout_s=delivery_timeout_s,
            connect_timeout_s=connect_timeout_s,
            connector=connector,
            token=token,
            username=username,
            password=password,
            tls=tls,
        )
        self._runner = _LoopThread()  # after the checks of the address and settings
        self.host, self.port = self._async.host, self._async.port

    def __enter__(self) -> Client:
        self._runner.run(self._async.connect())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._runner.run(self._async.close())
        finally:
            self._runner.stop()

    def call(self, *args: bytes | str | int, timeout_s: float | None = None) -> Any:
        """Send any native command (docs/protocol.md) and return its reply."""
        return self._runner.run(self._async.call(*args, timeout_s=timeout_s))

    # topics
    def create_topic(self, name: str, **options: Any) -> dict[str, Any]:
        return self._runner.run(self._async.create_topic(name, **options))

    def list_topics(self) -> list[dict[str, Any]]:
        return self._runner.run(self._async.list_topics())

    def describe_topic(self, name: str) -> dict[str, Any]:
        return self._runner.run(self._async.describe_topic(name))

    def alter_topic(self, name: str, **options: Any) -> dict[str, Any]:
        return self._runner.run(self._async.alter_topic(name, **options))

    def delete_topic(self, name: str) -> None:
        self._runner.run(self._async.delete_topic(name))

    # publishing
    def producer(self, **options: Any) -> Producer:
        return Producer(self._runner, self._async.producer(**options))

    def publish(self, topic: str, value: bytes | str | None, **options: Any) -> PublishResult:
        return self._runner.run(self._async.publish(topic, value, **options))

    def publish_many(
        self, topic: str, messages: Iterable[Mapping[str, Any] | bytes | str]
    ) -> list[PublishResult]:
        return self._runner.run(self._async.publish_many(topic, list(messages)))

    # groups
    def put_group(self, topic: str, group: str, **options: Any) -> dict[str, Any]:
        return self._runner.run(self._async.put_group(topic, group, **options))

    def describe_group(self, topic: str, group: str) -> dict[str, Any]:
        return self._runner.run(self._async.describe_group(topic, group))

    def list_groups(self) -> list[dict[str, Any]]:
        return self._runner.run(self._async.list_groups())

    def receive(self, topic: str, group: str, **options: Any) -> list[Message]:
        received = self._runner.run(self._async.receive(topic, group, **options))
        return [_sync_message(self._runner, inner) for inner in received]

    def replay(self, topic: str, group: str, **options: Any) -> dict[str, Any]:
        """See AsyncClient.replay."""
        return self._runner.run(self._async.replay(topic, group, **options))

    def join(
        self, topic: str, group: str, consumer: str, *, session_timeout: Duration | None = None
    ) -> dict[str, Any]:
        return self._runner.run(
            self._async.join(topic, group, consumer, session_timeout=session_timeout)
        )

    def heartbeat(self, topic: str, group: str, consumer: str) -> dict[str, Any]:
        return self._runner.run(self._async.heartbeat(topic, group, consumer))

    def leave(self, topic: str, group: str, consumer: str) -> bool:
        return self._runner.run(self._async.leave(topic, group, consumer))

    def consume(self, topic: str, group: str, **options: Any) -> Consumer:
        return Consumer(self._runner, self._async.consume(topic, group, **options))

    def ack(
        self, topic: str, group: str, ids: Iterable[str], *, timeout_s: float | None = None
    ) -> int:
        return self._runner.run(self._async.ack(topic, group, list(ids), timeout_s=timeout_s))

    def nack(
        self,
        topic: str,
        group: str,
        ids: Iterable[str],
        *,
        delay: Duration | None = None,
        timeout_s: float | None = None,
    ) -> int:
        return self._runner.run(
            self._async.nack(topic, group, list(ids), delay=delay, timeout_s=timeout_s)
        )

    def reject(
        self,
        topic: str,
        group: str,
        ids: Iterable[str],
        *,
        reason: str = "rejected",
        timeout_s: float | None = None,
    ) -> int:
        return self._runner.run(
            self._async.reject(topic, group, list(ids), reason=reason, timeout_s=timeout_s)
        )

    def extend(
        self,
        topic: str,
        group: str,
        ids: Iterable[str],
        *,
        visibility_timeout: Duration | None = None,
    ) -> int:
        return self._runner.run(
            self._async.extend(topic, group, list(ids), visibility_timeout=visibility_timeout)
        )

    def seek(self, topic: str, group: str, to: str | Mapping[str, int | str]) -> dict[int, int]:
        return self._runner.run(self._async.seek(topic, group, to))

    # reading and inspection
    def peek(
        self,
        topic: str,
        *,
        partition: int | None = None,
        offset: int | None = None,
        from_time: Time | None = None,
        to_time: Time | None = None,
        limit: int = 100,
    ) -> list[MessageData]:
        return self._runner.run(
            self._async.peek(
                topic,
                partition=partition,
                offset=offset,
                from_time=from_time,
                to_time=to_time,
                limit=limit,
            )
        )

    def get_message(self, message_id: str) -> MessageData:
        return self._runner.run(self._async.get_message(message_id))

    def trace(self, message_id: str) -> dict[str, Any]:
        return self._runner.run(self._async.trace(message_id))

    def dlq(self, topic: str, *, limit: int = 100) -> list[MessageData]:
        return self._runner.run(self._async.dlq(topic, limit=limit))

    def redrive(self, topic: str, ids: Iterable[str] | None = None) -> int:
        return self._runner.run(self._async.redrive(topic, list(ids) if ids is not None else None))

    def purge_dlq(self, topic: str, ids: Iterable[str] | None = None) -> int:
        return self._runner.run(
            self._async.purge_dlq(topic, list(ids) if ids is not None else None)
        )

    def requeue_dlq(self, topic: str, ids: Iterable[str] | None = None) -> int:
        return self._runner.run(
            self._async.requeue_dlq(topic, list(ids) if ids is not None else None)
        )

    def stats(self) -> dict[str, Any]:
        return self._runner.run(self._async.stats())

    def ping(self, *, timeout_s: float | None = None) -> bool:
        return self._runner.run(self._async.ping(timeout_s=timeout_s))
