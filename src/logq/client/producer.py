"""The batching producer: messages in, record batches out, futures back.

Messages wait per (topic, partition, lane) until `batch_records` or
`batch_bytes` fill a batch, or `linger_ms` passes (while a request is out,
batches go on filling until it is answered). A request is one `PUBBATCH`
per topic, with at most five batches of each partition. Each batch carries
this producer's id and a per-partition sequence, so a batch resent after a
lost connection is stored once (idempotent producer): one request is in
flight at a time, and a failed one is resent as it was, in order, before
anything newer.

Resending goes on for as long as the delivery timeout allows (each
message's, counted from its `send`; 120 s by default, as Kafka's
`delivery.timeout.ms`): a lost connection, a hung broker or a retriable
error (`DISKFULL`, `THROTTLED`...) is an outage to wait out, not a failure.
A future fails only with an error that is the message's own (`TOOBIG`,
`BADARG`), or once its delivery timeout has passed (`TIMEOUT`, stored or
not). The broker answers a multi-partition request per batch, so each
future follows its own batch's answer.

Each message is checked against the broker's limits (MessageLimits) before
it joins a batch, so a bad one fails alone, at `send`. Queued bytes are
bounded (`buffer_bytes_max`): `send` waits for room, up to
`block_timeout_s`, then raises `LimitError`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from logq.client.connection import error_from_reply
from logq.client.records import PublishResult
from logq.durations import parse_duration_ms, parse_time_ms
from logq.errors import BadArgumentError, LimitError, LogqError, UnconfirmedError
from logq.errors import TimeoutError as DeliveryTimeoutError
from logq.log import compression
from logq.log.batch import encode_batch
from logq.protocol import RespError

if TYPE_CHECKING:
    from logq.client.async_client import AsyncClient

HEADER_EXPIRES_AT = "logq-expires-at"  # epoch ms; the broker checks it before delivering
HEADER_DEDUP_ID = "logq-dedup-id"  # stored once within the topic's dedup window
CODECS = {"none": compression.NONE, "zstd": compression.ZSTD, "lz4": compression.LZ4}
BUFFER_BYTES_DEFAULT = 32 << 20  # as Kafka's buffer.memory
BLOCK_TIMEOUT_DEFAULT_S = 60.0  # as Kafka's max.block.ms
RECORD_OVERHEAD_BYTES = 16  # a record's column entries and timestamp in its batch
# Batches of one partition in one request: the broker remembers each
# producer's last five batches per partition, so a request resent whole
# after an ambiguous failure is recognised whole (stored once, offsets
# given back), never refused as too old to answer.
BATCHES_PER_PARTITION_MAX = 5


@dataclass(slots=True)
class _Pending:
    values: list[bytes | None] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    headers: list[dict[str, str] | None] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    futures: list[asyncio.Future[PublishResult]] = field(default_factory=list)
    size: int = 0
    deadline: float = float("inf")  # loop time: the first delivery timeout of its messages
    expiring: bool = False
    delayed: bool = False
    dedup: bool = False


def duration_ms(value: str | int | timedelta, what: str) -> int:
    if isinstance(value, timedelta):
        return int(value.total_seconds() * 1000)
    return parse_duration_ms(value, name=what)


def _due_ms(
    delay: str | int | timedelta | None, deliver_at: datetime | int | str | None, now_ms: int
) -> int | None:
    if delay is not None and deliver_at is not None:
        raise BadArgumentError("give delay or deliver_at, not both")
    if delay is not None:
        return now_ms + duration_ms(delay, "delay")
    if isinstance(deliver_at, datetime):
        return int(deliver_at.timestamp() * 1000)
    if deliver_at is not None:
        return parse_time_ms(deliver_at, name="deliver_at")
    return None


def as_bytes(value: bytes | str | None, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise BadArgumentError(f"{what} must be bytes or str, got {type(value).__name__}")


class AsyncProducer:
    """Batches messages per partition and lane; made by `AsyncClient.producer()`.

        async with client.producer(linger_ms=5) as producer:
            futures = [await producer.send("jobs", f"resize img-{n}") for n in range(100)]
        # every publish is stored here: leaving the block flushed them

    The client closes (flushing) any producer still open when it closes."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        linger_ms: float = 5.0,
        batch_records: int = 1000,
        batch_bytes: int = 1 << 20,
        compression: str = "none",
        delivery_timeout_s: float | None = None,
        buffer_bytes_max: int = BUFFER_BYTES_DEFAULT,
        block_timeout_s: float = BLOCK_TIMEOUT_DEFAULT_S,
    ) -> None:
        if compression not in CODECS:
            raise BadArgumentError(
                f"compression must be one of {sorted(CODECS)}, got {compression!r}"
            )
        if delivery_timeout_s is not None and not delivery_timeout_s > 0:
            raise BadArgumentError(
                f"delivery_timeout_s must be more than 0, got {delivery_timeout_s}"
            )
        if buffer_bytes_max < 1:
            raise BadArgumentError(f"buffer_bytes_max must be at least 1, got {buffer_bytes_max}")
        self.client = client
        self.delivery_timeout_s = delivery_timeout_s or client.delivery_timeout_s
        self.buffer_bytes_max = buffer_bytes_max
        self.block_timeout_s = block_timeout_s
        self._buffered_bytes = 0  # of messages sent and not yet settled
        self._room = asyncio.Event()
        self.linger_s = max(linger_ms, 0.0) / 1000
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.codec = CODECS[compression]
        self.producer_id = secrets.randbits(62) + 1
        self._sequences: dict[tuple[str, int], int] = {}
        self._pending: dict[tuple[str, int, int], _Pending] = {}
        self._ready: list[tuple[str, int, int, _Pending]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None
        self._linger_due = False  # lingered while a request was out: the sender seals
        self.closed = False

    async def send(
        self,
        topic: str,
        value: bytes | str | None,
        *,
        key: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        priority: str = "normal",
        partition: int | None = None,
        timestamp_ms: int | None = None,
        ttl: str | int | timedelta | None = None,
        delay: str | int | timedelta | None = None,
        deliver_at: datetime | int | str | None = None,
        dedup_id: str | None = None,
        delivery_timeout_s: float | None = None,
    ) -> asyncio.Future[PublishResult]:
        """Queue one message; the future resolves once the broker stored it durably,
        or fails once `delivery_timeout_s` (default the producer's) has passed.

        `ttl` ("30s", ms or a timedelta): never delivered after that long.
        `delay` (same forms) or `deliver_at` (a datetime, epoch ms or RFC
        3339): stored now, delivered to groups from then on. `dedup_id`: a
        second message with the same id within the topic's dedup window is
        not stored; its future gives the first message's id."""
        if self.closed:
            raise BadArgumentError("the producer is closed")
        lane = (await self.client.lanes()).index_of(priority)
        key_bytes = as_bytes(key, "key")
        value_bytes = as_bytes(value, "value")
        if partition is None:
            partition = await self.client.partition_for(topic, key_bytes)
        if dedup_id is not None:
            headers = {**(headers or {}), HEADER_DEDUP_ID: dedup_id}
        now_ms = timestamp_ms if timestamp_ms is not None else self.client.now_ms()
        due = _due_ms(delay, deliver_at, now_ms)
        if ttl is not None:
            expires = now_ms + duration_ms(ttl, "ttl")
            headers = {**(headers or {}), HEADER_EXPIRES_AT: str(expires)}
        # checked before it joins a batch: a message over a limit fails alone
        size = self.client.limits.check(key_bytes, value_bytes, headers) + RECORD_OVERHEAD_BYTES
        await self._reserve(size)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PublishResult] = loop.create_future()
        slot = (topic, partition, lane)
        if dedup_id is not None:
            # alone in its batch: the broker stores it whole or not at all
            pending = _Pending(dedup=True)
        else:
            pending = self._pending.get(slot) or _Pending()
            if pending.values and pending.size + size > self.batch_bytes:
                self._seal(slot)  # full: the message starts the next batch
                self._kick()
                pending = _Pending()
            self._pending[slot] = pending
        if due is not None:
            pending.delayed = True
        if ttl is not None:
            pending.expiring = True
        pending.values.append(value_bytes)
        pending.keys.append(key_bytes)
        pending.headers.append(headers)
        pending.timestamps.append(now_ms if due is None else due)
        pending.futures.append(future)
        pending.size += size
        timeout_s = (
            delivery_timeout_s if delivery_timeout_s is not None else self.delivery_timeout_s
        )
        pending.deadline = min(pending.deadline, loop.time() + timeout_s)
        if pending.dedup:
            self._ready.append((*slot, pending))
            self._kick()
        elif len(pending.values) >= self.batch_records or pending.size >= self.batch_bytes:
            self._seal(slot)
            self._kick()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger_s, self._linger_expired)
        return future

    async def send_batch(
        self,
        topic: str,
        partition: int,
        values: list[bytes | None],
        *,
        keys: list[bytes | None] | None = None,
        priority: str = "normal",
        delay: str | int | timedelta | None = None,
        deliver_at: datetime | int | str | None = None,
    ) -> asyncio.Future[PublishResult]:
        """Queue ready-made values for one partition as one batch, with no
        per-message future: the future gives the first message's result (the
        rest follow at consecutive offsets). For bulk loads and benchmarks;
        `delay`/`deliver_at` schedule the whole batch."""
        if self.closed:
            raise BadArgumentError("the producer is closed")
        lane = (await self.client.lanes()).index_of(priority)
        if not values:
            raise BadArgumentError("a batch needs at least one value")
        keys = keys if keys is not None else [None] * len(values)
        if len(keys) != len(values):
            raise BadArgumentError(f"{len(keys)} keys for {len(values)} values")
        size = self.client.limits.check_batch(keys, values) + RECORD_OVERHEAD_BYTES * len(values)
        now = self.client.now_ms()
        due = _due_ms(delay, deliver_at, now)
        await self._reserve(size)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PublishResult] = loop.create_future()
        pending = _Pending(
            values=values,
            keys=keys,
            headers=[None] * len(values),
            timestamps=[now if due is None else due] * len(values),
            futures=[future],
            size=size,
            deadline=loop.time() + self.delivery_timeout_s,
            delayed=due is not None,
        )
        self._ready.append((topic, partition, lane, pending))
        self._kick()
        return future

    async def flush(self) -> None:
        """Send everything queued and wait until it is stored."""
        for slot in list(self._pending):
            self._seal(slot)
        self._kick()
        while self._sending is not None and not self._sending.done():
            await asyncio.shield(self._sending)
            if self._ready:
                self._kick()

    async def close(self) -> None:
        """Send everything queued, wait until it is stored, refuse more."""
        try:
            await self.flush()
        finally:
            self.closed = True
            self.client.release(self)

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def busy(self) -> bool:
        """Whether publishes are queued or out, waiting for the broker."""
        sending = self._sending is not None and not self._sending.done()
        return bool(self._pending or self._ready or sending)

    async def abort(self) -> list[str]:
        """Stop at once: what was not stored yet fails with `UnconfirmedError`
        (returned in words); nothing is left running."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        left: list[_Pending] = [pending for *_, pending in self._ready]
        left += self._pending.values()
        self._ready, self._pending = [], {}
        found: list[str] = []
        if self._sending is not None and not self._sending.done():
            self._sending.cancel()
            await asyncio.wait([self._sending])
            found.append(f"the publish request of producer {self.producer_id} in flight")
        waiting = [f for pending in left for f in pending.futures if not f.done()]
        _fail(waiting, UnconfirmedError(f"producer {self.producer_id} closed before sending"))
        for future in waiting:
            future.exception()  # reported by the close that called this
        self.client.release(self)
        if waiting:
            found.append(f"{len(waiting)} publishes of producer {self.producer_id} not sent")
        return found

    # -- internals -----------------------------------------------------------------------

    def statistics(self) -> dict[str, int]:
        """Bytes queued and not yet settled, against `buffer_bytes_max`."""
        return {"buffered_bytes": self._buffered_bytes, "buffer_bytes_max": self.buffer_bytes_max}

    async def _reserve(self, size: int) -> None:
        """Count `size` bytes as queued, waiting while the buffer is full
        (one message bigger than the whole buffer goes when it is empty)."""
        if self._buffered_bytes and self._buffered_bytes + size > self.buffer_bytes_max:
            try:
                async with asyncio.timeout(self.block_timeout_s):
                    while self._buffered_bytes and (
                        self._buffered_bytes + size > self.buffer_bytes_max
                    ):
                        self._room.clear()
                        await self._room.wait()
            except TimeoutError:
                raise LimitError(
                    f"the producer's buffer is full: {self._buffered_bytes} bytes queued, the "
                    f"limit buffer_bytes_max is {self.buffer_bytes_max}, and none were settled "
                    f"within block_timeout_s ({self.block_timeout_s} s): the broker is slow or "
                    "unreachable"
                ) from None
        self._buffered_bytes += size

    def _release(self, pending: _Pending) -> None:
        self._buffered_bytes -= pending.size
        pending.size = 0
        self._room.set()

    def _linger_expired(self) -> None:
        self._timer = None
        if self._sending is not None and not self._sending.done():
            # the sender seals them once its request is answered: meanwhile
            # they go on filling, so an outage makes fuller batches, not more
            self._linger_due = True
            return
        for slot in list(self._pending):
            self._seal(slot)
        self._kick()

    def _seal(self, slot: tuple[str, int, int]) -> None:
        pending = self._pending.pop(slot, None)
        if pending is not None and pending.values:
            self._ready.append((*slot, pending))

    def _kick(self) -> None:
        if self._ready and (self._sending is None or self._sending.done()):
            self._sending = asyncio.get_running_loop().create_task(self._send_ready())

    async def _send_ready(self) -> None:
        while True:
            if self._linger_due:
                self._linger_due = False
                for slot in list(self._pending):
                    self._seal(slot)
            if not self._ready:
                return
            ready, self._ready = _one_request(self._ready)
            by_topic: dict[str, list[tuple[int, bytes, _Pending]]] = {}
            for topic, partition, lane, pending in ready:
                batch = self._encode(topic, partition, lane, pending)
                by_topic.setdefault(topic, []).append((partition, batch, pending))
            for topic, batches in by_topic.items():
                await self._publish(topic, batches)

    def _encode(self, topic: str, partition: int, lane: int, pending: _Pending) -> bytes:
        sequence = self._sequences.get((topic, partition), 0)
        self._sequences[(topic, partition)] = (sequence + len(pending.values)) & 0x7FFFFFFF

        return encode_batch(
            pending.values,
            keys=pending.keys,
            headers=pending.headers,
            timestamps=pending.timestamps,
            codec=self.codec,
            lane=lane,
            producer_id=self.producer_id,
            producer_epoch=0,
            base_sequence=sequence,
            expiring=pending.expiring,
            delayed=pending.delayed,
            dedup=pending.dedup,
        )

    async def _publish(self, topic: str, batches: list[tuple[int, bytes, _Pending]]) -> None:
        """Send the batches, and again (the same bytes: stored once) those
        whose answer was an outage, until each is answered or its delivery
        timeout has passed. Cancelled (abort()): the senders of what is still
        out learn it was not confirmed."""
        try:
            await self._send_until_answered(topic, batches)
        except asyncio.CancelledError:
            unconfirmed = UnconfirmedError(f"producer {self.producer_id} closed with this out")
            for _, _, pending in batches:
                if not all(future.done() for future in pending.futures):
                    self._settle(pending, unconfirmed)
            raise

    async def _send_until_answered(
        self, topic: str, batches: list[tuple[int, bytes, _Pending]]
    ) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        last_error: BaseException | None = None
        while batches:
            now = loop.time()
            if expired := [batch for batch in batches if batch[2].deadline <= now]:
                error = DeliveryTimeoutError(
                    f"not stored within the delivery timeout ({self.delivery_timeout_s} s by "
                    f"default) on {self.client.host}:{self.client.port}; it may or may not be "
                    f"stored; the last try failed with: {_described(last_error)}"
                )
                for _, _, pending in expired:
                    self._settle(pending, error)
                batches = [batch for batch in batches if batch[2].deadline > now]
                continue
            remaining_s = min(pending.deadline for _, _, pending in batches) - now
            args: list[bytes | str | int] = ["PUBBATCH", topic]
            for partition, batch, _ in batches:
                args += [partition, batch]
            try:
                reply = await self.client.call(
                    *args, timeout_s=min(self.client.request_timeout_s, remaining_s)
                )
            except (LogqError, OSError) as error:
                if isinstance(error, LogqError) and not error.retriable:
                    if len(batches) > 1:
                        # one error for the command (one partition's batches):
                        # each alone again, the stored ones answered as duplicates
                        for one in batches:
                            await self._send_until_answered(topic, [one])
                        return
                    self._settle(batches[0][2], error)
                    return
                last_error = error
            else:
                assert isinstance(reply, list) and len(reply) == len(batches)
                again = []
                for (partition, batch, pending), answer in zip(batches, reply, strict=True):
                    if isinstance(answer, RespError):
                        failure = error_from_reply(answer)
                        if failure.retriable:
                            again.append((partition, batch, pending))
                            last_error = failure
                        else:
                            self._settle(pending, failure)
                    else:
                        self._stored(topic, pending, answer)
                batches = again
                if not batches:
                    return
            attempt += 1
            remaining_s = min(pending.deadline for _, _, pending in batches) - loop.time()
            await asyncio.sleep(max(0.0, min(self.client.backoff_s(attempt), remaining_s)))

    def _stored(self, topic: str, pending: _Pending, answer: object) -> None:
        assert isinstance(answer, list)
        partition, base = int(answer[0]), int(answer[1])  # a duplicate: where the first went
        for index, future in enumerate(pending.futures):
            if not future.done():
                offset = base + index
                future.set_result(PublishResult(f"{topic}:{partition}:{offset}", partition, offset))
        self._release(pending)

    def _settle(self, pending: _Pending, error: BaseException) -> None:
        _fail(pending.futures, error)
        self._release(pending)


def _one_request(
    ready: list[tuple[str, int, int, _Pending]],
) -> tuple[list[tuple[str, int, int, _Pending]], list[tuple[str, int, int, _Pending]]]:
    """The batches of the next request, and those left for later (in order):
    at most BATCHES_PER_PARTITION_MAX of each partition."""
    taken: list[tuple[str, int, int, _Pending]] = []
    left: list[tuple[str, int, int, _Pending]] = []
    counts: Counter[tuple[str, int]] = Counter()
    for item in ready:
        partition = (item[0], item[1])
        if counts[partition] < BATCHES_PER_PARTITION_MAX:
            counts[partition] += 1
            taken.append(item)
        else:
            left.append(item)
    return taken, left


def _described(error: BaseException | None) -> str:
    if isinstance(error, LogqError):
        return f"{error.code} {error.message}"
    return f"{type(error).__name__}: {error}" if error is not None else "no answer"


def _fail(futures: list[asyncio.Future[PublishResult]], error: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)
