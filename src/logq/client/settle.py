"""Settling received messages: acks gathered into ranges, the rest sent as asked.

Every `ack()` made during one turn of the event loop goes out as one
`ACKR` of offset ranges per group, so acknowledging a thousand messages
costs one request; while one ACKR is out, the next acks wait and go
together in the next one. nack, reject and extend are rarer and go at once.

An ack of a received message marks it in its batch's ack bitmap and, the
first time, lists the batch here; sending turns each listed batch's marks
into ranges (a few C-level searches per batch), so an ack costs a byte
store, not a list append and a share of a sort.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from logq.client.messages import AsyncMessage, DeliveredBatch
from logq.client.records import MessageData

if TYPE_CHECKING:
    from logq.client.async_client import AsyncClient


def merged_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Half-open runs [start, end), sorted, with touching or overlapping runs joined."""
    runs: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if runs and runs[-1][1] >= start:
            if end > runs[-1][1]:
                runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


def offset_ranges(offsets: list[int]) -> list[tuple[int, int]]:
    """Sorted offsets as half-open runs [start, end)."""
    runs: list[tuple[int, int]] = []
    for offset in sorted(set(offsets)):
        if runs and runs[-1][1] == offset:
            runs[-1] = (runs[-1][0], offset + 1)
        else:
            runs.append((offset, offset + 1))
    return runs


class Settler:
    def __init__(self, client: AsyncClient, topic: str, group: str) -> None:
        self.client = client
        self.topic = topic
        self.group = group
        self._acks: dict[int, list[int]] = {}  # acked offsets of messages without a batch
        self._batches: list[DeliveredBatch] = []  # batches with marked acks not yet sent
        self._futures: list[asyncio.Future[Any]] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()  # owned: kept until done

    def ack_at(self, batch: DeliveredBatch, index: int) -> asyncio.Future[Any]:
        """Queue the ack of record `index` of `batch`; the future (shared by
        every ack of this loop turn) settles when the broker has recorded them."""
        batch.marks[index] = 1
        if batch.pending is None:
            self._batches.append(batch)
            batch.pending = self._pending()
        return batch.pending

    def ack(self, message: MessageData) -> asyncio.Future[Any]:
        """Queue the ack of one message, as `ack_at` does."""
        if isinstance(message, AsyncMessage):
            return message.ack()
        offsets = self._acks.get(message.partition)
        if offsets is None:
            offsets = self._acks[message.partition] = []
        offsets.append(message.offset)
        return self._pending()

    def ack_all(self, messages: Iterable[MessageData]) -> asyncio.Future[Any]:
        """Ack many messages at once (as a Kafka consumer commits a poll): the
        same as `ack()` on each, at a fraction of the cost per message."""
        batches = self._batches
        pending = self._pending()
        last: DeliveredBatch | None = None
        marks = bytearray()
        for message in messages:
            if not isinstance(message, AsyncMessage):
                self.ack(message)
                continue
            batch = message._batch
            if batch is not last:
                last, marks = batch, batch.marks
                if batch.pending is None:
                    batch.pending = pending
                    batches.append(batch)
            marks[message._index] = 1
        return pending

    def _pending(self) -> asyncio.Future[Any]:
        """The future of the acks queued now, sending scheduled for the loop turn's end."""
        if not self._scheduled:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            self._futures.append(loop.create_future())
            loop.call_soon(self._send_acks)
        return self._futures[-1]

    def _take(self) -> tuple[dict[int, list[tuple[int, int]]], list[asyncio.Future[Any]]]:
        """The queued acks as ranges per partition, with their futures; none queued after."""
        ranges: dict[int, list[tuple[int, int]]] = {}
        for batch in self._batches:
            ranges.setdefault(batch.partition, []).extend(batch.take_ranges())
        for partition, offsets in self._acks.items():
            ranges.setdefault(partition, []).extend(offset_ranges(offsets))
        futures = self._futures
        self._acks, self._batches, self._futures = {}, [], []
        return {p: merged_ranges(runs) for p, runs in ranges.items() if runs}, futures

    def _send_acks(self) -> None:
        self._scheduled = False
        if self._sending:
            return  # the ACKR in flight sends these when its reply comes
        acks, futures = self._take()
        if acks or futures:
            task = asyncio.get_running_loop().create_task(self._ack_ranges(acks, futures))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _ack_ranges(
        self, acks: dict[int, list[tuple[int, int]]], futures: list[asyncio.Future[Any]]
    ) -> None:
        """One ACKR at a time: acks made while one is out go together in the
        next, so a busy consumer sends (and the broker fsyncs) one per round trip."""
        while acks or futures:
            try:
                settled: Any = 0
                if acks:
                    args: list[bytes | str | int] = ["ACKR", self.topic, self.group]
                    for partition, runs in acks.items():
                        for start, end in runs:
                            args += [partition, start, end]
                    settled = await self.client.call(*args)
            except Exception as error:
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            else:
                for future in futures:
                    if not future.done():
                        future.set_result(settled)
            acks, futures = self._take()

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
        return await self.client.call(*args, message.id)

    async def reject(self, message: MessageData, reason: str) -> Any:
        return await self.client.call(
            "REJECT", self.topic, self.group, "REASON", reason, message.id
        )

    async def extend(self, message: MessageData, visibility_timeout: str | int | None) -> Any:
        args: list[bytes | str | int] = ["EXTEND", self.topic, self.group]
        if visibility_timeout is not None:
            args += ["VISIBILITY_TIMEOUT", visibility_timeout]
        return await self.client.call(*args, message.id)
