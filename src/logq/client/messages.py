"""Received messages that can settle themselves: `msg.ack()`, `nack()`, `reject()`, `extend()`.

A settlement is sent whether or not anyone waits for it: an ack goes out
with every other ack of the same event-loop turn as one `ACKR`, and a nack,
reject or extend at once. It is durable once the broker answers (with
`fsync: always`, after its fsync), which is when the returned future
resolves. `AsyncMessage` methods return awaitables, `Message` (for the
blocking `Client`) a concurrent future for `ack()` and the answer for the
rest. The client's `flush()` waits for every settlement made so far, and
its `close()` does before it returns, raising `UnconfirmedError` naming any
the broker refused or did not answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from logq.client.records import MessageData, batches_in
from logq.lanes import Lanes
from logq.log.batch import DecodedBatch, decode_headers

Submit = Callable[[Callable[[], Awaitable[Any]]], concurrent.futures.Future[Any]]


class SettlesMessages(Protocol):
    """What a message calls to settle itself (a consumer or the client)."""

    def ack(self, message: MessageData) -> asyncio.Future[Any]: ...
    def nack(self, message: MessageData, delay: str | int | None) -> Awaitable[Any]: ...
    def reject(self, message: MessageData, reason: str) -> Awaitable[Any]: ...
    def extend(
        self, message: MessageData, visibility_timeout: str | int | None
    ) -> Awaitable[Any]: ...


class AsyncMessage(MessageData):
    """A message received by a group through `AsyncClient`.

    Built per message on the consumer's hot path, so it holds only a
    reference to its decoded batch and its index there: key, value, headers
    and timestamp are read from the batch when asked."""

    __slots__ = ("_batch", "_index", "_settler", "group")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        batch: DecodedBatch,
        index: int,
        priority: str,
        attempt: int,
        group: str,
        settler: SettlesMessages | None,
        lease: int = 0,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self._batch = batch
        self._index = index
        self.priority = priority
        self.attempt = attempt
        self.lease = lease
        self.group = group
        self._settler = settler
        self._headers = None  # type: ignore[assignment]  # decoded on first use

    @property
    def key(self) -> bytes | None:
        return self._batch.keys[self._index]

    @property
    def value(self) -> bytes | None:
        return self._batch.values[self._index]

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            block = self._batch.header_blocks[self._index]
            self._headers = decode_headers(block) if block else {}
        return self._headers

    @property
    def timestamp_ms(self) -> int:
        return self._batch.timestamps[self._index]

    def _require(self) -> SettlesMessages:
        if self._settler is None:
            raise RuntimeError("this message was read without a group: there is nothing to settle")
        return self._settler

    def ack(self) -> asyncio.Future[Any]:
        """Done with it: never deliver it to this group again. Sent at the
        end of this loop turn with the turn's other acks, awaited or not; the
        future resolves once the broker has it durably."""
        settler = self._settler
        if settler is None:
            return self._require().ack(self)  # raises
        return settler.ack(self)

    def nack(self, delay: str | int | None = None) -> Awaitable[Any]:
        """Not now: deliver it again after `delay` (default at once). Sent at
        once, awaited or not; await it for the broker's answer."""
        return self._require().nack(self, delay)

    def reject(self, reason: str = "rejected") -> Awaitable[Any]:
        """Never: send it to the dead-letter topic with `reason` (sent at once)."""
        return self._require().reject(self, reason)

    def extend(self, visibility_timeout: str | int | None = None) -> Awaitable[Any]:
        """Still working on it: renew the lease (sent at once)."""
        return self._require().extend(self, visibility_timeout)


class Message(MessageData):
    """A message received through the blocking `Client`."""

    __slots__ = ("_inner", "_submit", "group")

    def __init__(self, inner: AsyncMessage, submit: Submit) -> None:
        MessageData.__init__(
            self,
            inner.topic,
            inner.partition,
            inner.offset,
            inner.key,
            inner.value,
            inner.headers,
            inner.priority,
            inner.timestamp_ms,
            inner.attempt,
            inner.lease,
        )
        self.group = inner.group
        self._inner = inner
        self._submit = submit

    def _do(
        self, action: Callable[[AsyncMessage], Awaitable[Any]]
    ) -> concurrent.futures.Future[Any]:
        inner = self._inner

        async def run() -> Any:
            return await action(inner)

        return self._submit(run)

    def ack(self) -> concurrent.futures.Future[Any]:
        """Done with it. Returns at once: the client's loop thread sends the
        ack within its next turn, in one ACKR with the acks made meanwhile.
        It is durable when the broker answers, and the future resolves then:
        `msg.ack().result()` waits for this one, `client.flush()` for all,
        and `client.close()` waits for all before it returns."""
        return self._do(AsyncMessage.ack)

    def nack(self, delay: str | int | None = None) -> Any:
        """Not now: deliver it again after `delay`; waits for the broker."""
        return self._do(lambda m: m.nack(delay)).result()

    def reject(self, reason: str = "rejected") -> Any:
        """Never: dead-letter it with `reason`; waits for the broker."""
        return self._do(lambda m: m.reject(reason)).result()

    def extend(self, visibility_timeout: str | int | None = None) -> Any:
        """Still working on it: renew the lease; waits for the broker."""
        return self._do(lambda m: m.extend(visibility_timeout)).result()


def received(
    topic: str,
    partition: int,
    start: int,
    end: int,
    attempt: int,
    data: bytes,
    group: str,
    settler: SettlesMessages | None,
    lanes: Lanes,
    lease: int = 0,
) -> list[AsyncMessage]:
    """The messages of a delivery [start, end) of fetched batches, for `group`,
    handed out under lease token `lease`."""
    messages: list[AsyncMessage] = []
    for batch, first, last in batches_in(data, start, end):
        base = batch.header.base_offset
        lane = lanes.name_of(batch.header.lane)
        messages += [
            AsyncMessage(
                topic, partition, base + index, batch, index, lane, attempt, group, settler, lease
            )
            for index in range(first, last)
        ]
    return messages
