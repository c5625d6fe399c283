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

A consumer makes one message object per record, so that object is as
small as it can be: a reference to its `DeliveredBatch` and its index
there. The batch's columns are read once when it arrives; key, value,
headers and timestamp are cut out of them only when asked, and the fields
every message of a batch shares (topic, partition, attempt, group,
priority) are the batch's. An ack marks the record in its batch's ack
bitmap, which the settler turns into ranges.

A message is never handed out once it has expired (docs/protocol.md, TTL).
Each batch knows the earliest instant any of its leased records expires
(`expires_ms`: its oldest timestamp plus the topic's TTL, which the
delivery carries, or the earliest `logq-expires-at` header of a batch
marked as holding them; None when nothing in it expires), so the check
where a record is handed out costs one attribute test for a batch without
expiries and one clock reading for the others. Only past that instant are
records looked at one by one; those that expired are skipped and released
to the broker as expired (`Settler.expire`), a run of them in one request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from logq.client.records import MessageData, batches_in
from logq.lanes import Lanes
from logq.log.batch import EXPIRING, BatchColumns

Submit = Callable[[Callable[[], Awaitable[Any]]], concurrent.futures.Future[Any]]
HEADER_EXPIRES_AT = "logq-expires-at"  # a record's own expiry, epoch ms (docs/format.md)


class SettlesMessages(Protocol):
    """What a message calls to settle itself (a consumer or the client)."""

    def ack_at(self, batch: DeliveredBatch, index: int) -> asyncio.Future[Any]: ...
    def mark(self, batch: DeliveredBatch, marks: bytearray) -> asyncio.Future[Any]: ...
    def nack(self, message: MessageData, delay: str | int | None) -> Awaitable[Any]: ...
    def reject(self, message: MessageData, reason: str) -> Awaitable[Any]: ...
    def extend(
        self, message: MessageData, visibility_timeout: str | int | None
    ) -> Awaitable[Any]: ...
    def expire(self, batch: DeliveredBatch, start: int, stop: int) -> None: ...


class DeliveredBatch(BatchColumns):
    """One fetched batch of a delivery, read as columns.

    Holds what its messages share (topic, partition, attempt, the lease
    token of its delivery, group, the settler, the priority lane), the records [start, stop) the delivery
    leases, how far they have been handed out (`cursor`; the first
    `counted` of them counted for credit and limits), and the acks not yet
    sent: `marks[i]` is 1 once record i is acked, so gathering a batch's
    acks into ranges costs a few C-level searches, not a sort of offsets."""

    __slots__ = (
        "_own_expiries",
        "attempt",
        "base_offset",
        "counted",
        "cursor",
        "expires_ms",
        "group",
        "lease",
        "marks",
        "partition",
        "pending",
        "priority",
        "settler",
        "start",
        "stop",
        "topic",
        "ttl_ms",
    )

    def __init__(
        self,
        data: bytes,
        position: int,
        topic: str,
        partition: int,
        start: int,
        stop: int,
        attempt: int,
        group: str,
        settler: SettlesMessages | None,
        lanes: Lanes,
        lease: int = 0,
        ttl_ms: int = 0,
    ) -> None:
        super().__init__(data, position)
        assert 0 <= start <= stop <= self.count
        self.topic = topic
        self.partition = partition
        self.base_offset = self.header.base_offset
        self.priority = lanes.name_of(self.header.lane)
        self.attempt = attempt
        self.lease = lease
        self.group = group
        self.settler = settler
        self.start = self.cursor = self.counted = start
        self.stop = stop
        self.marks = bytearray(self.count)
        # While acks marked here wait to be sent: the future they settle.
        self.pending: asyncio.Future[Any] | None = None
        self.ttl_ms = ttl_ms
        self._own_expiries: list[int | None] | None = None
        self.expires_ms = self._first_expiry()

    def _first_expiry(self) -> int | None:
        """The earliest instant a record of [start, stop) counts as expired."""
        found = self.header.first_timestamp + self.ttl_ms + 1 if self.ttl_ms else None
        if self.header.attributes & EXPIRING:
            own = [e for e in self._own()[self.start : self.stop] if e is not None]
            if own:
                found = min(own) if found is None else min(found, *own)
        return found

    def _own(self) -> list[int | None]:
        """Each record's own `logq-expires-at` (a marked batch's only), read once."""
        if self._own_expiries is None:
            found: list[int | None] = []
            for index in range(self.count):
                text = self.headers(index).get(HEADER_EXPIRES_AT, "")
                found.append(int(text) if text.isdecimal() else None)
            self._own_expiries = found
        return self._own_expiries

    def expired(self, index: int, now_ms: int) -> bool:
        """Whether record `index` has expired at `now_ms` (as the broker judges it)."""
        if self.ttl_ms and now_ms > self.timestamp(index) + self.ttl_ms:
            return True
        if self.header.attributes & EXPIRING:
            own = self._own()[index]
            return own is not None and now_ms >= own
        return False

    def skip_expired(self, stop: int, now_ms: int) -> int:
        """Move the cursor past the expired records it stands on (up to
        `stop`); how many (the caller has the settler release them, on the
        loop's thread). Called only once `now_ms` has reached `expires_ms`."""
        first = index = self.cursor
        while index < stop and self.expired(index, now_ms):
            index += 1
        self.cursor = index
        return index - first

    def fresh(self, start: int, stop: int, now_ms: int) -> list[int]:
        """The indexes of [start, stop) not expired at `now_ms`; the expired
        ones go to the settler to release (one request per run of them)."""
        if self.expires_ms is None or now_ms < self.expires_ms:
            return list(range(start, stop))
        kept: list[int] = []
        run = start
        for index in range(start, stop):
            if not self.expired(index, now_ms):
                if run < index and self.settler is not None:
                    self.settler.expire(self, run, index)
                kept.append(index)
                run = index + 1
        if run < stop and self.settler is not None:
            self.settler.expire(self, run, stop)
        return kept

    def messages(self, start: int, stop: int) -> list[AsyncMessage]:
        return [AsyncMessage(self, index) for index in range(start, stop)]

    def receipts(self, start: int, stop: int) -> list[str]:
        """The receipts (`<id>@<lease>`) of records [start, stop) of this delivery."""
        prefix = f"{self.topic}:{self.partition}:"
        suffix = f"@{self.lease}" if self.lease else ""
        base = self.base_offset
        return [f"{prefix}{base + index}{suffix}" for index in range(start, stop)]

    def ranges(self) -> list[tuple[int, int]]:
        """The acked offsets not yet sent, as half-open runs [start, end)."""
        base = self.base_offset
        return [(base + start, base + end) for start, end in marked_runs(self.marks)]

    def take_ranges(self) -> list[tuple[int, int]]:
        """The acked offsets as `ranges()` gives them, forgotten here."""
        runs = self.ranges()
        self.marks = bytearray(self.count)
        self.pending = None
        return runs


