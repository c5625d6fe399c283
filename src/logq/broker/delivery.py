"""A delivery: offsets of a partition handed out with the batches that hold them.

What every delivery component shares (receiving.py, settlement.py,
leases.py, dead_lettering.py): the `Delivery` a receive hands out, reading
its batches around damage on disk, decoding it into messages, and the
lookups of delivery state that settling and releasing need. Receives hand
out ranges of offsets and the stored batches that hold them: the server
does per-batch work, the consumer decodes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import TypeVar

from logq.broker.clock import Clock
from logq.broker.damage import Run, read_around_damage
from logq.broker.expiry import expires_at_ms
from logq.broker.group import Group
from logq.broker.messages import Message, message_from_record
from logq.broker.topic import Topic
from logq.broker.tracing import Tracer
from logq.lanes import DEFAULT_LANES, Lanes
from logq.log import ReadResult, decode_batch
from logq.log.batch import EXPIRING, iter_headers
from logq.state.delivery import Lease, PartitionDelivery
from logq.state.events import Event, Held, Leased, Lost, Released, Settled
from logq.state.held import pack_offsets, unpack_offsets
from logq.state.ranges import Range, ranges_of

logger = logging.getLogger(__name__)
T = TypeVar("T")
DLQ_CONSUMER = "logq.dead-letter"
REDRIVE_CONSUMER = "logq.redrive"  # holds of letters being redriven (redrive.py)
DLQ_HOLD_MS = 60_000  # offsets being dead-lettered stay leased to nobody this long
READ_CHUNK_BYTES = 1 << 20
REASON_LENGTH_MAX = 1000
HEADER_ORIGIN_ID = "logq-origin-id"
HEADER_GROUP = "logq-group"
HEADER_ATTEMPTS = "logq-attempts"
HEADER_REASON = "logq-reason"
HEADER_DEAD_AT = "logq-dead-lettered-at"


@dataclass(frozen=True, slots=True)
class Delivery:
    """Offsets [start, end) of one partition, handed out as `attempt` under
    lease token `lease`, with the stored batches that hold them (`data` may
    start before `start` and end after `end`: the consumer keeps only the
    offsets in range). `ttl_ms` is the topic's TTL when it was handed out (0
    for none): with each record's timestamp and `logq-expires-at` header it
    tells the consumer when the record expires."""

    topic: str
    partition: int
    start: int
    end: int
    attempt: int
    data: bytes
    lease: int = 0
    ttl_ms: int = 0


async def fill(
    run: Run[ReadResult], topic: Topic, delivery: Delivery
) -> tuple[list[Delivery], list[Range]]:
    """The stored batches that hold [start, end), as deliveries cut around
    ranges lost to damage on disk (returned apart)."""
    log = topic.partitions[delivery.partition].log
    found = await read_around_damage(run, log, delivery.start, delivery.end, READ_CHUNK_BYTES)
    parts = [
        Delivery(
            delivery.topic,
            delivery.partition,
            start,
            end,
            delivery.attempt,
            data,
            delivery.lease,
            delivery.ttl_ms,
        )
        for start, end, data in found.parts
    ]
    return parts, found.damaged


def lose(
    group: Group, topic: Topic, damaged: list[tuple[int, Range]], tracer: Tracer
) -> list[Event]:
    """Record offsets lost to damage on disk as lost (applied; the caller journals)."""
    by_partition: defaultdict[int, list[Range]] = defaultdict(list)
    for partition, lost in damaged:
        by_partition[partition].append(lost)
    events: list[Event] = []
    for partition, ranges in sorted(by_partition.items()):
        event = Lost(group.key, partition, ranges)
        group.deliveries[partition].apply(event)
        events.append(event)
        tracer.record("lost", topic, partition, ranges, group=group.name, detail="damaged on disk")
        group.counters["lost_to_damage"] += sum(end - start for start, end in ranges)
    return events


def hold_events(
    group_key: str, partition: int, attempt: int, offsets: list[int], dues: list[int]
) -> list[Held | Released]:
    """Offsets of a delivery that are not due yet, as the events that hold
    them back: one `Held` for a first delivery; for a later attempt (a
    redelivery that met a message not due), a `Released` per due time."""
    if attempt == 1:
        return [Held(group_key, partition, pack_offsets(offsets), pack_offsets(dues))]
    by_due: defaultdict[int, list[int]] = defaultdict(list)
    for offset, due in zip(offsets, dues, strict=True):
        by_due[due].append(offset)
    return [
        Released(group_key, partition, ranges_of(found), attempt - 1, due)
        for due, found in sorted(by_due.items())
    ]


def held_back_by_time(event: Held | Released) -> list[tuple[int, int, list[Range]]]:
    """(partition, due time, ranges) of a hold-back, for its trace."""
    if isinstance(event, Released):
        return [(event.partition, event.not_before_ms, event.ranges)]
    by_due: defaultdict[int, list[int]] = defaultdict(list)
    for offset, due in zip(
        unpack_offsets(event.offsets), unpack_offsets(event.due_ms), strict=True
    ):
        by_due[due].append(offset)
    return [(event.partition, due, ranges_of(found)) for due, found in sorted(by_due.items())]


def attempt_of(event: Leased | Settled) -> int:
    return event.attempt if isinstance(event, Leased) else 1


def lease_token_of(event: Leased | Settled) -> int:
    return event.token if isinstance(event, Leased) else 0  # auto-ack: nothing to settle


def unsettled_delivered(state: PartitionDelivery, ranges: list[Range]) -> list[Range]:
    """Parts of `ranges` that were handed out and are not settled."""
    todo: list[Range] = []
    for start, end in ranges:
        todo.extend(state.delivered_unsettled(start, end))
    return todo


def leased_parts(state: PartitionDelivery, ranges: list[Range]) -> list[tuple[Range, int]]:
    """Unsettled parts of `ranges` that are in flight, with their attempt."""
    parts: list[tuple[Range, int]] = []
    for start, end in unsettled_delivered(state, ranges):
        for lease in state.leases:
            if lease.end <= start or lease.start >= end or lease.consumer == DLQ_CONSUMER:
                continue
            low, high = max(start, lease.start), min(end, lease.end)
            parts.extend(((a, b), lease.attempt) for a, b in state.unsettled_ranges(low, high))
    return parts


def decode_delivery(delivery: Delivery, lanes: Lanes = DEFAULT_LANES) -> list[Message]:
    """The messages of a delivery: records of its batches within [start, end),
    each with when it expires."""
    messages: list[Message] = []
    ttl_ms = delivery.ttl_ms
    for position, header in iter_headers(delivery.data):
        if header.next_offset <= delivery.start or header.base_offset >= delivery.end:
            continue
        marked = bool(header.attributes & EXPIRING)
        for record in decode_batch(delivery.data, position).records():
            if delivery.start <= record.offset < delivery.end:
                if marked:
                    expires = expires_at_ms(record.timestamp, record.headers, ttl_ms)
                else:
                    expires = record.timestamp + ttl_ms + 1 if ttl_ms else None
                messages.append(
                    message_from_record(
                        delivery.topic,
                        delivery.partition,
                        record,
                        header.lane,
                        delivery.attempt,
                        lanes,
                        delivery.lease,
                        expires,
                    )
                )
    return messages


def by_lease(
    state: PartitionDelivery, ranges: list[Range]
) -> list[tuple[Lease | None, list[Range]]]:
    """`ranges` split by the lease that holds each part (None: not leased)."""
    found: list[tuple[Lease | None, list[Range]]] = []
    for start, end in ranges:
        at = start
        while at < end:
            lease = state.lease_of(at)
            stop = min(end, lease.end) if lease else _next_lease_start(state, at, end)
            if found and found[-1][0] is lease:
                found[-1][1].append((at, stop))
            else:
                found.append((lease, [(at, stop)]))
            at = stop
    return found


def _next_lease_start(state: PartitionDelivery, at: int, end: int) -> int:
    return min((lease.start for lease in state.leases if at < lease.start < end), default=end)


async def changed_or_until(changed: asyncio.Event, clock: Clock, deadline: float) -> None:
    """Wait until `changed` is set or `clock` reaches `deadline`, whichever is first."""
    waiters = (
        asyncio.ensure_future(changed.wait()),
        asyncio.ensure_future(clock.sleep_until(deadline)),
    )
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
