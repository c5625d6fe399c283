"""Settling received messages: acks gathered into ranges, the rest sent as asked.

Every `ack()` made during one turn of the event loop goes out as one
`ACKR` of offset ranges per group, so acknowledging a thousand messages
costs one request; while one ACKR is out, the next acks wait and go
together in the next one. nack, reject and extend are rarer and go at once,
whether or not the caller awaits them.

A settler belongs to one client (its `receive()` calls of one group, or one
consumer it handed out), which flushes it when it closes. Every request a
settler starts runs in a task the settler keeps until the broker answers:
`flush()` waits for them all and reports, as `UnconfirmedError`, each
settlement the broker refused or never answered, whether or not its future
was awaited. `abandon()` cancels what is still out when the time is up and
names it, so no task is left behind and nothing is dropped unsaid.

Each settlement names the delivery it settles by the message's lease token
(ACKR groups its ranges by token; the others send receipts `<id>@<lease>`),
so a message whose lease ended and went to another consumer is not touched:
the broker answers STALE and the settlement raises StaleDeliveryError. That
is an answer, not a loss: the delivery belongs to another consumer now, so
a flush or close does not report it again (its future or task does).

Messages that expired in a consumer's buffer are never handed out: their
runs are gathered per loop turn, as acks are, and released to the broker in
one `EXPIRED` request of ranges per lease token, which counts, traces and
(as the topic says) dead-letters them. One the broker finds not expired by
its own clock (clocks apart) stays leased: its lease ends in time and the
broker's own screen finds it expired then. Either answer is the broker's,
so neither is reported as unconfirmed.

An ack of a received message marks it in its batch's ack bitmap and, the
first time, lists the batch here; sending turns each listed batch's marks
into ranges (a few C-level searches per batch), grouped by the batch's
partition and lease token, so an ack costs a byte store, not a list append
and a share of a sort.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from logq.client.messages import AsyncMessage, DeliveredBatch, marked_runs
from logq.client.records import MessageData, as_text
from logq.errors import NotExpiredError, StaleDeliveryError, UnconfirmedError

if TYPE_CHECKING:
    from logq.client.async_client import AsyncClient

# How many unconfirmed settlements an error spells out; the rest are counted.
UNCONFIRMED_NAMED_MAX = 20
# How many failures a settler keeps between flushes (a long-lived consumer
# whose settlements keep failing must not grow without bound); the rest are counted.
FAILURES_KEPT_MAX = 1_000


def merged_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Half-open runs [start, end), sorted, with touching or overlapping runs joined."""
    if len(ranges) == 1:
        return ranges
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


def unconfirmed_error(what: str, unconfirmed: list[str]) -> UnconfirmedError:
    """One error naming the settlements that were not confirmed."""
    named = unconfirmed[:UNCONFIRMED_NAMED_MAX]
    more = len(unconfirmed) - len(named)
    text = f"{what}: not confirmed by the broker: " + "; ".join(named)
    if more:
        text += f"; and {more} more"
    return UnconfirmedError(text, unconfirmed)


def settled_count(reply: Any) -> int:
    """A settlement's count; StaleDeliveryError for the reply that names stale
    receipts next to the count of what the rest did (a map; docs/protocol.md)."""
    if isinstance(reply, int):
        return reply
    fields = as_text(reply)
    if isinstance(fields, list):  # RESP2: a flat array of names and values
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    count = int(fields["count"])
    if "not_expired" in fields:
        fresh = [str(name) for name in fields["not_expired"]]
        raise NotExpiredError(
            f"{len(fresh)} messages named have not expired by the broker's clock (the"
            f" others, {count}, were released): {' '.join(fresh[:10])}",
            fresh,
            count,
        )
    stale = [str(receipt) for receipt in fields["stale"]]
    raise StaleDeliveryError(
        f"{len(stale)} deliveries named are no longer current (the others, {count},"
        f" were settled): {' '.join(stale[:10])}",
        stale,
        count,
    )


