"""Settling received messages: acks gathered into ranges, the rest sent as asked.

Every `ack()` made during one turn of the event loop goes out as one
`ACKR` of offset ranges per group, so acknowledging a thousand messages
costs one request; while one ACKR is out, the next acks wait and go
together in the next one. nack, reject and extend are rarer and go at once.

Each settlement names the delivery it settles by the message's lease token
(ACKR groups its ranges by token; the others send receipts `<id>@<lease>`),
so a message whose lease ended and went to another consumer is not touched:
the broker answers STALE and the settlement raises StaleDeliveryError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from logq.client.records import MessageData, as_text
from logq.errors import StaleDeliveryError

if TYPE_CHECKING:
    from logq.client.async_client import AsyncClient


def offset_ranges(offsets: list[int]) -> list[tuple[int, int]]:
    """Sorted offsets as half-open runs [start, end)."""
    runs: list[tuple[int, int]] = []
    for offset in sorted(set(offsets)):
        if runs and runs[-1][1] == offset:
            runs[-1] = (runs[-1][0], offset + 1)
        else:
            runs.append((offset, offset + 1))
    return runs


def settled_count(reply: Any) -> int:
    """A settlement's count; StaleDeliveryError for the reply that names stale
    receipts next to the count of what the rest did (a map; docs/protocol.md)."""
    if isinstance(reply, int):
        return reply
    fields = as_text(reply)
    if isinstance(fields, list):  # RESP2: a flat array of names and values
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    stale = [str(receipt) for receipt in fields["stale"]]
    count = int(fields["count"])
    raise StaleDeliveryError(
        f"{len(stale)} deliveries named are no longer current (the others, {count},"
        f" were settled): {' '.join(stale[:10])}",
        stale,
        count,
    )


class Settler:
    def __init__(self, client: AsyncClient, topic: str, group: str) -> None:
        self.client = client
        self.topic = topic
        self.group = group
        self._acks: dict[tuple[int, int], list[int]] = {}  # (partition, lease) -> offsets
        self._futures: list[asyncio.Future[Any]] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()  # owned: kept until done

    def ack(self, message: MessageData) -> asyncio.Future[Any]:
        """Queue the ack; the future (shared by every ack of this loop turn)
        settles when the broker has recorded them."""
        key = (message.partition, message.lease)
        offsets = self._acks.get(key)
        if offsets is None:
            offsets = self._acks[key] = []
        offsets.append(message.offset)
        if not self._scheduled:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            self._futures.append(loop.create_future())
            loop.call_soon(self._send_acks)
        return self._futures[-1]

    def ack_all(self, messages: Iterable[MessageData]) -> asyncio.Future[Any]:
        """Ack many messages at once (as a Kafka consumer commits a poll): the
        same as `ack()` on each, at a fraction of the cost per message."""
        acks = self._acks
        for message in messages:
            key = (message.partition, message.lease)
            offsets = acks.get(key)
            if offsets is None:
                offsets = acks[key] = []
            offsets.append(message.offset)
        loop = asyncio.get_running_loop()
        if not self._scheduled:
            self._scheduled = True
            self._futures.append(loop.create_future())
            loop.call_soon(self._send_acks)
        return self._futures[-1]

    def _send_acks(self) -> None:
        self._scheduled = False
        if self._sending:
            return  # the ACKR in flight sends these when its reply comes
        acks, futures = self._acks, self._futures
        self._acks, self._futures = {}, []
        if acks:
            task = asyncio.get_running_loop().create_task(self._ack_ranges(acks, futures))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _ack_ranges(
        self, acks: dict[tuple[int, int], list[int]], futures: list[asyncio.Future[Any]]
    ) -> None:
        """One ACKR at a time: acks made while one is out go together in the
        next, so a busy consumer sends (and the broker fsyncs) one per round trip."""
        while acks:
            args: list[bytes | str | int] = ["ACKR", self.topic, self.group]
            lease = 0
            for (partition, token), offsets in sorted(acks.items(), key=lambda item: item[0][1]):
                if token != lease:
                    args += ["LEASE", token]
                    lease = token
                for start, end in offset_ranges(offsets):
                    args += [partition, start, end]
            try:
                settled = settled_count(await self.client.call(*args))
            except Exception as error:
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            else:
                for future in futures:
                    if not future.done():
                        future.set_result(settled)
            acks, futures = self._acks, self._futures
            self._acks, self._futures = {}, []

    async def flush(self) -> None:
        """Send the acks made so far and wait for them."""
        futures = list(self._futures)
        self._send_acks()
        if futures:
            await asyncio.gather(*futures, return_exceptions=True)

    async def nack(self, message: MessageData, delay: str | int | None) -> Any:
        args: list[bytes | str | int] = ["NACK", self.topic, self.group]
        if delay is not None:
            args += ["DELAY", delay]
        return await self.client.call(*args, message.receipt)

    async def reject(self, message: MessageData, reason: str) -> Any:
        return await self.client.call(
            "REJECT", self.topic, self.group, "REASON", reason, message.receipt
        )

    async def extend(self, message: MessageData, visibility_timeout: str | int | None) -> Any:
        args: list[bytes | str | int] = ["EXTEND", self.topic, self.group]
        if visibility_timeout is not None:
            args += ["VISIBILITY_TIMEOUT", visibility_timeout]
        return await self.client.call(*args, message.receipt)
