"""Lease expiry: deliveries not settled in time go back, or to the DLQ.

The broker's timer calls `expire_leases` every tick: each lease past its
deadline is released for redelivery after the group's backoff, or, at the
group's `max_deliveries`, moved to the dead-letter topic. A lease held by
a dead-letter move that a crash interrupted is finished instead (the move
is idempotent, dead_lettering.py); a redrive's hold is left to the
dead-letter operations (redrive.py).
"""

from __future__ import annotations

from logq.broker.core import Core
from logq.broker.dead_lettering import DLQ_CONSUMER, DeadLetterMover
from logq.broker.delivery import REDRIVE_CONSUMER
from logq.broker.state_commit import StateCommit
from logq.broker.tracing import Tracer
from logq.state.events import Event, Released
from logq.state.ranges import Range


class Leases:
    """Expires the leases of every group; see the module doc."""

    def __init__(
        self, core: Core, tracer: Tracer, commit: StateCommit, mover: DeadLetterMover
    ) -> None:
        self._core = core
        self._tracer = tracer
        self._commit = commit
        self._mover = mover

    async def expire_leases(self) -> int:
        """Leases past their deadline: back to pending, or to the DLQ. Returns
        how many messages expired."""
        now_ms = self._core.clock.now_ms()
        expired_total = 0
        for group in list(self._core.groups.values()):
            topic = self._core.topics.get(group.topic)
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
                    wait = group.backoff_wait_ms(
                        topic.settings, lease.attempt, self._core.random.random()
                    )
                    self._tracer.record(
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
            await self._commit.commit(events)
            for partition, parts, attempt in dead:
                await self._mover.move(
                    group, topic, partition, parts, attempt, "max_deliveries (lease expired)"
                )
            for partition, parts, attempt, hold_until, token in unfinished:
                await self._mover.move(
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
