"""Publishing: messages placed on partitions and stored, durably, once.

`publish` places each message (explicit partition, key hash, else one
partition per call, round-robin across calls), encodes one batch per
partition and lane and stores each through `publish_batch`, which is also
the native protocol's path for batches its producers built: the batch is
checked (sizes, headers the broker reserves, delay), stored through the
topic's idempotent append, and counted. A batch with a dedup id is stored
unless the id was seen within the topic's window (dedup.py); the first
such batch after a snapshot first marks the partition's state log, so a
restart knows where to look for ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from logq.broker.catalog import Catalog
from logq.broker.core import Core
from logq.broker.dedup import DEDUP_ID_LENGTH_MAX, HEADER_DEDUP_ID, DedupTable, Seen, dedup_id_of
from logq.broker.delays import check_delay
from logq.broker.errors import from_log_error
from logq.broker.expiry import HEADER_EXPIRES_AT
from logq.broker.messages import OutgoingMessage, PublishResult
from logq.broker.topic import Partition, Topic
from logq.broker.tracing import Tracer
from logq.durations import parse_duration_ms
from logq.errors import BadArgumentError, LogqError, TooBigError
from logq.log import LogError, encode_batch
from logq.log.batch import (
    DEDUP,
    DELAYED,
    EXPIRING,
    check_record_sizes,
    header_names_with,
    read_header,
)
from logq.partitioning import partition_for_key

RESERVED_HEADER_PREFIX = "logq-"


class BatchResult:
    __slots__ = ("base_offset", "duplicate", "last_offset", "partition")

    def __init__(self, partition: int, base_offset: int, last_offset: int, duplicate: bool) -> None:
        self.partition = partition
        self.base_offset = base_offset
        self.last_offset = last_offset
        self.duplicate = duplicate


class Publisher:
    """Stores what producers publish; see the module doc."""

    def __init__(self, core: Core, tracer: Tracer, catalog: Catalog) -> None:
        self._core = core
        self._tracer = tracer
        self._catalog = catalog

    async def publish(
        self, topic_name: str, messages: Sequence[OutgoingMessage], *, as_broker: bool = False
    ) -> list[PublishResult]:
        """Place each message (explicit partition, key hash, else round-robin:
        the keyless messages of one call go to one partition, the next call's
        to the next, so a batch stays one append), store them as one batch
        per partition and lane, durably."""
        self._core.check_open()
        self._core.disk.check_publish()
        topic = await self._topic_for_publish(topic_name, as_broker=as_broker)
        if not messages:
            raise BadArgumentError("nothing to publish: give at least one message")
        if len(messages) > self._core.config.publish_messages_max:
            raise TooBigError(
                f"{len(messages)} messages in one publish, the limit is {self._core.config.publish_messages_max}"
            )
        now_ms = self._core.clock.now_ms()
        # partition -> runs of consecutive messages that share a batch, in
        # request order: a partition's runs are stored one after another, so
        # its messages lie in the order they came whatever path each takes
        runs: dict[int, list[tuple[int, bool, list[int]]]] = {}
        size_max = self._core.config.message_bytes_max
        max_delay = topic.settings.max_delay_ms
        partitions = len(topic.partitions)
        lane_of: dict[str, int] = {}
        sticky: int | None = None
        for index, message in enumerate(messages):  # per message: keep it lean
            value, key = message.value, message.key
            if (len(value) if value else 0) + (len(key) if key else 0) > size_max:
                size = len(value or b"") + len(key or b"")
                raise TooBigError(f"message {index} is {size} bytes, the limit is {size_max}")
            if key is not None and len(key) > self._core.config.key_bytes_max:
                raise TooBigError(
                    f"message {index} has a key of {len(key)} bytes, the limit "
                    f"key_bytes_max is {self._core.config.key_bytes_max}"
                )
            if message.headers:
                self._check_headers(index, message.headers, as_broker)
            if message.partition is not None:
                partition = topic.partition(message.partition).index
            elif key is not None:
                partition = partition_for_key(key, partitions)
            else:  # keyless: the whole call sticks to one partition, as Kafka's producer does
                if sticky is None:
                    sticky = topic.next_round_robin()
                partition = sticky
            if message.deliver_at_ms is not None and message.deliver_at_ms - now_ms > max_delay:
                raise BadArgumentError(
                    f"message {index} is due in {message.deliver_at_ms - now_ms} ms, "
                    f"past the topic's max_delay of {max_delay} ms"
                )
            # a message with a dedup id travels alone in its batch (see dedup.py)
            alone = message.dedup_id is not None
            lane = lane_of.get(message.priority)
            if lane is None:
                lane = lane_of[message.priority] = self._core.lanes.index_of(message.priority)
            partition_runs = runs.get(partition)
            if partition_runs is None:
                runs[partition] = [(lane, alone, [index])]
            elif alone or partition_runs[-1][0] != lane or partition_runs[-1][1]:
                partition_runs.append((lane, alone, [index]))
            else:
                partition_runs[-1][2].append(index)
        results: list[PublishResult | None] = [None] * len(messages)

        async def store(partition: int, lane: int, indexes: list[int]) -> None:
            chosen = [messages[i] for i in indexes]
            expiring = any(m.ttl_ms is not None for m in chosen)
            dedup = chosen[0].dedup_id is not None
            batch = encode_batch(
                [m.value for m in chosen],
                keys=[m.key for m in chosen],
                headers=[_with_dedup(_with_expiry(m, now_ms), m) for m in chosen]
                if expiring or dedup
                else [m.headers for m in chosen],
                timestamps=[m.deliver_at_ms or m.timestamp_ms or now_ms for m in chosen],
                lane=lane,
                expiring=expiring,
                delayed=any(m.deliver_at_ms is not None for m in chosen),
                dedup=dedup,
            )
            # the topic was checked above: a dead-letter topic only as_broker
            appended = await self.publish_batch(
                topic_name, partition, batch, as_broker=True, disk_checked=True
            )
            stored_in = appended.partition  # a duplicate answers where the first went
            prefix = f"{topic_name}:{stored_in}:"
            for offset, index in enumerate(indexes, appended.base_offset):
                results[index] = PublishResult(f"{prefix}{offset}", stored_in, offset)

        async def store_runs(
            partition: int, partition_runs: list[tuple[int, bool, list[int]]]
        ) -> None:
            for lane, _, indexes in partition_runs:
                await store(partition, lane, indexes)

        outcomes = await asyncio.gather(
            *(store_runs(p, r) for p, r in runs.items()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise _partly_stored(outcome, results)
        return [result for result in results if result is not None]

    def _check_headers(self, index: int, headers: dict[str, str], as_broker: bool) -> None:
        """A message's header count and encoded size against their limits;
        headers under `logq-` are the broker's to write."""
        if not as_broker:
            for name in headers:
                if name.startswith(RESERVED_HEADER_PREFIX):
                    raise BadArgumentError(
                        f"message {index} has the header {name[:64]!r}: headers under "
                        f"{RESERVED_HEADER_PREFIX} are written by the broker only "
                        "(ttl and dedup_id set the ones a publisher may ask for)"
                    )
        config = self._core.config
        if len(headers) > config.header_count_max:
            raise TooBigError(
                f"message {index} has {len(headers)} headers, the limit "
                f"header_count_max is {config.header_count_max}"
            )
        size = sum(len(k.encode()) + len(v.encode()) + 6 for k, v in headers.items()) + 2
        if size > config.header_bytes_max:
            raise TooBigError(
                f"message {index} has {size} bytes of headers, the limit "
                f"header_bytes_max is {config.header_bytes_max}"
            )

    async def _topic_for_publish(self, name: str, *, as_broker: bool = False) -> Topic:
        if name in self._core.dead_letter_topics and not as_broker:
            raise BadArgumentError(
                f"{name!r} is a dead-letter topic: only the broker writes to it"
                " (redrive or requeue move its letters back)"
            )
        if name not in self._core.topics and self._core.config.auto_create_topics:
            return await self._catalog.create_topic(name, exist_ok=True)
        return self._core.topic(name)

    async def publish_batch(
        self,
        topic_name: str,
        partition: int,
        batch: bytes,
        *,
        as_broker: bool = False,
        disk_checked: bool = False,
    ) -> BatchResult:
        """Store one producer-built batch as it came (the native fast path).
        `disk_checked`: the free-space guard already let in the request this
        batch is part of (a publish is let in or refused whole)."""
        self._core.check_open()
        if not disk_checked:
            self._core.disk.check_publish()
        topic = await self._topic_for_publish(topic_name, as_broker=as_broker)
        target = topic.partition(partition)
        now_ms = self._core.clock.now_ms()
        check_delay(batch, now_ms, topic.settings.max_delay_ms)
        try:
            check_record_sizes(
                batch,
                message_bytes_max=self._core.config.message_bytes_max,
                key_bytes_max=self._core.config.key_bytes_max,
                header_bytes_max=self._core.config.header_bytes_max,
                header_count_max=self._core.config.header_count_max,
            )
            if not as_broker:
                _check_reserved_headers(batch)
            log_config = self._core.config.log
            dedup_id = dedup_id_of(batch, log_config.batch_bytes_max, log_config.batch_records_max)
        except LogError as error:
            raise from_log_error(error) from None
        if dedup_id is not None:
            return await self._publish_once(topic, target, batch, dedup_id, now_ms)
        try:
            result, duplicate = await topic.append(target, batch)
        except LogError as error:
            raise from_log_error(error) from None
        if not duplicate:
            self._stored(topic, target, batch, result.base_offset, result.next_offset)
        return BatchResult(partition, result.base_offset, result.last_offset, duplicate)

    def _stored(self, topic: Topic, target: Partition, batch: bytes, start: int, end: int) -> None:
        """Count a newly stored batch; trace its publish if it is delayed (the
        record timestamps of a delayed batch are due times, not publish times)."""
        self._core.metrics.published(topic.name, end - start, len(batch))
        self._core.disk.spend(len(batch))
        state = target.state
        if state is not None and state.dedup_marked:  # the tail a restart would read grows
            state.data_bytes_since_mark += len(batch)
            if state.wants_dedup_snapshot(self._core.config.snapshot_dedup_ids):
                self._core.state_writer.start_snapshot(topic, target)
        if read_header(batch).attributes & DELAYED:
            self._tracer.record("delayed", topic, target.index, [(start, end)])

    async def _publish_once(
        self, topic: Topic, target: Partition, batch: bytes, dedup_id: str, now_ms: int
    ) -> BatchResult:
        """Store a dedup-marked batch unless its id was seen within the window."""
        table = topic.dedup
        window_ms = topic.settings.dedup_window_ms
        first = table.lookup(dedup_id, now_ms)
        if isinstance(first, asyncio.Future):
            first = await asyncio.shield(first)
        if first is not None:
            return BatchResult(first.partition, first.offset, first.offset, True)
        table.claim(dedup_id)
        target.dedup_in_flight += 1
        try:
            await self._mark_dedup(topic, target)
            result, duplicate = await topic.append(target, batch)
        except LogError as error:
            self._unclaim(table, target, dedup_id, error)
            raise from_log_error(error) from None
        except BaseException as error:
            self._unclaim(table, target, dedup_id, error)
            raise
        table.settle(dedup_id, Seen(target.index, result.base_offset, now_ms + window_ms))
        target.dedup_in_flight -= 1
        state = topic.state_of(target.index)
        state.dedup_ids_since_snapshot += 1
        if state.wants_dedup_snapshot(self._core.config.snapshot_dedup_ids):
            self._core.state_writer.start_snapshot(topic, target)
        if not duplicate:
            self._stored(topic, target, batch, result.base_offset, result.next_offset)
        return BatchResult(target.index, result.base_offset, result.last_offset, duplicate)

    @staticmethod
    def _unclaim(table: DedupTable, target: Partition, dedup_id: str, error: BaseException) -> None:
        table.settle(dedup_id, None, error)
        target.dedup_in_flight -= 1

    async def _mark_dedup(self, topic: Topic, target: Partition) -> None:
        """Make sure the partition's state log says, durably, that its data
        log may hold dedup batches past its last snapshot: once per snapshot,
        before the first such batch is stored (recovery reads the data log's
        tail only where a mark says so)."""
        state = topic.state_of(target.index)
        if state.dedup_marked:
            return
        mark = target.dedup_mark
        if mark is None:
            end = target.resolved_end
            batch = state.dedup_mark_batch(
                target.log.next_offset if end is None else end, self._core.clock.now_ms()
            )
            mark = target.dedup_mark = self._core.writer.write(state.log, state.log_id, batch)
        try:
            await asyncio.shield(mark)
        except OSError as error:
            if target.dedup_mark is mark:
                target.dedup_mark = None  # the next publish tries again
            raise self._core.disk.storage_error(error) from error
        except BaseException:
            if mark.done() and target.dedup_mark is mark:
                target.dedup_mark = None
            raise
        if target.dedup_mark is mark:
            state.dedup_marked = True


