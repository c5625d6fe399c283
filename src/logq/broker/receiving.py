"""Receiving: planning which offsets go to a consumer, and handing them out.

A receive plans offsets for the consumer (lanes first in shared groups,
then offset order; redeliveries whose time has come), leases them in
memory at once, reads their batches, screens out what is not for now
(delayed messages held back until due, expired ones settled or
dead-lettered), journals it all and answers with the batches. With
nothing to plan it waits, up to the request's wait, for an append or for
the earliest due time of what the group holds back.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

from logq.broker.coordination import Coordinator
from logq.broker.core import Core
from logq.broker.dead_lettering import DeadLetterMover
from logq.broker.delays import held_back
from logq.broker.delivery import (
    Delivery,
    attempt_of,
    changed_or_until,
    decode_delivery,
    fill,
    held_back_by_time,
    hold_events,
    lease_token_of,
    lose,
)
from logq.broker.expiry import expired_offsets
from logq.broker.group import Group
from logq.broker.group_catalog import GroupCatalog
from logq.broker.messages import Message
from logq.broker.settings import GroupMode, check_consumer_name
from logq.broker.state_commit import StateCommit
from logq.broker.topic import Topic
from logq.broker.tracing import Tracer
from logq.durations import parse_duration_ms
from logq.errors import BadArgumentError
from logq.state.events import Event, Held, Leased, Released, Settled
from logq.state.ranges import Range, ranges_of


class Receiving:
    """Hands out deliveries to the consumers of groups; see the module doc."""

    def __init__(
        self,
        core: Core,
        tracer: Tracer,
        commit: StateCommit,
        coordinator: Coordinator,
        groups: GroupCatalog,
        mover: DeadLetterMover,
    ) -> None:
        self._core = core
        self._tracer = tracer
        self._commit = commit
        self._coordinator = coordinator
        self._groups = groups
        self._mover = mover

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
            message
            for delivery in deliveries
            for message in decode_delivery(delivery, self._core.lanes)
        ]

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
        self._core.check_open()
        check_consumer_name(consumer)
        limit = self._core.config.receive_messages_max
        if (
            isinstance(max_messages, bool)
            or not isinstance(max_messages, int)
            or not 1 <= max_messages <= limit
        ):
            raise BadArgumentError(f"max must be within 1..{limit}, got {max_messages!r}")
        wait_ms = parse_duration_ms(wait_ms, name="wait")
        if wait_ms > self._core.config.receive_wait_ms_max:
            raise BadArgumentError(
                f"wait is {wait_ms} ms, the limit is {self._core.config.receive_wait_ms_max} ms"
            )
        topic = self._core.topic(topic_name)
        group = await self._groups.group_for_receive(topic_name, group_name)
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
            await self._commit.load_lanes(topic)
        give_up = self._core.clock.monotonic() + wait_ms / 1000
        while True:
            events = await self._wait_for_plan(
                group, topic, consumer, max_messages, lease_ms, give_up
            )
            if not events:
                return []
            filled = await self._deliver(group, topic, events)
            if filled or self._core.clock.monotonic() >= give_up:
                return filled

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
            now_ms = self._core.clock.now_ms()
            self._coordinator.member_alive(group, consumer, None)
            events = self._plan(group, topic, consumer, max_messages, now_ms, lease_ms)
            if events:
                return events
            now = self._core.clock.monotonic()
            if give_up <= now:
                return []
            wake = give_up
            due = min(
                (d for s in group.deliveries if (d := s.next_due_ms()) is not None),
                default=None,
            )
            if due is not None:
                wake = min(wake, now + max(due - now_ms, 1) / 1000)
            await changed_or_until(topic.changed, self._core.clock, wake)

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
                attempt_of(event),
                b"",
                lease_token_of(event),
                ttl_ms,
            )
            for event in events
            for start, end in event.ranges
        ]
        results = await asyncio.gather(*(fill(self._core.run, topic, d) for d in deliveries))
        filled = [part for parts, _ in results for part in parts]
        damaged = [
            (d.partition, r) for d, (_, lost) in zip(deliveries, results, strict=True) for r in lost
        ]
        kept, expired, held = self._screen(group, topic, filled)
        consumer = events[0].consumer if isinstance(events[0], Leased) else ""
        journal: list[Event] = [*events, *lose(group, topic, damaged, self._tracer)]
        for release in held:
            group.deliveries[release.partition].apply(release)
            journal.append(release)
            if topic.settings.trace:
                for partition, until_ms, ranges in held_back_by_time(release):
                    self._tracer.record(
                        "held_back", topic, partition, ranges, group=group.name, until_ms=until_ms
                    )
        for partition, ranges, attempt in expired:
            self._tracer.record(
                "expired", topic, partition, ranges, group=group.name, attempt=attempt, detail="ttl"
            )
        for delivery in kept:
            self._tracer.record(
                "delivered" if delivery.attempt == 1 else "redelivered",
                topic,
                delivery.partition,
                [(delivery.start, delivery.end)],
                group=group.name,
                consumer=consumer,
                attempt=delivery.attempt,
            )
            if group.settings.auto_ack:
                self._tracer.record(
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
        await self._commit.commit(journal, durable=False)
        for partition, ranges, attempt in expired if dead_letter else []:
            await self._mover.move(group, topic, partition, ranges, attempt, "expired (ttl)")
        for delivery in kept:
            size = delivery.end - delivery.start
            group.counters["delivered"] += size
            if delivery.attempt > 1:
                group.counters["redelivered"] += size
            self._core.metrics.delivered(topic.name, size, len(delivery.data))
        return [d for d in kept if d.data]

    def _screen(
        self, group: Group, topic: Topic, filled: Sequence[Delivery]
    ) -> tuple[list[Delivery], list[tuple[int, list[Range], int]], list[Held | Released]]:
        """What may go out now: the deliveries without expired messages and
        without delayed ones whose time has not come. Also returns the
        expired (partition, ranges, attempt) and the hold-backs as events
        (`Held` for first deliveries, one event for all their due times)."""
        now_ms = self._core.clock.now_ms()
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
                held += hold_events(group.key, delivery.partition, delivery.attempt, later, dues)
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
                    self._core.lanes.rank,
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
