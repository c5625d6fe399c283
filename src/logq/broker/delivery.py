"""Delivery: receive, ack, nack, reject, extend, seek, lease expiry, dead letters.

Each operation turns a request into delivery-state events, applies them to
memory at once (before any await, so concurrent requests see them), then
journals them and answers only once the journal is durable. Receives hand
out ranges of offsets and the stored batches that hold them: the server does
per-batch work, the consumer decodes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from logq.broker.clock import Clock
from logq.broker.config import BrokerConfig
from logq.broker.coordination import CoordinationMixin
from logq.broker.damage import read_around_damage, without
from logq.broker.delays import held_back
from logq.broker.disk import DiskGuard
from logq.broker.expiry import expired_offsets, expires_at_ms
from logq.broker.group import Group
from logq.broker.lane_index import (
    forget_loaded,
    forget_settled,
    load_lanes,
)
from logq.broker.messages import (
    Message,
    OutgoingMessage,
    message_from_record,
)
from logq.broker.metrics import Metrics
from logq.broker.receipts import (
    Named,
    Stale,
    check_named,
    current_parts,
    named_deliveries,
    stale_error,
)
from logq.broker.settings import GroupMode, check_consumer_name
from logq.broker.state_writer import StateWriter
from logq.broker.topic import Topic
from logq.broker.tracing import TracingMixin
from logq.broker.wheel import TimingWheel
from logq.durations import parse_duration_ms, parse_time_ms
from logq.errors import BadArgumentError, LogqError, StaleDeliveryError
from logq.lanes import DEFAULT_LANES, Lanes
from logq.log import AppendResult, LogError, StorageBackend, decode_batch
from logq.log.batch import EXPIRING, iter_headers
from logq.state.delivery import Lease, PartitionDelivery
from logq.state.events import Event, Extended, Held, Leased, Lost, Released, Seeked, Settled
from logq.state.held import pack_offsets, unpack_offsets
from logq.state.lane_guard import LaneGuard
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


class DeliveryMixin(CoordinationMixin, TracingMixin):
    """The delivery half of the Broker (see broker.py for the rest)."""

    config: BrokerConfig
    clock: Clock
    topics: dict[str, Topic]
    groups: dict[str, Group]
    metrics: Metrics
    state_writer: StateWriter
    _random: random.Random
    scheduler: TimingWheel[str]
    held_wake_ups: dict[tuple[str, int], int]  # (group key, partition) -> due time on the wheel
    lanes: Lanes
    backend: StorageBackend
    disk: DiskGuard

    if TYPE_CHECKING:

        async def run(self, function: Callable[[], T]) -> T: ...
        def topic(self, name: str) -> Topic: ...
        def group(self, topic_name: str, name: str) -> Group: ...
        async def group_for_receive(self, topic_name: str, name: str) -> Group: ...
        async def publish(
            self, topic_name: str, messages: Sequence[OutgoingMessage], *, as_broker: bool = False
        ) -> list[Any]: ...
        async def create_topic(
            self,
            name: str,
            settings: dict[str, Any] | None = None,
            *,
            exist_ok: bool = False,
            internal: bool = False,
        ) -> Topic: ...
        def dlq_name(self, topic_name: str) -> str: ...
        def _check_open(self) -> None: ...

    # -- receiving --------------------------------------------------------------------

    async def receive_raw(
        self,
        topic_name: str,
        group_name: str,
        consumer: str,
        *,
        max_messages: int = 1,
        wait_ms: int = 0,
        visibility_timeout_ms: int | None = None,
    ) -> list[Delivery]:
        """Lease up to `max_messages` to `consumer`, waiting up to `wait_ms` for some."""
        self._check_open()
        check_consumer_name(consumer)
        limit = self.config.receive_messages_max
        if (
            isinstance(max_messages, bool)
            or not isinstance(max_messages, int)
            or not 1 <= max_messages <= limit
        ):
            raise BadArgumentError(f"max must be within 1..{limit}, got {max_messages!r}")
        wait_ms = parse_duration_ms(wait_ms, name="wait")
        if wait_ms > self.config.receive_wait_ms_max:
            raise BadArgumentError(
                f"wait is {wait_ms} ms, the limit is {self.config.receive_wait_ms_max} ms"
            )
        topic = self.topic(topic_name)
        group = await self.group_for_receive(topic_name, group_name)
        lease_ms = (
            parse_duration_ms(visibility_timeout_ms, name="visibility_timeout")
            if visibility_timeout_ms is not None
            else group.visibility_timeout_ms(topic.settings)
        )
        if not 1 <= lease_ms <= 12 * 3_600_000:
            raise BadArgumentError(
                f"visibility_timeout is {lease_ms} ms, it must be within 1 ms..12h"
            )
        if group.settings.mode is GroupMode.SHARED:
            await self._load_lanes(topic)
        give_up = self.clock.monotonic() + wait_ms / 1000
        while True:
            events = await self._wait_for_plan(
                group, topic, consumer, max_messages, lease_ms, give_up
            )
            if not events:
                return []
            filled = await self._deliver(group, topic, events)
            if filled or self.clock.monotonic() >= give_up:
                return filled
            # all it found was not for now (held back or expired): wait on

    async def _wait_for_plan(
        self,
        group: Group,
        topic: Topic,
        consumer: str,
        max_messages: int,
        lease_ms: int,
        give_up: float,
    ) -> list[Leased | Settled]:
        """Plan a delivery, waiting until `give_up` (the broker clock's
        monotonic time) for something to plan."""
        while True:
            topic.changed.clear()
            now_ms = self.clock.now_ms()
            self._member_alive(group, consumer, None)
            events = self._plan(group, topic, consumer, max_messages, now_ms, lease_ms)
            if events:
                return events
            now = self.clock.monotonic()
            if give_up <= now:
                return []
            wake = give_up
            due = min(
                (d for s in group.deliveries if (d := s.next_due_ms()) is not None),
                default=None,
            )
            if due is not None:
                wake = min(wake, now + max(due - now_ms, 1) / 1000)
            await _changed_or_until(topic.changed, self.clock, wake)

    async def _deliver(
        self, group: Group, topic: Topic, events: list[Leased | Settled]
    ) -> list[Delivery]:
        """Fill the planned ranges with their batches, hold back or settle what
        is not for now, journal it all, count what goes out."""
        ttl_ms = topic.settings.ttl_ms or 0
        deliveries = [
            Delivery(
                topic.name,
                event.partition,
                start,
                end,
                _attempt(event),
                b"",
                _lease(event),
                ttl_ms,
            )
            for event in events
            for start, end in event.ranges
        ]
        results = await asyncio.gather(*(self._fill(topic, d) for d in deliveries))
        filled = [part for parts, _ in results for part in parts]
        damaged = [
            (d.partition, r) for d, (_, lost) in zip(deliveries, results, strict=True) for r in lost
        ]
        kept, expired, held = self._screen(group, topic, filled)
        consumer = events[0].consumer if isinstance(events[0], Leased) else ""
        journal: list[Event] = [*events, *self._lose(group, topic, damaged)]
        for release in held:
            group.deliveries[release.partition].apply(release)
            journal.append(release)
            if topic.settings.trace:
                for partition, until_ms, ranges in _held_back_by_time(release):
                    self._trace(
                        "held_back", topic, partition, ranges, group=group.name, until_ms=until_ms
                    )
        for partition, ranges, attempt in expired:
            self._trace(
                "expired", topic, partition, ranges, group=group.name, attempt=attempt, detail="ttl"
            )
        for delivery in kept:
            self._trace(
                "delivered" if delivery.attempt == 1 else "redelivered",
                topic,
                delivery.partition,
                [(delivery.start, delivery.end)],
                group=group.name,
                consumer=consumer,
                attempt=delivery.attempt,
            )
            if group.settings.auto_ack:
                self._trace(
                    "acked",
                    topic,
                    delivery.partition,
                    [(delivery.start, delivery.end)],
                    group=group.name,
                    detail="auto_ack",
                )
        if group.settings.auto_ack:  # what goes out is settled as it goes
            for delivery in kept:
                done = Settled(group.key, delivery.partition, [(delivery.start, delivery.end)])
                group.deliveries[delivery.partition].apply(done)
                journal.append(done)
            kept = [replace(d, lease=0) for d in kept]  # nothing for the consumer to settle
        dead_letter = topic.settings.ttl_dead_letter
        for partition, ranges, _ in [] if dead_letter else expired:
            settle = Settled(group.key, partition, ranges)
            group.deliveries[partition].apply(settle)
            journal.append(settle)
        # Handing out is journaled without waiting for the fsync (the next
        # settle or timer tick makes it durable): a crash before then loses
        # only the record that these messages were out, and they go out again.
        await self._commit(journal, durable=False)
        for partition, ranges, attempt in expired if dead_letter else []:
            await self._dead_letter(group, topic, partition, ranges, attempt, "expired (ttl)")
        for delivery in kept:
            size = delivery.end - delivery.start
            group.counters["delivered"] += size
            if delivery.attempt > 1:
                group.counters["redelivered"] += size
            self.metrics.delivered(topic.name, size, len(delivery.data))
        return [d for d in kept if d.data]

    def _screen(
        self, group: Group, topic: Topic, filled: Sequence[Delivery]
    ) -> tuple[list[Delivery], list[tuple[int, list[Range], int]], list[Held | Released]]:
        """What may go out now: the deliveries without expired messages and
        without delayed ones whose time has not come. Also returns the
        expired (partition, ranges, attempt) and the hold-backs as events
        (`Held` for first deliveries, one event for all their due times)."""
        now_ms = self.clock.now_ms()
        kept: list[Delivery] = []
        expired: list[tuple[int, list[Range], int]] = []
        held: list[Held | Released] = []
        for delivery in filled:
            data, start, end = delivery.data, delivery.start, delivery.end
            gone = expired_offsets(data, start, end, topic.settings.ttl_ms, now_ms)
            later, dues = held_back(data, start, end, now_ms)
            if not gone and not later:
                kept.append(delivery)
                continue
            if gone:
                group.counters["ttl_expired"] += len(gone)
                expired.append((delivery.partition, ranges_of(gone), delivery.attempt))
            if later:
                held += _hold_events(group.key, delivery.partition, delivery.attempt, later, dues)
            dropped = set(gone).union(later)
            live = [o for o in range(start, end) if o not in dropped]
            kept += [
                Delivery(
                    delivery.topic,
                    delivery.partition,
                    low,
                    high,
                    delivery.attempt,
                    data,
                    delivery.lease,
                    delivery.ttl_ms,
                )
                for low, high in ranges_of(live)
            ]
        return kept, expired, held

    def _shared_states(self, topic_name: str, index: int) -> list[PartitionDelivery]:
        """The delivery state of partition `index` in each shared group of the topic."""
        return [
            group.deliveries[index]
            for group in self.groups.values()
            if group.topic == topic_name
            and group.settings.mode is GroupMode.SHARED
            and index < len(group.deliveries)
        ]

    async def _load_lanes(self, topic: Topic) -> None:
        """Find the high and low batches the shared groups have not settled
        (after a restart, or when a group may stand behind the index)."""
        for partition in topic.partitions:
            if partition.lanes_loaded:
                continue
            states = partial(self._shared_states, topic.name, partition.index)
            await load_lanes(partition, states, self.run)

    def _forget_settled_lanes(self, events: Sequence[Event]) -> None:
        """Settled by shared groups: drop what every shared group has settled
        from the partitions' lane indexes."""
        for event in events:
            if not isinstance(event, (Settled, Seeked)):
                continue
            group = self.groups.get(event.group)
            topic = None if group is None else self.topics.get(group.topic)
            if group is None or topic is None or group.settings.mode is not GroupMode.SHARED:
                continue
            partition = topic.partitions[event.partition]
            if partition.lanes:
                ranges = event.ranges if isinstance(event, Settled) else []
                states = self._shared_states(topic.name, event.partition)
                forget_settled(partition, ranges, states)

    def _plan(
        self, group: Group, topic: Topic, consumer: str, count_max: int, now_ms: int, lease_ms: int
    ) -> list[Leased | Settled]:
        """Choose offsets, apply the lease (or the auto-ack) to memory at once."""
        budget = count_max
        events: list[Leased | Settled] = []
        for index in group.partitions_for(consumer):
            if budget <= 0:
                break
            state = group.deliveries[index]
            room = group.settings.max_in_flight - state.in_flight
            readable = topic.partitions[index].readable_end()
            ends = group.settings.end_offsets
            if ends is not None and index < len(ends):
                readable = min(readable, ends[index])  # a replay stops at its window's end
            lanes = topic.partitions[index].lanes
            if room <= 0:
                planned = []
            elif lanes and group.settings.mode is GroupMode.SHARED:
                planned = state.plan_lanes(
                    now_ms,
                    min(budget, room),
                    readable,
                    lanes,
                    self.lanes.rank,
                    group.lane_guards[index],
                    group.settings.lane_policy(),
                )
            else:
                planned = state.plan(now_ms, min(budget, room), readable)
            by_attempt: defaultdict[int, list[Range]] = defaultdict(list)
            for item in planned:
                by_attempt[item.attempt].append((item.start, item.end))
                budget -= item.end - item.start
            for attempt, ranges in sorted(by_attempt.items()):
                # auto-ack too: leased first, settled once screened (_deliver),
                # so a delayed message met early is held back, not settled
                token = state.next_token(now_ms)
                deadline = now_ms + lease_ms
                event = Leased(group.key, index, ranges, consumer, deadline, attempt, now_ms, token)
                state.apply(event)
                events.append(event)
        return events

    async def _fill(self, topic: Topic, delivery: Delivery) -> tuple[list[Delivery], list[Range]]:
        """The stored batches that hold [start, end), as deliveries cut around
        ranges lost to damage on disk (returned apart)."""
        log = topic.partitions[delivery.partition].log
        found = await read_around_damage(
            self.run, log, delivery.start, delivery.end, READ_CHUNK_BYTES
        )
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

    def _lose(self, group: Group, topic: Topic, damaged: list[tuple[int, Range]]) -> list[Event]:
        """Record offsets lost to damage on disk as lost (applied; the caller journals)."""
        by_partition: defaultdict[int, list[Range]] = defaultdict(list)
        for partition, lost in damaged:
            by_partition[partition].append(lost)
        events: list[Event] = []
        for partition, ranges in sorted(by_partition.items()):
            event = Lost(group.key, partition, ranges)
            group.deliveries[partition].apply(event)
            events.append(event)
            self._trace(
                "lost", topic, partition, ranges, group=group.name, detail="damaged on disk"
            )
            group.counters["lost_to_damage"] += sum(end - start for start, end in ranges)
        return events

    async def receive(
        self,
        topic_name: str,
        group_name: str,
        consumer: str,
        *,
        max_messages: int = 1,
        wait_ms: int = 0,
        visibility_timeout_ms: int | None = None,
    ) -> list[Message]:
        """Like `receive_raw`, decoded into messages (REST, embedded use)."""
        deliveries = await self.receive_raw(
            topic_name,
            group_name,
            consumer,
            max_messages=max_messages,
            wait_ms=wait_ms,
            visibility_timeout_ms=visibility_timeout_ms,
        )
        return [
            message for delivery in deliveries for message in decode_delivery(delivery, self.lanes)
        ]

    # -- settling ---------------------------------------------------------------------

    def _named(self, topic_name: str, group: Group, ids: Iterable[str]) -> Named:
        return named_deliveries(topic_name, len(group.deliveries), ids)

    async def ack(self, topic_name: str, group_name: str, ids: Iterable[str]) -> int:
        """Settle delivered messages (ids, or receipts `<id>@<lease>`); returns
        how many were newly settled. Raises StaleDeliveryError after settling
        the rest when a receipt named a delivery that is no longer current."""
        self._check_open()
        group = self.group(topic_name, group_name)
        return await self._settle(group, self._named(topic_name, group, ids))

    async def ack_ranges(self, topic_name: str, group_name: str, ranges: Named) -> int:
        """Settle offset ranges [start, end) per (partition, lease token; 0
        for none), the fast path; stale ones as `ack`."""
        self._check_open()
        group = self.group(topic_name, group_name)
        check_named(ranges, len(group.deliveries))
        return await self._settle(group, ranges)

    async def _settle(self, group: Group, named: Named) -> int:
        by_partition, stale = current_parts(group.deliveries, named)
        events: list[Event] = []
        settled = 0
        topic = self.topics[group.topic]
        now_ms = self.clock.now_ms()
        for partition, ranges in by_partition.items():
            state = group.deliveries[partition]
            todo = _unsettled_delivered(state, ranges)
            if todo:
                self._trace_settled(group, topic, partition, todo, now_ms)
                event = Settled(group.key, partition, todo)
                state.apply(event)
                events.append(event)
                settled += sum(end - start for start, end in todo)
        group.counters["acked"] += settled
        await self._commit(events)
        if stale:
            raise self._stale(group, stale, settled)
        return settled

    def _stale(self, group: Group, stale: Stale, count: int) -> StaleDeliveryError:
        """Count the stale deliveries a settlement named; the error to raise."""
        group.counters["stale"] += sum(end - start for _, start, end, _ in stale)
        return stale_error(group.topic, stale, count)

    def _trace_settled(
        self, group: Group, topic: Topic, partition: int, ranges: list[Range], now_ms: int
    ) -> None:
        """Trace an ack per lease (who held it, which attempt), and note the
        lifecycle figures: attempts per message, time from delivery to ack."""
        state = group.deliveries[partition]
        for lease, parts in _by_lease(state, ranges):
            count = sum(end - start for start, end in parts)
            consumer, attempt = (lease.consumer, lease.attempt) if lease else ("", 0)
            self._trace(
                "acked",
                topic,
                partition,
                parts,
                group=group.name,
                consumer=consumer,
                attempt=attempt,
            )
            if lease is not None:
                waited = now_ms - lease.leased_ms if lease.leased_ms else None
                group.lifecycle.acked(count, lease.attempt, waited)

    async def nack(
        self, topic_name: str, group_name: str, ids: Iterable[str], delay_ms: int | None = None
    ) -> int:
        """Hand messages back for redelivery after `delay_ms` (the group's
        backoff for the attempt when None), or to the DLQ once they have been
        delivered `max_deliveries` times."""
        self._check_open()
        if delay_ms is not None:
            delay_ms = parse_duration_ms(delay_ms, name="delay")
        group = self.group(topic_name, group_name)
        try:
            released = await self._release(topic_name, group, ids, delay_ms, "nacked")
        except StaleDeliveryError as error:
            group.counters["nacked"] += error.count
            raise
        group.counters["nacked"] += released
        return released

    async def _release(
        self, topic_name: str, group: Group, ids: Iterable[str], delay_ms: int | None, reason: str
    ) -> int:
        topic = self.topic(topic_name)
        now_ms = self.clock.now_ms()
        events: list[Event] = []
        dead: list[tuple[int, list[Range], int]] = []
        count = 0
        current, stale = current_parts(group.deliveries, self._named(topic_name, group, ids))
        for partition, ranges in current.items():
            state = group.deliveries[partition]
            for (start, end), attempt in _leased_parts(state, ranges):
                count += end - start
                if attempt >= group.max_deliveries(topic.settings):
                    dead.append((partition, [(start, end)], attempt))
                    continue
                wait = self._backoff_ms(group, topic, attempt) if delay_ms is None else delay_ms
                lease = state.lease_of(start)
                self._trace(
                    reason,
                    topic,
                    partition,
                    [(start, end)],
                    group=group.name,
                    consumer=lease.consumer if lease else "",
                    attempt=attempt,
                    until_ms=now_ms + wait,
                )
                group.lifecycle.redelivery(reason, end - start)
                event = Released(group.key, partition, [(start, end)], attempt, now_ms + wait)
                state.apply(event)
                events.append(event)
        await self._commit(events)
        for partition, ranges, attempt in dead:
            await self._dead_letter(
                group, topic, partition, ranges, attempt, f"max_deliveries ({reason})"
            )
        topic.changed.set()
        if stale:
            raise self._stale(group, stale, count)
        return count

    async def reject(
        self, topic_name: str, group_name: str, ids: Iterable[str], reason: str = "rejected"
    ) -> int:
        """Send messages straight to the dead-letter topic."""
        self._check_open()
        if not isinstance(reason, str) or len(reason) > REASON_LENGTH_MAX:
            raise BadArgumentError(
                f"reason must be a string of at most {REASON_LENGTH_MAX} characters"
            )
        group = self.group(topic_name, group_name)
        topic = self.topic(topic_name)
        count = 0
        current, stale = current_parts(group.deliveries, self._named(topic_name, group, ids))
        for partition, ranges in current.items():
            state = group.deliveries[partition]
            todo = _unsettled_delivered(state, ranges)
            parts = [part for low, high in todo for part in state.attempts_made(low, high)]
            for start, end, attempt in parts:  # each with the deliveries made to it
                lease = state.lease_of(start)
                if lease is not None and lease.consumer == DLQ_CONSUMER:
                    continue  # already on its way to the DLQ (a retried reject, say)
                self._trace(
                    "rejected",
                    topic,
                    partition,
                    [(start, end)],
                    group=group.name,
                    consumer=lease.consumer if lease else "",
                    attempt=attempt,
                    detail=reason,
                )
                await self._dead_letter(group, topic, partition, [(start, end)], attempt, reason)
                count += end - start
        group.counters["rejected"] += count
        if stale:
            raise self._stale(group, stale, count)
        return count

    async def extend(
        self,
        topic_name: str,
        group_name: str,
        ids: Iterable[str],
        visibility_timeout_ms: int | None = None,
    ) -> int:
        """Renew the lease of in-flight messages from now."""
        self._check_open()
        group = self.group(topic_name, group_name)
        topic = self.topic(topic_name)
        lease_ms = (
            parse_duration_ms(visibility_timeout_ms, name="visibility_timeout")
            if visibility_timeout_ms is not None
            else group.visibility_timeout_ms(topic.settings)
        )
        deadline = self.clock.now_ms() + lease_ms
        events: list[Event] = []
        count = 0
        current, stale = current_parts(group.deliveries, self._named(topic_name, group, ids))
        for partition, ranges in current.items():
            state = group.deliveries[partition]
            leased = [part for part, _ in _leased_parts(state, ranges)]
            if leased:
                event = Extended(group.key, partition, leased, deadline)
                state.apply(event)
                events.append(event)
                count += sum(end - start for start, end in leased)
        await self._commit(events)
        if stale:
            raise self._stale(group, stale, count)
        return count

    async def seek(self, topic_name: str, group_name: str, target: object) -> dict[int, int]:
        """Move the group: "earliest", "latest", {"offset", "partition"} or {"time"}.
        Delivery state of the moved partitions starts afresh from there."""
        self._check_open()
        topic = self.topic(topic_name)
        group = await self.group_for_receive(topic_name, group_name)
        positions: dict[int, int] = {}
        if target == "earliest":
            positions = {p.index: p.log.first_offset for p in topic.partitions}
        elif target == "latest":
            positions = {p.index: p.readable_end() for p in topic.partitions}
        elif isinstance(target, dict) and "offset" in target:
            offset = target["offset"]
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise BadArgumentError(
                    f"seek offset must be a non-negative integer, got {offset!r}"
                )
            chosen = (
                [topic.partition(target["partition"])]
                if "partition" in target
                else topic.partitions
            )
            for partition in chosen:
                end = partition.readable_end()
                positions[partition.index] = min(max(offset, partition.log.first_offset), end)
        elif isinstance(target, dict) and "time" in target:
            when = parse_time_ms(target["time"], name="seek time")
            for partition in topic.partitions:
                found = await self.run(lambda log=partition.log: log.offset_for_time(when))  # type: ignore[misc]
                positions[partition.index] = partition.readable_end() if found is None else found
        else:
            raise BadArgumentError(
                'seek "to" must be "earliest", "latest", {"offset": n, "partition": p} or {"time": T}'
            )
        events: list[Event] = []
        for index, offset in positions.items():
            event = Seeked(group.key, index, offset)
            group.deliveries[index].apply(event)
            group.lane_guards[index] = LaneGuard()
            events.append(event)
            if group.settings.mode is GroupMode.SHARED:
                forget_loaded(topic.partitions[index])  # it may now stand behind the index
        await self._commit(events)
        topic.changed.set()
        return positions

    # -- timers -----------------------------------------------------------------------------

    async def expire_leases(self) -> int:
        """Leases past their deadline: back to pending, or to the DLQ. Returns
        how many messages expired."""
        now_ms = self.clock.now_ms()
        expired_total = 0
        for group in list(self.groups.values()):
            topic = self.topics.get(group.topic)
            if topic is None:
                continue
            events: list[Event] = []
            dead: list[tuple[int, list[Range], int]] = []
            unfinished: list[tuple[int, list[Range], int, int, int]] = []
            for partition, state in enumerate(group.deliveries):
                for lease in state.expired(now_ms):
                    parts = state.unsettled_ranges(lease.start, lease.end)
                    if not parts or lease.consumer == REDRIVE_CONSUMER:
                        continue  # a redrive's hold: DLQ operations and recovery finish it
                    count = sum(end - start for start, end in parts)
                    expired_total += count
                    if lease.consumer == DLQ_CONSUMER:
                        # a dead-letter move that did not finish (a crash): finish it
                        unfinished.append(
                            (partition, parts, lease.attempt, lease.deadline_ms, lease.token)
                        )
                        continue
                    group.counters["expired"] += count
                    if lease.attempt >= group.max_deliveries(topic.settings):
                        dead.append((partition, parts, lease.attempt))
                        continue
                    wait = self._backoff_ms(group, topic, lease.attempt)
                    self._trace(
                        "lease_expired",
                        topic,
                        partition,
                        parts,
                        group=group.name,
                        consumer=lease.consumer,
                        attempt=lease.attempt,
                        until_ms=now_ms + wait,
                    )
                    group.lifecycle.redelivery("lease_expired", count)
                    event = Released(group.key, partition, parts, lease.attempt, now_ms + wait)
                    state.apply(event)
                    events.append(event)
            await self._commit(events)
            for partition, parts, attempt in dead:
                await self._dead_letter(
                    group, topic, partition, parts, attempt, "max_deliveries (lease expired)"
                )
            for partition, parts, attempt, hold_until, token in unfinished:
                await self._dead_letter(
                    group,
                    topic,
                    partition,
                    parts,
                    attempt,
                    "dead-letter move resumed",
                    hold_until,
                    token,
                )
            if events or dead or unfinished:
                topic.changed.set()
        return expired_total

    async def finish_dead_letter_moves(self) -> int:
        """After recovery, finish the dead-letter moves a crash interrupted (their
        holds are in the journal) at once, rather than when the holds expire."""
        moved = 0
        for group in list(self.groups.values()):
            topic = self.topics.get(group.topic)
            if topic is None:
                continue
            for partition, state in enumerate(group.deliveries):
                holds = [lease for lease in state.leases if lease.consumer == DLQ_CONSUMER]
                for lease in holds:
                    parts = state.unsettled_ranges(lease.start, lease.end)
                    if parts:
                        await self._dead_letter(
                            group,
                            topic,
                            partition,
                            parts,
                            lease.attempt,
                            "dead-letter move resumed",
                            lease.deadline_ms,
                            lease.token,
                        )
                        moved += sum(end - start for start, end in parts)
        return moved

    def _backoff_ms(self, group: Group, topic: Topic, attempt: int) -> int:
        wait = group.backoff(topic.settings).delay_ms(attempt, self._random.random())
        if wait:
            group.counters["backoff_waits"] += 1
            group.counters["backoff_wait_ms"] += wait
        return wait

    # -- dead letters ---------------------------------------------------------------------------

    async def _dead_letter(
        self,
        group: Group,
        topic: Topic,
        partition: int,
        ranges: list[Range],
        attempt: int,
        reason: str,
        hold_until: int | None = None,
        hold_token: int = 0,
    ) -> None:
        """Copy messages to the dead-letter topic with their origin, then settle
        them. The offsets are first held (journaled, under a lease token of
        their own) for the move; if a crash interrupts it, the hold expires
        after recovery and the move runs again with the same `hold_until` and
        token, and the dead-letter topic's dedup ids (from the group, the
        message and the hold) store each copy once. Each move has its own
        hold, so a message dead-lettered again after a redrive is a new copy."""
        state = group.deliveries[partition]
        now_ms = self.clock.now_ms()
        if hold_until is None:
            hold_until = now_ms + DLQ_HOLD_MS
            hold_token = state.next_token(now_ms)
            hold = Leased(
                group.key, partition, ranges, DLQ_CONSUMER, hold_until, attempt, now_ms, hold_token
            )
        else:
            hold = Leased(
                group.key, partition, ranges, DLQ_CONSUMER, hold_until, attempt, token=hold_token
            )
        state.apply(hold)
        await self._commit([hold])
        dlq = self.dlq_name(topic.name)
        await self.create_topic(dlq, {"partitions": 1}, exist_ok=True, internal=True)
        outgoing: list[OutgoingMessage] = []
        damaged: list[tuple[int, Range]] = []
        messages: list[Message] = []
        for start, end in ranges:
            parts, gone = await self._fill(
                topic, Delivery(topic.name, partition, start, end, attempt, b"")
            )
            damaged += [(partition, found) for found in gone]
            messages += [m for part in parts for m in decode_delivery(part, self.lanes)]
        for message in messages:
            headers = dict(message.headers)
            headers.update(
                {
                    HEADER_ORIGIN_ID: message.id,
                    HEADER_GROUP: group.name,
                    HEADER_ATTEMPTS: str(attempt),
                    HEADER_REASON: reason,
                    HEADER_DEAD_AT: str(now_ms),
                }
            )
            # holds journaled by earlier releases have no token: their moves keep
            # the ids they began with
            token = f"\0{hold_token}" if hold_token else ""
            move = f"{group.key}\0{message.id}\0{hold_until}{token}".encode()
            outgoing.append(
                OutgoingMessage(
                    message.value,
                    message.key,
                    headers,
                    message.priority,
                    0,
                    now_ms,  # the DLQ's retention and dedup window count from here
                    dedup_id=hashlib.sha1(move).hexdigest(),
                )
            )
        for index in range(0, len(outgoing), 1000):
            await self.publish(dlq, outgoing[index : index + 1000], as_broker=True)
        lost_events = self._lose(group, topic, damaged)
        moved = without(ranges, [found for _, found in damaged])
        settle = Settled(group.key, partition, moved)
        state.apply(settle)
        self._trace(
            "dead_lettered",
            topic,
            partition,
            moved,
            group=group.name,
            attempt=attempt,
            detail=f"{reason} -> {dlq}",
        )
        await self._commit([*lost_events, settle])
        group.counters["dead_lettered"] += sum(end - start for start, end in moved)

    # -- the journal ----------------------------------------------------------------------------

    async def _commit(self, events: Sequence[Event], *, durable: bool = True) -> None:
        """Make applied events durable before the caller answers (unless not
        `durable`: then they are written now and made durable by the next
        commit group); wake-ups for what they made deliverable later go on
        the timing wheel, and receives waiting on the topic recompute when to
        wake (one that began waiting before would sleep past the new time)."""
        if not events:
            return
        now_ms = self.clock.now_ms()
        for event in events:
            if isinstance(event, Released) and event.not_before_ms > now_ms:
                group = self.groups.get(event.group)
                if group is not None:
                    self.scheduler.add(event.not_before_ms, group.topic)
                    self._wake_receives(group.topic)
            elif isinstance(event, Held):
                self._wake_at_next_due(event.group, event.partition, now_ms)
        self._flush_trace()
        try:
            futures = self.state_writer.submit(events)
        except LogError as error:
            raise LogqError(f"delivery state could not be stored: {error}") from None
        if durable:
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, OSError):  # a full or failing disk
                    raise self.disk.storage_error(outcome) from None
                if isinstance(outcome, BaseException):
                    raise LogqError(f"delivery state could not be stored: {outcome}") from None
        else:
            for future in futures:
                future.add_done_callback(_note_unwaited)
        self._forget_settled_lanes(events)
        for key in {event.group for event in events if not isinstance(event, Leased)}:
            group = self.groups.get(key)
            if group is not None:
                self.hand_over(group)

    def _wake_at_next_due(self, group_key: str, partition: int, now_ms: int) -> None:
        """Put the earliest held-back message of the group's partition on the
        timing wheel, unless an earlier wake-up for it is there already: one
        timer per group and partition, however many it holds."""
        group = self.groups.get(group_key)
        if group is None or partition >= len(group.deliveries):
            return
        due = group.deliveries[partition].next_due_ms()
        armed = self.held_wake_ups.get((group_key, partition))
        if due is None or (armed is not None and now_ms < armed <= due):
            return
        if self.scheduler.add(due, group.topic):
            self.held_wake_ups[(group_key, partition)] = due
        self._wake_receives(group.topic)  # an earlier due: waiting receives recompute

    def _wake_receives(self, topic_name: str) -> None:
        """Wake the receives waiting on the topic (they plan again, then
        wait until the earliest due time they find)."""
        topic = self.topics.get(topic_name)
        if topic is not None:
            topic.changed.set()

    async def snapshot_delivery_state(self) -> None:
        """Write a snapshot of every partition's delivery state now (each is
        also taken on its own once its state log has grown past
        `snapshot_bytes`); the state segments before each go."""
        await asyncio.gather(
            *(
                self.state_writer.snapshot(topic, partition)
                for topic in list(self.topics.values())
                for partition in topic.partitions
            )
        )