def _check_reserved_headers(batch: bytes) -> None:
    """A producer-built batch may carry only the reserved headers its
    producer writes for a TTL and a dedup id, in their form and with the
    batch marked for them; nothing else under `logq-`."""
    found = header_names_with(batch, RESERVED_HEADER_PREFIX.encode())
    if not found:
        return
    attributes = read_header(batch).attributes
    for name, value in found.items():
        if (
            name == HEADER_EXPIRES_AT
            and attributes & EXPIRING
            and value.isascii()
            and value.isdigit()
        ):
            continue
        if name == HEADER_DEDUP_ID and attributes & DEDUP:
            continue
        raise BadArgumentError(
            f"a record has the header {name[:64]!r}: headers under {RESERVED_HEADER_PREFIX} are "
            "written by the broker only (a producer writes logq-expires-at and logq-dedup-id "
            "for a ttl and a dedup_id, in a batch marked for them)"
        )


def _with_dedup(headers: dict[str, str], message: OutgoingMessage) -> dict[str, str]:
    if message.dedup_id is None:
        return headers
    if not 1 <= len(message.dedup_id) <= DEDUP_ID_LENGTH_MAX:
        raise BadArgumentError(f"dedup_id must be 1..{DEDUP_ID_LENGTH_MAX} characters")
    return {**headers, HEADER_DEDUP_ID: message.dedup_id}


def _with_expiry(message: OutgoingMessage, now_ms: int) -> dict[str, str]:
    if message.ttl_ms is None:
        return message.headers
    ttl_ms = parse_duration_ms(message.ttl_ms, name="ttl")
    return {**message.headers, HEADER_EXPIRES_AT: str(now_ms + ttl_ms)}


def _partly_stored(error: BaseException, results: list[PublishResult | None]) -> BaseException:
    """The error of a publish whose batches partly failed, saying which of
    its messages were stored all the same (they stay: a retry of those
    would store them twice)."""
    stored = [(index, result) for index, result in enumerate(results) if result is not None]
    if (
        not stored
        or not isinstance(error, LogqError)
        or type(error).__init__ is not LogqError.__init__
    ):
        return error
    indexes = ", ".join(str(index) for index, _ in stored)
    partial = type(error)(
        f"{error.message}; messages {indexes} of this publish were stored (see `stored`),"
        " the others were not"
    )
    partial.stored = [
        {"index": index, "id": r.id, "partition": r.partition, "offset": r.offset}
        for index, r in stored
    ]
    return partial
