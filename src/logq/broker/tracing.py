"""Message tracing: every message's lifecycle, recorded per range, queried by id.

Delivery code calls `Tracer.record(...)` as it changes state; records wait in a
buffer that goes to the trace log with the next delivery-state commit (one
append per commit) or the next timer tick. `trace(id)` rebuilds one
message's timeline: its publish (from the message itself), then every
record whose range holds its offset. A topic with `trace: false` records
nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from logq.broker.core import Core
from logq.broker.expiry import HEADER_EXPIRES_AT
from logq.broker.messages import MessageId
from logq.broker.topic import Topic
from logq.errors import LogqError, MessageNotFoundError
from logq.log import LogError, decode_batch
from logq.log.batch import DELAYED, NO_PRODUCER_ID, read_header
from logq.state.ranges import Range
from logq.state.trace import TraceLog, TraceRecord

logger = logging.getLogger(__name__)

# What a record may say happened, and how a timeline names it.
KINDS = {
    "delayed": "DELAYED",
    "delivered": "DELIVERED",
    "redelivered": "REDELIVERED",
    "held_back": "HELD BACK",
    "lease_expired": "LEASE EXPIRED",
    "nacked": "NACKED",
    "acked": "ACKED",
    "rejected": "REJECTED",
    "expired": "EXPIRED",
    "dead_lettered": "DEAD-LETTERED",
    "redriven": "REDRIVEN",
    "lost": "LOST TO DAMAGE",
    "retention_deleted": "DELETED BY RETENTION",
}
SETTLING = ("acked", "rejected", "dead_lettered", "expired")


class Tracer:
    """Records what happens to messages, and answers a message's timeline."""

    def __init__(self, core: Core, trace_log: TraceLog) -> None:
        self._core = core
        self.log = trace_log
        self._buffer: list[TraceRecord] = []

    def record(
        self,
        kind: str,
        topic: Topic,
        partition: int,
        ranges: list[Range],
        *,
        group: str = "",
        consumer: str = "",
        attempt: int = 0,
        detail: str = "",
        until_ms: int = 0,
    ) -> None:
        if topic.settings.trace and ranges:
            self._buffer.append(
                TraceRecord(
                    self._core.clock.now_ms(),
                    kind,
                    topic.name,
                    partition,
                    ranges,
                    group,
                    consumer,
                    attempt,
                    detail,
                    until_ms,
                )
            )

    def flush(self) -> None:
        """Write what is buffered as one batch (the log fsyncs it by interval)."""
        if not self._buffer:
            return
        records, self._buffer = self._buffer, []
        try:
            self.log.append(records, self._core.clock.now_ms())
        except (LogError, OSError) as error:  # the trace is not worth failing a delivery for
            logger.warning("trace records dropped: %s", error)

    async def trace(self, message_id: str) -> dict[str, Any]:
        """The timeline of one message: published, then what happened to it, per group."""
        parsed = MessageId.parse(message_id)
        topic = self._core.topics.get(parsed.topic)
        if topic is None or not 0 <= parsed.partition < len(topic.partitions):
            raise MessageNotFoundError(f"no message {message_id!r}")
        log = topic.partitions[parsed.partition].log
        if parsed.offset >= topic.partitions[parsed.partition].readable_end():
            raise MessageNotFoundError(f"no message {message_id!r}")
        self.flush()
        published = await self._core.run(lambda: _published(log, parsed.offset))
        since = 0
        if published is not None:
            since = published["at_ms"]
            if published["delayed"]:  # its timestamp is its due time: look back for the publish
                since -= topic.settings.max_delay_ms
        records, truncated = await self._core.run(
            lambda: self.log.find(parsed.topic, parsed.partition, parsed.offset, since)
        )
        events: list[dict[str, Any]] = []
        start: int | None = None
        if published is not None:
            delayed = next((r for r in records if r.kind == "delayed"), None)
            start = delayed.at_ms if delayed is not None else published["at_ms"]
            events.append({"at_ms": start, "event": "PUBLISHED", **published["detail"]})
            if published["at_ms"] > start:
                events.append({"at_ms": start, "event": "DELAYED", "until_ms": published["at_ms"]})
        events += [_event(record) for record in records if record.kind != "delayed"]
        attempts = max((r.attempt for r in records if r.kind.endswith("delivered")), default=0)
        settled = [r.at_ms for r in records if r.kind in SETTLING]
        return {
            "id": message_id,
            "topic": parsed.topic,
            "partition": parsed.partition,
            "offset": parsed.offset,
            "retained": published is not None,
            "traced": topic.settings.trace,
            "events": events,
            "delivery_attempts": attempts,
            "total_latency_ms": (max(settled) - start) if settled and start is not None else None,
            "truncated": truncated,
        }


def _event(record: TraceRecord) -> dict[str, Any]:
    event: dict[str, Any] = {"at_ms": record.at_ms, "event": KINDS.get(record.kind, record.kind)}
    if record.group:
        event["group"] = record.group
    if record.consumer:
        event["consumer"] = record.consumer
    if record.attempt:
        event["attempt"] = record.attempt
    if record.detail:
        event["reason" if record.kind != "dead_lettered" else "detail"] = record.detail
    if record.until_ms:
        event["until_ms"] = record.until_ms
    return event


def _published(log: Any, offset: int) -> dict[str, Any] | None:
    """When and by whom the message at `offset` was published (None once retention took it)."""
    if offset < log.first_offset:
        return None
    try:
        data = log.read(offset, 1).data
    except (LogError, LogqError):
        return None
    position = 0
    while position < len(data):
        header = read_header(data, position)
        if header.base_offset <= offset <= header.last_offset:
            batch = decode_batch(data, position)
            index = offset - header.base_offset
            headers = batch.records()[index].headers
            detail: dict[str, Any] = {}
            if header.producer_id != NO_PRODUCER_ID:
                detail["producer"] = header.producer_id
            expires = headers.get(HEADER_EXPIRES_AT, "")
            if expires.isdecimal():
                detail["expires_at_ms"] = int(expires)
            return {
                "at_ms": batch.timestamps[index],
                "detail": detail,
                "delayed": bool(header.attributes & DELAYED),
            }
        position += header.size
    return None
