"""The consuming iterator: pushed deliveries with credit-based flow control.

A consumer holds its own connection subscribed with `CONSUME`. It grants
the server `prefetch` messages of credit, and grants more as the caller
takes messages, so the server never leases more than the caller can
process. If the connection drops, the consumer subscribes again; the
leases of messages it had not handed out expire and are delivered again.

Subscribing again goes on for as long as the consumer is open, in a task of
its own with a bounded backoff (up to `RESUBSCRIBE_BACKOFF_MAX_S`): an
outage is reported once, by a log line and the `on_outage` callback, and
its end by another line; the iterating loop just waits, as it would for
messages. Only an error that trying again cannot cure (the topic or group
is gone, access is refused) ends the loop, raised from it.

Deliveries are kept as the batches they came in (`DeliveredBatch`, read
lazily), each with a cursor over the records not yet handed out; the
iterator hands records out straight from the batch at the head, one small
object each, and counts them for credit a chunk at a time.

The subscription makes the consumer a member of the group (in `ordered`
groups, the owner of some partitions); a background heartbeat keeps it one
while the caller is busy, and closing it leaves the group at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

from logq.client.connection import Connection, error_from_reply
from logq.client.messages import AsyncMessage, DeliveredBatch, delivered
from logq.client.records import as_map
from logq.client.settle import Settler
from logq.errors import ConnectionLostError, LogqError
from logq.protocol import Push, RespError

if TYPE_CHECKING:
    from logq.client.async_client import AsyncClient

logger = logging.getLogger("logq.client")
HEARTBEAT_DEFAULT_S = 3.0
RESUBSCRIBE_BACKOFF_MAX_S = 2.0  # the longest pause between two tries to subscribe
CLOSE_CALL_TIMEOUT_S = 2.0  # closing: STOP and the hand-back of unused leases, best effort


def default_consumer_name() -> str:
    return f"consumer-{secrets.token_hex(4)}"


class AsyncConsumer:
    def __init__(
        self,
        client: AsyncClient,
        topic: str,
        group: str,
        *,
        consumer: str | None = None,
        prefetch: int = 1000,
        visibility_timeout: str | int | None = None,
        auto_ack: bool = False,
        limit: int | None = None,
        session_timeout: str | int | None = None,
        on_outage: Callable[[BaseException], None] | None = None,
    ) -> None:
        """`on_outage(error)` is called once as each outage begins (the
        subscription lost and not made again at the first try)."""
        self.client = client
        self.on_outage = on_outage
        self.outages = 0  # how many times the subscription was lost and made again
        self._subscribing: asyncio.Task[None] | None = None
        self.session_timeout = session_timeout
        self.assignment: dict[str, Any] = {}  # the member's partitions, as of the last heartbeat
        self._heartbeat: asyncio.Task[None] | None = None
        self.limit = limit  # hand out at most this many messages, lease no more
        self.topic = topic
        self.group = group
        self.consumer = consumer or default_consumer_name()
        self.prefetch = max(1, min(prefetch, limit if limit is not None else prefetch))
        self._granted = self.prefetch
        self._handed = 0
        self.visibility_timeout = visibility_timeout
        self.auto_ack = auto_ack
        self.settler = Settler(client, topic, group)
        self._buffer: deque[DeliveredBatch] = deque()  # each with records not handed out
        self._arrived = asyncio.Event()
        self._connection: Connection | None = None
        self._taken = 0
        self._error: LogqError | None = None
        self._closed = False

    def __aiter__(self) -> AsyncIterator[AsyncMessage]:
        return self._iterate()

    async def __aenter__(self) -> AsyncConsumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _iterate(self) -> AsyncIterator[AsyncMessage]:
        """The plain `async for message in consumer` loop: this is the hot
        path, so a message is made here without a call to its `__init__`
        (the same two fields it sets), and the cursor moves before each
        message is handed out, so a caller leaving the loop leaves the rest."""
        new_message = object.__new__
        auto_ack = self.auto_ack
        now_ms = self.client.now_ms
        while (chunk := await self.next_chunk()) is not None:
            batch, stop = chunk
            # The cursor is read each time: next()/next_batch() may take from this batch too.
            while (index := batch.cursor) < stop:
                expires_ms = batch.expires_ms  # None: nothing in this batch expires
                if (
                    expires_ms is not None
                    and (now := now_ms()) >= expires_ms
                    and (skipped := batch.skip_expired(stop, now))
                ):
                    self.settler.expire(batch, index, index + skipped)
                    continue  # released as expired, never handed out
                batch.cursor = index + 1
                message = new_message(AsyncMessage)
                message._batch = batch
                message._index = index
                if auto_ack:
                    message.ack()
                yield message

    async def next_chunk(self) -> tuple[DeliveredBatch, int] | None:
        """The batch to hand out from and where to stop (a quarter of the
        prefetch at most, so credit flows back while the caller works), after
        counting what was handed out before; None as `next()` returns None.
        The caller hands out records [batch.cursor, stop), moving the cursor
        before each (the blocking `Client` does so on its caller's thread)."""
        if not await self._wait_for_messages(None):
            return None
        batch = self._buffer[0]
        stop = min(batch.stop, batch.cursor + max(1, self.prefetch // 4))
        if self.limit is not None:
            stop = min(stop, batch.cursor + self.limit - self._handed)
        return (batch, stop) if stop > batch.cursor else None

    async def next(self, timeout_s: float | None = None) -> AsyncMessage | None:
        """The next message, waiting up to `timeout_s` (forever if None);
        None when the time is up, or the consumer is closed or at its limit."""
        batch = await self.next_batch(1, timeout_s)
        return batch[0] if batch else None

    async def next_batch(
        self, max_messages: int = 1000, timeout_s: float | None = None
    ) -> list[AsyncMessage]:
        """Up to `max_messages` that have arrived, waiting up to `timeout_s`
        for the first (as Kafka's poll): one await for many messages, for
        consumers that go fast. Empty when the time is up, or the consumer is
        closed or at its limit."""
        if max_messages <= 0 or not await self._wait_for_messages(timeout_s):
            return []
        if self.limit is not None:
            max_messages = min(max_messages, self.limit - self._handed)
        taken: list[AsyncMessage] = []
        buffer = self._buffer
        now_ms = self.client.now_ms()
        while buffer and len(taken) < max_messages:
            batch = buffer[0]
            start = batch.cursor
            stop = min(batch.stop, start + max_messages - len(taken))
            if batch.expires_ms is None or now_ms < batch.expires_ms:
                taken += batch.messages(start, stop)
            else:  # the expired ones are released, never handed out
                taken += [AsyncMessage(batch, i) for i in batch.fresh(start, stop, now_ms)]
            batch.cursor = stop
            if stop >= batch.stop:
                buffer.popleft()
            self._count(batch)
        if self.auto_ack:
            for message in taken:
                message.ack()
        return taken

    async def _wait_for_messages(self, timeout_s: float | None) -> bool:
        """Wait until a record is there to hand out (and within the limit),
        counting those handed out so far; False when the time is up, or the
        consumer is closed or at its limit."""
        buffer = self._buffer
        while buffer and buffer[0].cursor >= buffer[0].stop:
            self._count(buffer.popleft())
        if buffer:
            self._count(buffer[0])
        if self.limit is not None and self._handed >= self.limit:
            return False
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while not buffer:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._closed:
                return False
            if self._connection is None or self._connection.closed:
                self._start_subscribing()
            self._arrived.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._arrived.wait()
            except TimeoutError:
                return False
        return True

    def _count(self, batch: DeliveredBatch) -> None:
        """Count the records of `batch` handed out since last counted, and
        give their credit back once half the prefetch is taken."""
        handed = batch.cursor - batch.counted
        if handed:
            batch.counted = batch.cursor
            self._taken += handed
            self._handed += handed
            if self._taken * 2 >= self.prefetch:
                self._grant()

    def ack_all(self, messages: Iterable[AsyncMessage]) -> asyncio.Future[Any]:
        """Ack a whole batch (from `next_batch`) in one step; the future
        settles when the broker has recorded it."""
        return self.settler.ack_all(messages)

    def _grant(self) -> None:
        """Give back the credit of the messages handed out (up to `limit`)."""
        grant, self._taken = self._taken, 0
        if self.limit is not None:
            grant = min(grant, self.limit - self._granted)
        if grant <= 0 or self._connection is None or self._connection.closed:
            return
        self._granted += grant
        with contextlib.suppress(ConnectionLostError):
            self._connection.send(["CREDIT", grant])

    async def close(self) -> None:
        """Leave the group, give back the messages leased and not handed out,
        and wait for the settlements made through this consumer (raises
        `UnconfirmedError` naming any the broker did not confirm). The
        client closes every consumer it handed out when it closes itself."""
        if self._closed:
            return
        self._closed = True
        self._arrived.set()
        try:
            await self._stop_subscribing()
            await self._stop_heartbeat()
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._connection.call("STOP"), CLOSE_CALL_TIMEOUT_S)
                self._connection.close()
            # Leased but never handed out: give them back now rather than at lease expiry.
            unused = [
                receipt
                for batch in self._buffer
                for receipt in batch.receipts(batch.cursor, batch.stop)
            ]
            self._drop_buffer()
            if unused:
                # else their leases expire: bounded, best effort
                with contextlib.suppress(Exception):
                    await self.client.call(
                        "NACK", self.topic, self.group, *unused, timeout_s=CLOSE_CALL_TIMEOUT_S
                    )
            await self.settler.flush()
        finally:
            await self.abort()

    async def abort(self) -> None:
        """Stop at once, sending nothing more: the heartbeat ends and the
        subscription's connection closes (its leases expire in time)."""
        self._closed = True
        self._arrived.set()
        await self._stop_subscribing()
        await self._stop_heartbeat()
        if self._connection is not None:
            self._connection.close()
        self._drop_buffer()
        self.client.release(self)

    async def _stop_subscribing(self) -> None:
        subscribing, self._subscribing = self._subscribing, None
        if subscribing is not None:
            subscribing.cancel()
            await asyncio.wait([subscribing])  # its end, without swallowing our own cancel

    def _drop_buffer(self) -> None:
        """Forget the records not handed out (an iterator left suspended
        hands out no more; their leases end by a NACK or in time)."""
        for batch in self._buffer:
            self._handed += batch.cursor - batch.counted  # handed out, not counted yet
            batch.counted = batch.cursor = batch.stop
        self._buffer.clear()

    async def _stop_heartbeat(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.cancel()
            await asyncio.wait([heartbeat])  # its end, without swallowing our own cancel

    def _start_subscribing(self) -> None:
        if self._subscribing is None or self._subscribing.done():
            self._subscribing = asyncio.get_running_loop().create_task(self._subscribe())

    async def _subscribe(self) -> None:
        """Subscribe, and again after every failure that may pass, until it
        works or the consumer is closed; wakes the iterating loop either way."""
        try:
            await self._subscribe_until_done()
        except LogqError as error:  # one that trying again cannot cure
            self._error = error
        finally:
            self._arrived.set()

    async def _subscribe_until_done(self) -> None:
        if self._closed or (self._connection is not None and not self._connection.closed):
            return
        self._drop_buffer()
        self._taken = 0
        credit = self.prefetch
        if self.limit is not None:
            credit = max(min(credit, self.limit - self._handed), 0)
        self._granted = self._handed + credit
        attempt, began = 0, time.monotonic()
        while not self._closed:
            try:
                connection = await self._subscribed_connection(credit)
            except (OSError, LogqError) as error:
                if isinstance(error, LogqError) and not error.retriable:
                    raise
                attempt += 1
                if attempt == 1:
                    self._outage_began(error)
                pause_s = min(0.05 * 2 ** (attempt - 1), RESUBSCRIBE_BACKOFF_MAX_S)
                await asyncio.sleep(pause_s * (0.5 + secrets.randbelow(1000) / 2000))
                continue
            if self._closed:  # closed while subscribing: leave nothing behind
                connection.close()
                return
            self._connection = connection
            if attempt:
                self.outages += 1
                logger.info(
                    "consumer %s of %s/%s subscribed again after %.1f s and %d tries",
                    self.consumer,
                    self.topic,
                    self.group,
                    time.monotonic() - began,
                    attempt + 1,
                )
            if self._heartbeat is None:
                self._heartbeat = asyncio.create_task(self._beat())
            return

    async def _subscribed_connection(self, credit: int) -> Connection:
        connection = await self.client.open_connection(self._on_push)
        args: list[bytes | str | int] = ["CONSUME", self.topic, self.group, self.consumer]
        args += ["CREDIT", credit]
        if self.visibility_timeout is not None:
            args += ["VISIBILITY_TIMEOUT", self.visibility_timeout]
        if self.session_timeout is not None:
            args += ["SESSION_TIMEOUT", self.session_timeout]
        try:
            async with asyncio.timeout(self.client.request_timeout_s):
                await connection.call(*args)
        except BaseException:
            connection.close()
            raise
        if self._closed:
            connection.close()
        return connection

    def _outage_began(self, error: BaseException) -> None:
        logger.warning(
            "consumer %s of %s/%s cannot subscribe (%s): trying again until it can",
            self.consumer,
            self.topic,
            self.group,
            error,
        )
        if self.on_outage is not None:
            try:
                self.on_outage(error)
            except Exception:
                logger.exception("the on_outage callback failed")

    async def _beat(self) -> None:
        """Heartbeat on the subscription's connection, a third of the session apart,
        so a consumer busy with a long batch (no credit left) stays a member."""
        while not self._closed:
            connection = self._connection
            period_s = HEARTBEAT_DEFAULT_S
            if connection is not None and not connection.closed:
                with contextlib.suppress(LogqError, ConnectionLostError, TimeoutError):
                    reply = await asyncio.wait_for(
                        connection.call("HEARTBEAT", self.topic, self.group, self.consumer), 10
                    )
                    self.assignment = as_map(reply)
                    period_s = max(0.05, int(self.assignment["session_timeout_ms"]) / 3000)
            await asyncio.sleep(period_s)

    def _on_push(self, frame: Push) -> None:
        if not frame:
            return
        kind = frame[0]
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "delivery":
            _, _topic, partition, start, end, attempt, data, *rest = frame
            lease = rest[0] if rest else 0  # servers before lease tokens send none
            ttl_ms = rest[1] if len(rest) > 1 else 0  # the topic's TTL (0: none)
            assert isinstance(ttl_ms, int)
            assert isinstance(data, bytes) and isinstance(lease, int)
            assert isinstance(partition, int) and isinstance(start, int)
            assert isinstance(end, int) and isinstance(attempt, int)
            self._buffer.extend(
                delivered(
                    self.topic,
                    partition,
                    start,
                    end,
                    attempt,
                    data,
                    self.group,
                    self.settler,
                    self.client.lane_names,
                    lease,
                    ttl_ms,
                )
            )
        elif kind == "error":
            text = frame[1].decode() if isinstance(frame[1], bytes) else str(frame[1])
            self._error = error_from_reply(RespError(text))
        self._arrived.set()
