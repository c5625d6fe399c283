"""Settlement: ack, nack, reject, extend and seek, by a group's consumers.

Each turns the ids (or receipts `<id>@<lease>`) it is given into
delivery-state events for the parts that are still current, applies them
to memory at once, and answers once they are durable (commit). Parts named
by a receipt that is no longer current change nothing and are reported
with `StaleDeliveryError` after the rest is done. A nack past the group's
`max_deliveries`, and a reject, move the message to the dead-letter topic
(dead_lettering.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from logq.broker.core import Core
from logq.broker.dead_lettering import DLQ_CONSUMER, DeadLetterMover
from logq.broker.delivery import by_lease, leased_parts, unsettled_delivered
from logq.broker.group import Group
from logq.broker.group_catalog import GroupCatalog
from logq.broker.lane_index import forget_loaded
from logq.broker.receipts import (
    Named,
    Stale,
    check_named,
    current_parts,
    named_deliveries,
    stale_error,
)
from logq.broker.settings import GroupMode
from logq.broker.state_commit import StateCommit
from logq.broker.topic import Topic
from logq.broker.tracing import Tracer
from logq.durations import parse_duration_ms, parse_time_ms
from logq.errors import BadArgumentError, StaleDeliveryError
from logq.state.events import Event, Extended, Released, Seeked, Settled
from logq.state.lane_guard import LaneGuard
from logq.state.ranges import Range

REASON_LENGTH_MAX = 1000


class Settlement:
    """Settles and moves the deliveries of groups; see the module doc."""

    def __init__(
        self,
        core: Core,
        tracer: Tracer,
        commit: StateCommit,
        groups: GroupCatalog,
        mover: DeadLetterMover,
    ) -> None:
        self._core = core
        self._tracer = tracer
        self._commit = commit
        self._groups = groups
        self._mover = mover

    async def ack(self, topic_name: str, group_name: str, ids: Iterable[str]) -> int:
        """Settle delivered messages (ids, or receipts `<id>@<lease>`); returns
        how many were newly settled. Raises StaleDeliveryError after settling
        the rest when a receipt named a delivery that is no longer current."""
        self._core.check_open()
        group = self._core.group(topic_name, group_name)
        return await self._settle(group, named_deliveries(topic_name, len(group.deliveries), ids))

    async def ack_ranges(self, topic_name: str, group_name: str, ranges: Named) -> int:
        """Settle offset ranges [start, end) per (partition, lease token; 0
        for none), the fast path; stale ones as `ack`."""
        self._core.check_open()
        group = self._core.group(topic_name, group_name)
        check_named(ranges, len(group.deliveries))
        return await self._settle(group, ranges)

    async def _settle(self, group: Group, named: Named) -> int:
        by_partition, stale = current_parts(group.deliveries, named)
        events: list[Event] = []
        settled = 0
        topic = self._core.topics[group.topic]
        now_ms = self._core.clock.now_ms()
        for partition, ranges in by_partition.items():
            state = group.deliveries[partition]
            todo = unsettled_delivered(state, ranges)
            if todo:
                self._trace_settled(group, topic, partition, todo, now_ms)
                event = Settled(group.key, partition, todo)
                state.apply(event)
                events.append(event)
                settled += sum(end - start for start, end in todo)
        group.counters["acked"] += settled
        await self._commit.commit(events)
        if stale:
            raise counted_stale(group, stale, settled)
        return settled

    def _trace_settled(
        self, group: Group, topic: Topic, partition: int, ranges: list[Range], now_ms: int
    ) -> None:
        """Trace an ack per lease (who held it, which attempt), and note the
        lifecycle figures: attempts per message, time from delivery to ack."""
        state = group.deliveries[partition]
        for lease, parts in by_lease(state, ranges):
            count = sum(end - start for start, end in parts)
            consumer, attempt = (lease.consumer, lease.attempt) if lease else ("", 0)
            self._tracer.record(
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
        self._core.check_open()
        if delay_ms is not None:
            delay_ms = parse_duration_ms(delay_ms, name="delay")
        group = self._core.group(topic_name, group_name)
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
        topic = self._core.topic(topic_name)
        now_ms = self._core.clock.now_ms()
        events: list[Event] = []
        dead: list[tuple[int, list[Range], int]] = []
        count = 0
        current, stale = current_parts(
            group.deliveries, named_deliveries(topic_name, len(group.deliveries), ids)
        )
        for partition, ranges in current.items():
            state = group.deliveries[partition]
            for (start, end), attempt in leased_parts(state, ranges):
                count += end - start
                if attempt >= group.max_deliveries(topic.settings):
                    dead.append((partition, [(start, end)], attempt))
                    continue
                wait = (
                    group.backoff_wait_ms(topic.settings, attempt, self._core.random.random())
                    if delay_ms is None
                    else delay_ms
                )
                lease = state.lease_of(start)
                self._tracer.record(
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
        await self._commit.commit(events)
        for partition, ranges, attempt in dead:
            await self._mover.move(
                group, topic, partition, ranges, attempt, f"max_deliveries ({reason})"
            )
        topic.changed.set()
        if stale:
            raise counted_stale(group, stale, count)
        return count

    async def reject(
        self, topic_name: str, group_name: str, ids: Iterable[str], reason: str = "rejected"
    ) -> int:
        """Send messages straight to the dead-letter topic."""
        self._core.check_open()
        if not isinstance(reason, str) or len(reason) > REASON_LENGTH_MAX:
            raise BadArgumentError(
                f"reason must be a string of at most {REASON_LENGTH_MAX} characters"
            )
        group = self._core.group(topic_name, group_name)
        topic = self._core.topic(topic_name)
        count = 0
        current, stale = current_parts(
            group.deliveries, named_deliveries(topic_name, len(group.deliveries), ids)
        )
        for partition, ranges in current.items():
            state = group.deliveries[partition]
            todo = unsettled_delivered(state, ranges)
            parts = [part for low, high in todo for part in state.attempts_made(low, high)]
            for start, end, attempt in parts:  # each with the deliveries made to it
                lease = state.lease_of(start)
                if lease is not None and lease.consumer == DLQ_CONSUMER:
                    continue  # already on its way to the DLQ (a retried reject, say)
                self._tracer.record(
                    "rejected",
                    topic,
                    partition,
                    [(start, end)],
                    group=group.name,
                    consumer=lease.consumer if lease else "",
                    attempt=attempt,
                    detail=reason,
                )
                await self._mover.move(group, topic, partition, [(start, end)], attempt, reason)
                count += end - start
        group.counters["rejected"] += count
        if stale:
            raise counted_stale(group, stale, count)
        return count

    async def extend(
        self,
        topic_name: str,
        group_name: str,
        ids: Iterable[str],
        visibility_timeout_ms: int | None = None,
    ) -> int:
        """Renew the lease of in-flight messages from now."""
        self._core.check_open()
        group = self._core.group(topic_name, group_name)
        topic = self._core.topic(topic_name)
        lease_ms = (
            parse_duration_ms(visibility_timeout_ms, name="visibility_timeout")
            if visibility_timeout_ms is not None
            else group.visibility_timeout_ms(topic.settings)
        )
        deadline = self._core.clock.now_ms() + lease_ms
        events: list[Event] = []
        count = 0
        current, stale = current_parts(
            group.deliveries, named_deliveries(topic_name, len(group.deliveries), ids)
        )
        for partition, ranges in current.items():
            state = group.deliveries[partition]
            leased = [part for part, _ in leased_parts(state, ranges)]
            if leased:
                event = Extended(group.key, partition, leased, deadline)
                state.apply(event)
                events.append(event)
                count += sum(end - start for start, end in leased)
        await self._commit.commit(events)
        if stale:
            raise counted_stale(group, stale, count)
        return count

    async def seek(self, topic_name: str, group_name: str, target: object) -> dict[int, int]:
        """Move the group: "earliest", "latest", {"offset", "partition"} or {"time"}.
        Delivery state of the moved partitions starts afresh from there."""
        self._core.check_open()
        topic = self._core.topic(topic_name)
        group = await self._groups.group_for_receive(topic_name, group_name)
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
                found = await self._core.run(lambda log=partition.log: log.offset_for_time(when))  # type: ignore[misc]
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
        await self._commit.commit(events)
        topic.changed.set()
        return positions


def counted_stale(group: Group, stale: Stale, count: int) -> StaleDeliveryError:
    """Count the stale deliveries a settlement named; the error to raise."""
    group.counters["stale"] += sum(end - start for _, start, end, _ in stale)
    return stale_error(group.topic, stale, count)
