"""The batching producer: messages in, record batches out, futures back.

Messages wait per (topic, partition, lane) until `batch_records` or
`batch_bytes` fill a batch, or `linger_ms` passes. A flush sends every ready
batch of a topic in one `PUBBATCH`. Each batch carries this producer's id
and a per-partition sequence, so a batch resent after a lost connection is
stored once (idempotent producer): one request is in flight at a time, and
a failed one is resent as it was, in order, before anything newer.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from logq.client.records import PublishResult
from logq.durations import parse_duration_ms, parse_time_ms
from logq.errors import BadArgumentError, UnconfirmedError
from logq.log import compression
from logq.log.batch import encode_batch

if TYPE_CHECKING:
    from logq.client.async_client import AsyncClient

HEADER_EXPIRES_AT = "logq-expires-at"  # epoch ms; the broker checks it before delivering
HEADER_DEDUP_ID = "logq-dedup-id"  # stored once within the topic's dedup window
CODECS = {"none": compression.NONE, "zstd": compression.ZSTD, "lz4": compression.LZ4}


@dataclass(slots=True)
class _Pending:
    values: list[bytes | None] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    headers: list[dict[str, str] | None] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    futures: list[asyncio.Future[PublishResult]] = field(default_factory=list)
    size: int = 0
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
    ) -> None:
        if compression not in CODECS:
            raise BadArgumentError(
                f"compression must be one of {sorted(CODECS)}, got {compression!r}"
            )
        self.client = client
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
    ) -> asyncio.Future[PublishResult]:
        """Queue one message; the future resolves once the broker stored it durably.

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
        future: asyncio.Future[PublishResult] = asyncio.get_running_loop().create_future()
        slot = (topic, partition, lane)
        if dedup_id is not None:
            # alone in its batch: the broker stores it whole or not at all
            pending = _Pending(dedup=True)
            headers = {**(headers or {}), HEADER_DEDUP_ID: dedup_id}
        else:
            pending = self._pending.get(slot) or self._pending.setdefault(slot, _Pending())
        now_ms = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        due = _due_ms(delay, deliver_at, now_ms)
        if due is not None:
            pending.delayed = True
        if ttl is not None:
            expires = now_ms + duration_ms(ttl, "ttl")
            headers = {**(headers or {}), HEADER_EXPIRES_AT: str(expires)}
            pending.expiring = True
        pending.values.append(value_bytes)
        pending.keys.append(key_bytes)
        pending.headers.append(headers)
        pending.timestamps.append(now_ms if due is None else due)
        pending.futures.append(future)
        pending.size += len(value_bytes or b"") + len(key_bytes or b"") + 16
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
        future: asyncio.Future[PublishResult] = asyncio.get_running_loop().create_future()
        now = int(time.time() * 1000)
        due = _due_ms(delay, deliver_at, now)
        pending = _Pending(
            values=values,
            keys=keys if keys is not None else [None] * len(values),
            headers=[None] * len(values),
            timestamps=[now if due is None else due] * len(values),
            futures=[future],
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

    def _linger_expired(self) -> None:
        self._timer = None
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
        while self._ready:
            ready, self._ready = self._ready, []
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
        args: list[bytes | str | int] = ["PUBBATCH", topic]
        for partition, batch, _ in batches:
            args += [partition, batch]
        try:
            reply = await self.client.call(*args)
        except Exception as error:
            for _, _, pending in batches:
                _fail(pending.futures, error)
            return
        except asyncio.CancelledError:  # abort(): the senders learn it was not confirmed
            unconfirmed = UnconfirmedError(f"producer {self.producer_id} closed with this out")
            for _, _, pending in batches:
                _fail(pending.futures, unconfirmed)
            raise
        assert isinstance(reply, list)
        for (_, _, pending), result in zip(batches, reply, strict=True):
            partition, base = int(result[0]), int(result[1])  # a duplicate: where the first went
            for index, future in enumerate(pending.futures):
                if not future.done():
                    offset = base + index
                    future.set_result(
                        PublishResult(f"{topic}:{partition}:{offset}", partition, offset)
                    )


def _fail(futures: list[asyncio.Future[PublishResult]], error: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)
