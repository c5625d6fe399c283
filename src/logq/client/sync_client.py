"""`Client`: the blocking Python client, with the same names as `AsyncClient`.

It runs an `AsyncClient` on an event loop in a background thread and waits
for each call, so there is one implementation of the wire behaviour
(batching, reconnects, acks in ranges) for both.

    from logq import Client

    with Client() as client:                      # LOGQ_SERVER, else 127.0.0.1:7070
        client.create_topic("orders", exist_ok=True)
        client.publish("orders", b"hello")
        for msg in client.consume("orders", "workers", limit=1):
            print(msg.value)
            msg.ack()                             # confirmed before the block ends

`msg.ack()` returns at once; the loop thread sends it within its next turn,
together with the acks made meanwhile, and it is durable when the broker
answers: `msg.ack().result()` waits for that, `client.flush()` waits for
every settlement and publish so far, and `client.close()` (the end of the
`with` block) waits for all of them, closing the consumers and producers
the client handed out, or raises `UnconfirmedError` naming what was not
confirmed. A client never closed is closed when the interpreter exits.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from logq.client.async_client import (
    CLOSE_TIMEOUT_S,
    DELIVERY_TIMEOUT_DEFAULT_S,
    REQUEST_TIMEOUT_DEFAULT_S,
    AsyncClient,
    Duration,
    Time,
)
from logq.client.connection import Connector
from logq.client.consumer import AsyncConsumer
from logq.client.loop_thread import LoopThread
from logq.client.messages import AsyncMessage, Message, Submit, ThreadAcks
from logq.client.producer import AsyncProducer
from logq.client.records import MessageData, PublishResult

T = TypeVar("T")


async def _made(make: Callable[[], T]) -> T:
    """Run `make` on the loop thread (what the client hands out is registered there)."""
    return make()


def _submitter(runner: LoopThread) -> Submit:
    """How a `Message` runs a settlement on the loop thread."""

    def call(action: Callable[[], Awaitable[Any]]) -> concurrent.futures.Future[Any]:
        async def run() -> Any:
            return await action()

        return runner.submit(run())

    return call


class Producer:
    """Blocking face of `AsyncProducer`: `send` returns a concurrent future."""

    def __init__(self, runner: LoopThread, producer: AsyncProducer) -> None:
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

        queued: asyncio.Future[PublishResult] = self._runner.run(queue())

        async def result() -> PublishResult:
            return await queued

        return self._runner.submit(result())

    def flush(self) -> None:
        self._runner.run(self._producer.flush())

    def close(self) -> None:
        """Send what is queued and wait until it is stored (done already if
        the client closed first)."""
        if not self._runner.stopped:
            self._runner.run(self._producer.close())

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumer:
    """Blocking iterator over an `AsyncConsumer`."""

    def __init__(
        self, runner: LoopThread, consumer: AsyncConsumer, submit: Submit, acks: ThreadAcks
    ) -> None:
        self._runner = runner
        self._consumer = consumer
        self._submit = submit
        self._acks = acks

    def __iter__(self) -> Iterator[Message]:
        """The plain `for msg in consumer` loop: one wait on the loop thread
        per chunk of a delivered batch (`AsyncConsumer.next_chunk`), whose
        records are handed out here, on the caller's thread, the cursor
        moved before each as the async iterator does; `msg.ack()` marks them
        for the loop thread without waiting (see ThreadAcks)."""
        runner, consumer = self._runner, self._consumer
        submit, acks, auto_ack = self._submit, self._acks, consumer.auto_ack
        new = object.__new__
        now_ms, expire = consumer.client.now_ms, consumer.settler.expire
        while not runner.stopped and (chunk := runner.run(consumer.next_chunk())) is not None:
            batch, stop = chunk
            while (index := batch.cursor) < stop:
                expires_ms = batch.expires_ms  # None: nothing in this batch expires
                if (
                    expires_ms is not None
                    and (now := now_ms()) >= expires_ms
                    and (skipped := batch.skip_expired(stop, now))
                ):
                    # released as expired by the loop thread, never handed out
                    runner.loop.call_soon_threadsafe(expire, batch, index, index + skipped)
                    continue
                batch.cursor = index + 1
                inner = new(AsyncMessage)
                inner._batch, inner._index = batch, index
                message = new(Message)
                message._inner, message._submit, message._acks = inner, submit, acks
                if auto_ack:
                    message.ack()
                yield message

    def next_batch(self, max_messages: int = 1000, timeout_s: float | None = None) -> list[Message]:
        """Up to `max_messages` that have arrived, waiting up to `timeout_s` for the first."""
        batch = self._runner.run(self._consumer.next_batch(max_messages, timeout_s))
        return [Message(inner, self._submit, self._acks) for inner in batch]

    def next(self, timeout_s: float | None = None) -> Message | None:
        inner = self._runner.run(self._consumer.next(timeout_s))
        return None if inner is None else Message(inner, self._submit, self._acks)

    def close(self) -> None:
        """Leave the group and wait for this consumer's acks (see
        AsyncConsumer.close; done already if the client closed first)."""
        if not self._runner.stopped:
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
        clock: Callable[[], int] | None = None,
    ) -> None:
        """`server` is "host:port" (default LOGQ_SERVER, else 127.0.0.1:7070);
        signing in, TLS, timeouts and the clock of TTL checks as AsyncClient
        takes them."""
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
            clock=clock,
        )
        self._runner = LoopThread("logq-client")  # after the checks of the address and settings
        self._submit = _submitter(self._runner)
        self._acks = ThreadAcks(self._runner.loop)
        self.host, self.port = self._async.host, self._async.port
        # A client never closed is closed when the interpreter exits, so its
        # last acks are sent then too (not in a forked child: the loop
        # thread stayed with the parent).
        self._pid = os.getpid()
        atexit.register(self._close_at_exit)

    def __enter__(self) -> Client:
        self._runner.run(self._async.connect())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Wait up to `timeout_s` until the broker has confirmed every
        settlement and publish made through this client, closing the
        consumers and producers it handed out, then close (see
        `AsyncClient.close`; raises `UnconfirmedError` naming what was not
        confirmed). Closing again does nothing."""
        if self._runner.stopped:
            return
        atexit.unregister(self._close_at_exit)
        try:
            self._runner.run(self._async.close(timeout_s))
        finally:
            self._runner.stop()

    def _close_at_exit(self) -> None:
        if os.getpid() == self._pid and self._runner.thread.is_alive():
            self.close()

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until the broker has confirmed every settlement (`msg.ack()`
        included) and every publish queued in a producer so far; raises
        `UnconfirmedError` naming those it refused or did not answer."""
        self._runner.run(self._async.flush(timeout_s))

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
        """A batching producer (see AsyncClient.producer); `with` flushes it."""
        made = self._runner.run(_made(lambda: self._async.producer(**options)))
        return Producer(self._runner, made)

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
        return [Message(inner, self._submit, self._acks) for inner in received]

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
        """An iterator of pushed messages (see AsyncClient.consume); closed,
        its acks confirmed, when it is closed or the client closes."""
        made = self._runner.run(_made(lambda: self._async.consume(topic, group, **options)))
        return Consumer(self._runner, made, self._submit, self._acks)

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
        include_deleted: bool = False,
    ) -> list[MessageData]:
        return self._runner.run(
            self._async.peek(
                topic,
                partition=partition,
                offset=offset,
                from_time=from_time,
                to_time=to_time,
                limit=limit,
                include_deleted=include_deleted,
            )
        )

    def archive_status(self, topic: str | None = None) -> dict[str, Any]:
        return self._runner.run(self._async.archive_status(topic))

    def archived_topics(self) -> dict[str, list[int]]:
        return self._runner.run(self._async.archived_topics())

    def restore_topic(self, topic: str) -> dict[str, Any]:
        return self._runner.run(self._async.restore_topic(topic))

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
