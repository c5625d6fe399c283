"""Commit: delivery-state events made durable, and what follows from them.

Every delivery component applies its events to memory at once (before any
await, so concurrent requests see them) and then hands them here: they go
to the state logs of their partitions through the state writer (one batch
per partition, one commit group), and the caller answers once they are
durable. What the events change beyond the state is done here too: wake-ups
for what comes due later go on the timing wheel, the shared groups' lane
index drops what all of them settled, and drained partitions of ordered
groups are handed over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial

from logq.broker.coordination import Coordinator
from logq.broker.core import Core
from logq.broker.lane_index import forget_settled, load_lanes
from logq.broker.settings import GroupMode
from logq.broker.topic import Topic
from logq.broker.tracing import Tracer
from logq.errors import LogqError
from logq.log import AppendResult, LogError
from logq.state.delivery import PartitionDelivery
from logq.state.events import Event, Held, Leased, Released, Seeked, Settled

logger = logging.getLogger(__name__)


class StateCommit:
    """Makes applied delivery events durable; see the module doc."""

    def __init__(self, core: Core, tracer: Tracer, coordinator: Coordinator) -> None:
        self._core = core
        self._tracer = tracer
        self._coordinator = coordinator

    async def commit(self, events: Sequence[Event], *, durable: bool = True) -> None:
        """Make applied events durable before the caller answers (unless not
        `durable`: then they are written now and made durable by the next
        commit group); wake-ups for what they made deliverable later go on
        the timing wheel, and receives waiting on the topic recompute when to
        wake (one that began waiting before would sleep past the new time)."""
        if not events:
            return
        now_ms = self._core.clock.now_ms()
        for event in events:
            if isinstance(event, Released) and event.not_before_ms > now_ms:
                group = self._core.groups.get(event.group)
                if group is not None:
                    self._core.scheduler.add(event.not_before_ms, group.topic)
                    self._wake_receives(group.topic)
            elif isinstance(event, Held):
                self.wake_at_next_due(event.group, event.partition, now_ms)
        self._tracer.flush()
        try:
            futures = self._core.state_writer.submit(events, sync=durable)
        except LogError as error:
            raise LogqError(f"delivery state could not be stored: {error}") from None
        if durable:
            outcomes = (
                [await _outcome(futures[0])]  # the usual case: one partition
                if len(futures) == 1
                else await asyncio.gather(*futures, return_exceptions=True)
            )
            for outcome in outcomes:
                if isinstance(outcome, OSError):  # a full or failing disk
                    raise self._core.disk.storage_error(outcome) from None
                if isinstance(outcome, BaseException):
                    raise LogqError(f"delivery state could not be stored: {outcome}") from None
        else:
            for future in futures:
                future.add_done_callback(_note_unwaited)
        self._forget_settled_lanes(events)
        for key in {event.group for event in events if not isinstance(event, Leased)}:
            group = self._core.groups.get(key)
            if group is not None:
                self._coordinator.hand_over(group)

    def wake_at_next_due(self, group_key: str, partition: int, now_ms: int) -> None:
        """Put the earliest held-back message of the group's partition on the
        timing wheel, unless an earlier wake-up for it is there already: one
        timer per group and partition, however many it holds."""
        group = self._core.groups.get(group_key)
        if group is None or partition >= len(group.deliveries):
            return
        due = group.deliveries[partition].next_due_ms()
        armed = self._core.held_wake_ups.get((group_key, partition))
        if due is None or (armed is not None and now_ms < armed <= due):
            return
        if self._core.scheduler.add(due, group.topic):
            self._core.held_wake_ups[(group_key, partition)] = due
        self._wake_receives(group.topic)  # an earlier due: waiting receives recompute

    def _wake_receives(self, topic_name: str) -> None:
        """Wake the receives waiting on the topic (they plan again, then
        wait until the earliest due time they find)."""
        topic = self._core.topics.get(topic_name)
        if topic is not None:
            topic.changed.set()

    def shared_states(self, topic_name: str, index: int) -> list[PartitionDelivery]:
        """The delivery state of partition `index` in each shared group of the topic."""
        return [
            group.deliveries[index]
            for group in self._core.groups.values()
            if group.topic == topic_name
            and group.settings.mode is GroupMode.SHARED
            and index < len(group.deliveries)
        ]

    async def load_lanes(self, topic: Topic) -> None:
        """Find the high and low batches the shared groups have not settled
        (after a restart, or when a group may stand behind the index)."""
        for partition in topic.partitions:
            if partition.lanes_loaded:
                continue
            states = partial(self.shared_states, topic.name, partition.index)
            await load_lanes(partition, states, self._core.run)

    def _forget_settled_lanes(self, events: Sequence[Event]) -> None:
        """Settled by shared groups: drop what every shared group has settled
        from the partitions' lane indexes."""
        for event in events:
            if not isinstance(event, (Settled, Seeked)):
                continue
            group = self._core.groups.get(event.group)
            topic = None if group is None else self._core.topics.get(group.topic)
            if group is None or topic is None or group.settings.mode is not GroupMode.SHARED:
                continue
            partition = topic.partitions[event.partition]
            if partition.lanes:
                ranges = event.ranges if isinstance(event, Settled) else []
                states = self.shared_states(topic.name, event.partition)
                forget_settled(partition, ranges, states)


async def _outcome(future: asyncio.Future[AppendResult]) -> AppendResult | BaseException:
    """The write's result or its exception, as `gather(return_exceptions=True)`."""
    try:
        return await future
    except Exception as error:  # handed to the caller to sort
        return error


def _note_unwaited(future: asyncio.Future[AppendResult]) -> None:
    """A state write nobody waits for: its failure is logged, not lost."""
    if not future.cancelled() and future.exception() is not None:
        logger.warning("delivery state not stored: %s", future.exception())