def _hold_events(
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


def _held_back_by_time(event: Held | Released) -> list[tuple[int, int, list[Range]]]:
    """(partition, due time, ranges) of a hold-back, for its trace."""
    if isinstance(event, Released):
        return [(event.partition, event.not_before_ms, event.ranges)]
    by_due: defaultdict[int, list[int]] = defaultdict(list)
    for offset, due in zip(
        unpack_offsets(event.offsets), unpack_offsets(event.due_ms), strict=True
    ):
        by_due[due].append(offset)
    return [(event.partition, due, ranges_of(found)) for due, found in sorted(by_due.items())]


def _note_unwaited(future: asyncio.Future[AppendResult]) -> None:
    """A state write nobody waits for: its failure is logged, not lost."""
    if not future.cancelled() and future.exception() is not None:
        logger.warning("delivery state not stored: %s", future.exception())


async def _changed_or_until(changed: asyncio.Event, clock: Clock, deadline: float) -> None:
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


def _attempt(event: Leased | Settled) -> int:
    return event.attempt if isinstance(event, Leased) else 1


def _lease(event: Leased | Settled) -> int:
    return event.token if isinstance(event, Leased) else 0  # auto-ack: nothing to settle


def _unsettled_delivered(state: PartitionDelivery, ranges: list[Range]) -> list[Range]:
    """Parts of `ranges` that were handed out and are not settled."""
    todo: list[Range] = []
    for start, end in ranges:
        todo.extend(state.delivered_unsettled(start, end))
    return todo


def _leased_parts(state: PartitionDelivery, ranges: list[Range]) -> list[tuple[Range, int]]:
    """Unsettled parts of `ranges` that are in flight, with their attempt."""
    parts: list[tuple[Range, int]] = []
    for start, end in _unsettled_delivered(state, ranges):
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


def _by_lease(
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