# (partition, lease token) -> the offsets acked in that delivery, as sorted
# half-open runs [start, end)
Acks = dict[tuple[int, int], list[tuple[int, int]]]


class Settler:
    def __init__(self, client: AsyncClient, topic: str, group: str) -> None:
        self.client = client
        self.topic = topic
        self.group = group
        # made, not yet sent: acked offsets of messages without a batch, per
        # (partition, lease), and the batches with acks marked in their bitmaps
        self._acks: dict[tuple[int, int], list[int]] = {}
        self._batches: list[DeliveredBatch] = []
        self._futures: list[asyncio.Future[Any]] = []
        self._scheduled = False
        self._sender: asyncio.Task[None] | None = None  # the one ACKR loop, while it runs
        self._acks_out: Acks = {}  # the acks of the ACKR that is out
        self._requests: dict[asyncio.Task[Any], str] = {}  # nack/reject/extend out
        self._failures: list[str] = []  # refused or unanswered, until a flush reports them
        self._failures_uncounted = 0  # past FAILURES_KEPT_MAX
        # expired in a buffer, not yet released: offset runs per (partition, lease)
        self._expired: Acks = {}

    def ack_at(self, batch: DeliveredBatch, index: int) -> asyncio.Future[Any]:
        """Queue the ack of record `index` of `batch`; the future (shared by
        every ack of this loop turn) settles when the broker has recorded them."""
        batch.marks[index] = 1
        pending = batch.pending
        if pending is None:
            self._batches.append(batch)
            pending = batch.pending = self._schedule()
        return pending

    def mark(self, batch: DeliveredBatch, marks: bytearray) -> asyncio.Future[Any]:
        """Queue the acks of the records of `batch` marked 1 in `marks` (made
        on another thread: see ThreadAcks), as `ack_at` does for one."""
        target = batch.marks
        for start, end in marked_runs(marks):
            target[start:end] = b"\x01" * (end - start)
        pending = batch.pending
        if pending is None:
            self._batches.append(batch)
            pending = batch.pending = self._schedule()
        return pending

    def ack(self, message: MessageData) -> asyncio.Future[Any]:
        """Queue the ack; the future (shared by every ack of this loop turn)
        settles when the broker has recorded them."""
        if isinstance(message, AsyncMessage):
            return message.ack()
        key = (message.partition, message.lease)
        offsets = self._acks.get(key)
        if offsets is None:
            offsets = self._acks[key] = []
        offsets.append(message.offset)
        if self._scheduled:  # the common case, kept to one check per message
            return self._futures[-1]
        return self._schedule()

    def ack_all(self, messages: Iterable[MessageData]) -> asyncio.Future[Any]:
        """Ack many messages at once (as a Kafka consumer commits a poll): the
        same as `ack()` on each, at a fraction of the cost per message."""
        pending = self._schedule()
        batches = self._batches
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

    def _schedule(self) -> asyncio.Future[Any]:
        """The future of this loop turn's acks; the first ack of a turn
        makes it, schedules the send and puts this settler on the client's
        list of settlers to flush."""
        if not self._scheduled:
            self._scheduled = True
            self.client.settling.add(self)
            loop = asyncio.get_running_loop()
            self._futures.append(loop.create_future())
            loop.call_soon(self._send_acks)
        return self._futures[-1]

    def _send_acks(self) -> None:
        self._scheduled = False
        if self._sender is not None:
            return  # the ACKR in flight sends these when its reply comes
        if not (self._acks or self._batches or self._futures):
            self._check_idle()
            return
        self._sender = asyncio.get_running_loop().create_task(self._ack_ranges())

    async def _ack_ranges(self) -> None:
        """One ACKR at a time: acks made while one is out go together in the
        next, so a busy consumer sends (and the broker fsyncs) one per round trip."""
        futures: list[asyncio.Future[Any]] = []
        try:
            while self._acks or self._batches or self._futures:
                acks, futures = self._take(), self._futures
                self._futures = []
                self._scheduled = False  # the next ack needs a future of its own
                if not acks:  # acks of nothing (an empty ack_all): nothing to send
                    for future in futures:
                        if not future.done():
                            future.set_result(0)
                    continue
                self._acks_out = acks
                try:
                    settled = settled_count(await self.client.call(*self._ackr(acks)))
                except Exception as error:
                    if not isinstance(error, StaleDeliveryError):
                        self._note_failure(f"{self._describe_acks(acks)} ({error})")
                    _fail(futures, error)
                else:
                    for future in futures:
                        if not future.done():
                            future.set_result(settled)
                self._acks_out = {}
        finally:
            if not all(future.done() for future in futures):
                # cancelled by abandon(): whoever waits learns it was not confirmed
                abandoned = UnconfirmedError(f"{self._describe_acks(self._acks_out)}: abandoned")
                _fail(futures, abandoned)
            self._acks_out = {}
            self._sender = None
            self._check_idle()

    def _gather(self, take: bool) -> Acks:
        """The acks made and not sent, as runs per (partition, lease); with
        `take`, forgotten here (their batches' bitmaps cleared)."""
        found: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for batch in self._batches:
            runs = batch.take_ranges() if take else batch.ranges()
            if runs:
                key = (batch.partition, batch.lease)
                known = found.get(key)
                if known is None:
                    found[key] = runs
                else:
                    known += runs
        for key, offsets in self._acks.items():
            found.setdefault(key, []).extend(offset_ranges(offsets))
        if take:
            self._acks, self._batches = {}, []
        return {key: merged_ranges(runs) for key, runs in found.items()}

    def _take(self) -> Acks:
        """The acks made and not sent, forgotten here: the next ACKR's."""
        return self._gather(take=True)

    def _ackr(self, acks: Acks) -> list[bytes | str | int]:
        """ACKR with the ranges grouped by lease token (`LEASE t` before each group)."""
        args: list[bytes | str | int] = ["ACKR", self.topic, self.group]
        lease = 0
        for (partition, token), runs in sorted(acks.items(), key=lambda item: item[0][1]):
            if token != lease:
                args += ["LEASE", token]
                lease = token
            for start, end in runs:
                args += [partition, start, end]
        return args

    def _describe_acks(self, acks: Acks) -> str:
        ranges = ", ".join(
            f"{partition}:{start}" + (f"-{end - 1}" if end - start > 1 else "")
            for (partition, _), runs in sorted(acks.items())
            for start, end in runs
        )
        return f"ack of {self.topic}/{self.group} partition:offsets {ranges}"

    def _request(self, what: str, args: list[bytes | str | int]) -> asyncio.Task[Any]:
        """Send now, in a task this settler keeps until the broker answers."""
        task = asyncio.get_running_loop().create_task(self.client.call(*args))
        self._requests[task] = what
        self.client.settling.add(self)
        task.add_done_callback(self._request_done)
        return task

    def _request_done(self, task: asyncio.Task[Any]) -> None:
        what = self._requests.pop(task, None)
        if what is None:
            return
        if task.cancelled():
            self._note_failure(f"{what} (cancelled)")
        elif (error := task.exception()) is not None and not isinstance(
            error, (StaleDeliveryError, NotExpiredError)
        ):
            self._note_failure(f"{what} ({error})")
        self._check_idle()

    def expire(self, batch: DeliveredBatch, start: int, stop: int) -> None:
        """Queue the release of records [start, stop) of `batch`, which
        expired before they were handed out; sent with this loop turn's
        others as one EXPIRED."""
        base = batch.base_offset
        runs = self._expired.setdefault((batch.partition, batch.lease), [])
        runs.append((base + start, base + stop))
        if len(self._expired) == 1 and len(runs) == 1:  # the turn's first: send at its end
            self.client.settling.add(self)
            asyncio.get_running_loop().call_soon(self._send_expired)

    def _send_expired(self) -> None:
        expired, self._expired = self._expired, {}
        if not expired:
            self._check_idle()
            return
        runs = {key: merged_ranges(parts) for key, parts in expired.items()}
        args = self._ackr(runs)
        args[0] = "EXPIRED"
        what = self._describe_acks(runs).replace("ack of", "expired release of", 1)
        self._request(what, args)

    def _check_idle(self) -> None:
        """Leave the client's list of settlers to flush once nothing is out
        and every failure was reported."""
        if not (self.busy or self._scheduled or self._failures):
            self.client.settling.discard(self)

    @property
    def busy(self) -> bool:
        """Whether any settlement is waiting to be sent or for its answer."""
        return bool(
            self._acks
            or self._batches
            or self._sender is not None
            or self._requests
            or self._expired
        )

    def outstanding(self) -> list[str]:
        """What is made or sent and not answered yet, in words."""
        queued = self._gather(take=False)
        found = [self._describe_acks(acks) for acks in (self._acks_out, queued) if acks]
        return found + list(self._requests.values())

    async def flush(self) -> None:
        """Send the settlements made so far and wait for the broker's answers;
        raises `UnconfirmedError` naming those it refused or never answered
        (each reported once, by the first flush after it failed)."""
        while True:
            self._send_acks()
            self._send_expired()
            waiting: list[asyncio.Task[Any]] = list(self._requests)
            if self._sender is not None:
                waiting.append(self._sender)
            if not waiting:
                break
            await asyncio.wait(waiting)
        self.raise_failures()

    def _note_failure(self, text: str) -> None:
        if len(self._failures) < FAILURES_KEPT_MAX:
            self._failures.append(text)
        else:
            self._failures_uncounted += 1

    def _take_failures(self) -> list[str]:
        failures, self._failures = self._failures, []
        if self._failures_uncounted:
            failures.append(f"{self._failures_uncounted} more settlements")
            self._failures_uncounted = 0
        return failures

    def raise_failures(self) -> None:
        failures = self._take_failures()
        self._check_idle()
        if failures:
            raise unconfirmed_error(f"{self.topic}/{self.group}", failures)

    async def abandon(self) -> list[str]:
        """Stop waiting: cancel what is still out and name every settlement
        that was not confirmed (the failures not reported yet included)."""
        left = self.outstanding()
        requests, self._requests = self._requests, {}  # named in `left` already
        tasks: list[asyncio.Task[Any]] = list(requests)
        if self._sender is not None:
            tasks.append(self._sender)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        queued = self._take()
        self._expired = {}  # their leases end in time: the broker's screen finds them then
        futures, self._futures = self._futures, []
        _fail(futures, UnconfirmedError(f"{self._describe_acks(queued)}: abandoned"))
        failures = self._take_failures()
        self._scheduled = False
        self._check_idle()
        return failures + left

    def nack(self, message: MessageData, delay: str | int | None) -> asyncio.Task[Any]:
        args: list[bytes | str | int] = ["NACK", self.topic, self.group]
        if delay is not None:
            args += ["DELAY", delay]
        return self._request(f"nack of {message.id}", [*args, message.receipt])

    def reject(self, message: MessageData, reason: str) -> asyncio.Task[Any]:
        args: list[bytes | str | int] = ["REJECT", self.topic, self.group, "REASON", reason]
        return self._request(f"reject of {message.id}", [*args, message.receipt])

    def extend(
        self, message: MessageData, visibility_timeout: str | int | None
    ) -> asyncio.Task[Any]:
        args: list[bytes | str | int] = ["EXTEND", self.topic, self.group]
        if visibility_timeout is not None:
            args += ["VISIBILITY_TIMEOUT", visibility_timeout]
        return self._request(f"extend of {message.id}", [*args, message.receipt])


def _fail(futures: list[asyncio.Future[Any]], error: BaseException) -> None:
    """Fail the futures still waiting, marking the error as seen: a flush or
    close reports it, so an ack nobody awaited does not log it again."""
    for future in futures:
        if not future.done():
            future.set_exception(error)
            future.exception()
