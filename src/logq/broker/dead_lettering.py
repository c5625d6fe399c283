"""Dead-lettering: a group's messages copied to the dead-letter topic, then settled.

A move first holds the offsets (a lease of their own under a fresh token,
journaled), copies each message to the topic's DLQ with its origin (id,
group, attempts, reason, when), then settles the offsets in the group. The
copies carry dedup ids made of the group, the message and the hold, so a
move that a crash cut short runs again after recovery (the hold is found
in the state) and stores each copy once.
"""

from __future__ import annotations

import hashlib

from logq.broker.catalog import Catalog
from logq.broker.core import Core
from logq.broker.damage import without
from logq.broker.delivery import (
    DLQ_CONSUMER,
    DLQ_HOLD_MS,
    HEADER_ATTEMPTS,
    HEADER_DEAD_AT,
    HEADER_GROUP,
    HEADER_ORIGIN_ID,
    HEADER_REASON,
    Delivery,
    decode_delivery,
    fill,
    lose,
)
from logq.broker.group import Group
from logq.broker.messages import Message, OutgoingMessage
from logq.broker.publishing import Publisher
from logq.broker.state_commit import StateCommit
from logq.broker.topic import Topic
from logq.broker.tracing import Tracer
from logq.state.events import Leased, Settled
from logq.state.ranges import Range

__all__ = ["DLQ_CONSUMER", "DeadLetterMover"]


class DeadLetterMover:
    """Moves messages of a group to its topic's dead-letter topic."""

    def __init__(
        self,
        core: Core,
        tracer: Tracer,
        commit: StateCommit,
        catalog: Catalog,
        publisher: Publisher,
    ) -> None:
        self._core = core
        self._tracer = tracer
        self._commit = commit
        self._catalog = catalog
        self._publisher = publisher

    async def move(
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
        now_ms = self._core.clock.now_ms()
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
        await self._commit.commit([hold])
        dlq = self._core.dlq_name(topic.name)
        await self._catalog.create_topic(dlq, {"partitions": 1}, exist_ok=True, internal=True)
        outgoing: list[OutgoingMessage] = []
        damaged: list[tuple[int, Range]] = []
        messages: list[Message] = []
        for start, end in ranges:
            parts, gone = await fill(
                self._core.run, topic, Delivery(topic.name, partition, start, end, attempt, b"")
            )
            damaged += [(partition, found) for found in gone]
            messages += [m for part in parts for m in decode_delivery(part, self._core.lanes)]
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
            await self._publisher.publish(dlq, outgoing[index : index + 1000], as_broker=True)
        lost_events = lose(group, topic, damaged, self._tracer)
        moved = without(ranges, [found for _, found in damaged])
        settle = Settled(group.key, partition, moved)
        state.apply(settle)
        self._tracer.record(
            "dead_lettered",
            topic,
            partition,
            moved,
            group=group.name,
            attempt=attempt,
            detail=f"{reason} -> {dlq}",
        )
        await self._commit.commit([*lost_events, settle])
        group.counters["dead_lettered"] += sum(end - start for start, end in moved)

    async def finish_moves(self) -> int:
        """After recovery, finish the dead-letter moves a crash interrupted (their
        holds are in the journal) at once, rather than when the holds expire."""
        moved = 0
        for group in list(self._core.groups.values()):
            topic = self._core.topics.get(group.topic)
            if topic is None:
                continue
            for partition, state in enumerate(group.deliveries):
                holds = [lease for lease in state.leases if lease.consumer == DLQ_CONSUMER]
                for lease in holds:
                    parts = state.unsettled_ranges(lease.start, lease.end)
                    if parts:
                        await self.move(
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