def marked_runs(marks: bytearray) -> list[tuple[int, int]]:
    """The indexes marked 1 in `marks`, as half-open runs [start, end)."""
    runs: list[tuple[int, int]] = []
    start = marks.find(1)
    while start >= 0:
        end = marks.find(0, start)
        if end < 0:
            end = len(marks)
        runs.append((start, end))
        start = marks.find(1, end)
    return runs


class AsyncMessage(MessageData):
    """A message received by a group through `AsyncClient`: its batch and index."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: DeliveredBatch, index: int) -> None:
        self._batch = batch
        self._index = index

    @property
    def topic(self) -> str:
        return self._batch.topic

    @property
    def partition(self) -> int:
        return self._batch.partition

    @property
    def offset(self) -> int:
        return self._batch.base_offset + self._index

    @property
    def key(self) -> bytes | None:
        return self._batch.key(self._index)

    @property
    def value(self) -> bytes | None:
        return self._batch.value(self._index)

    @property
    def headers(self) -> dict[str, str]:
        try:
            return self._headers
        except AttributeError:  # decoded on first use, then the same dict
            headers = self._headers = self._batch.headers(self._index)
            return headers

    @property
    def priority(self) -> str:
        return self._batch.priority

    @property
    def lease(self) -> int:
        return self._batch.lease

    @property
    def timestamp_ms(self) -> int:
        return self._batch.timestamp(self._index)

    @property
    def attempt(self) -> int:
        return self._batch.attempt

    @property
    def group(self) -> str:
        return self._batch.group

    def _require(self) -> SettlesMessages:
        settler = self._batch.settler
        if settler is None:
            raise RuntimeError("this message was read without a group: there is nothing to settle")
        return settler

    def ack(self) -> asyncio.Future[Any]:
        """Done with it: never deliver it to this group again. Sent at the
        end of this loop turn with the turn's other acks, awaited or not; the
        future resolves once the broker has it durably."""
        batch = self._batch
        pending = batch.pending
        if pending is None:  # the batch's first ack since its acks were last sent
            return self._require().ack_at(batch, self._index)
        batch.marks[self._index] = 1  # the ack the settler sends with the batch's others
        return pending

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


class ThreadAcks:
    """Acks made on a thread other than the event loop's (the blocking
    `Client`'s callers), handed to the loop thread in bulk.

    `ack` marks the record in a bitmap this object keeps for its batch and,
    the first time since the loop thread last took the marks, wakes the loop
    thread (`call_soon_threadsafe`); every ack made until the loop thread
    runs shares that wake and one concurrent future. On the loop thread the
    marks go into the batches' own bitmaps through their settlers, the same
    as `AsyncMessage.ack` would put them there, so they are sent within that
    turn's ACKR; the future resolves as the settlers' futures do. A lock,
    held for a few stores on either side, keeps a mark from falling between
    the two threads."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._batch: DeliveredBatch | None = None  # the batch `_marks` is of
        self._marks = bytearray()
        self._waiting: list[tuple[DeliveredBatch, bytearray]] = []  # for the loop thread
        self._future: concurrent.futures.Future[Any] | None = None

    def ack(self, batch: DeliveredBatch, index: int) -> concurrent.futures.Future[Any]:
        with self._lock:
            future = self._future
            if batch is not self._batch or future is None:
                future = self._open(batch)
            self._marks[index] = 1
            return future

    def _open(self, batch: DeliveredBatch) -> concurrent.futures.Future[Any]:
        """Start a bitmap for `batch` (and, first thing after a hand-over, a
        future and the wake that hands them over); the lock is held."""
        future = self._future
        if future is None:
            self._loop.call_soon_threadsafe(self._hand_over)  # raises if the client closed
            future = self._future = concurrent.futures.Future()
        self._batch, self._marks = batch, bytearray(batch.count)
        self._waiting.append((batch, self._marks))
        return future

    def _hand_over(self) -> None:
        """On the loop thread: queue the acks marked so far with their settlers."""
        with self._lock:
            waiting, future = self._waiting, self._future
            self._waiting, self._future, self._batch = [], None, None
        if future is None:
            return
        pending: list[asyncio.Future[Any]] = []
        for batch, marks in waiting:
            settler = batch.settler
            assert settler is not None  # Message.ack refuses a message without one
            queued = settler.mark(batch, marks)
            if queued not in pending:
                pending.append(queued)
        _follow(pending, future)


def _follow(sources: list[asyncio.Future[Any]], target: concurrent.futures.Future[Any]) -> None:
    """Settle `target` once every one of `sources` is done: the first error,
    else the last result (an ACKR's count)."""
    left = len(sources)

    def done(source: asyncio.Future[Any]) -> None:
        nonlocal left
        left -= 1
        if target.done():
            return
        if source.cancelled():
            target.cancel()
        elif (error := source.exception()) is not None:
            target.set_exception(error)
        elif left == 0:
            target.set_result(source.result())

    for source in sources:
        source.add_done_callback(done)


class Message(MessageData):
    """A message received through the blocking `Client`: its fields are its
    `AsyncMessage`'s, its settlements run on the client's event loop (its
    acks through the client's `ThreadAcks`, without a wait)."""

    __slots__ = ("_acks", "_inner", "_submit")

    def __init__(self, inner: AsyncMessage, submit: Submit, acks: ThreadAcks | None = None) -> None:
        self._inner = inner
        self._submit = submit
        self._acks = acks

    @property
    def topic(self) -> str:
        return self._inner.topic

    @property
    def partition(self) -> int:
        return self._inner.partition

    @property
    def offset(self) -> int:
        return self._inner.offset

    @property
    def key(self) -> bytes | None:
        return self._inner.key

    @property
    def value(self) -> bytes | None:
        return self._inner.value

    @property
    def headers(self) -> dict[str, str]:
        return self._inner.headers

    @property
    def priority(self) -> str:
        return self._inner.priority

    @property
    def lease(self) -> int:
        return self._inner.lease

    @property
    def timestamp_ms(self) -> int:
        return self._inner.timestamp_ms

    @property
    def attempt(self) -> int:
        return self._inner.attempt

    @property
    def group(self) -> str:
        return self._inner.group

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
        acks, inner = self._acks, self._inner
        if acks is None:
            return self._do(AsyncMessage.ack)
        batch = inner._batch
        if batch.settler is None:
            inner._require()  # raises: a message read without a group cannot be settled
        return acks.ack(batch, inner._index)

    def nack(self, delay: str | int | None = None) -> Any:
        """Not now: deliver it again after `delay`; waits for the broker."""
        return self._do(lambda m: m.nack(delay)).result()

    def reject(self, reason: str = "rejected") -> Any:
        """Never: dead-letter it with `reason`; waits for the broker."""
        return self._do(lambda m: m.reject(reason)).result()

    def extend(self, visibility_timeout: str | int | None = None) -> Any:
        """Still working on it: renew the lease; waits for the broker."""
        return self._do(lambda m: m.extend(visibility_timeout)).result()


def delivered(
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
    ttl_ms: int = 0,
) -> list[DeliveredBatch]:
    """The batches of a delivery [start, end) of fetched batches, for `group`,
    handed out under lease token `lease`, of a topic whose TTL is `ttl_ms`."""
    return [
        DeliveredBatch(
            data,
            position,
            topic,
            partition,
            first,
            last,
            attempt,
            group,
            settler,
            lanes,
            lease,
            ttl_ms,
        )
        for position, first, last in batches_in(data, start, end)
        if first < last
    ]


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
    ttl_ms: int = 0,
    now_ms: int = 0,
) -> list[AsyncMessage]:
    """The messages of a delivery [start, end) of fetched batches, for `group`,
    handed out under lease token `lease`, less those expired at `now_ms`
    (released to the broker as expired)."""
    messages: list[AsyncMessage] = []
    for batch in delivered(
        topic, partition, start, end, attempt, data, group, settler, lanes, lease, ttl_ms
    ):
        if batch.expires_ms is None or now_ms < batch.expires_ms:
            messages += batch.messages(batch.start, batch.stop)
        else:
            messages += [
                AsyncMessage(batch, i) for i in batch.fresh(batch.start, batch.stop, now_ms)
            ]
        batch.cursor = batch.counted = batch.stop
    return messages
