"""Messages a consumer found expired in its buffer, released to the broker as expired.

A consumer leases messages ahead of handing them out (prefetch); one that
expires while it waits there is never handed to the application, and the
consumer releases it with `EXPIRED`. The broker trusts nothing of that
claim but the names: it reads the stored batches of the named offsets that
are still leased in the named delivery and screens them with the same
per-batch check it applies before leasing (`expired_offsets`, by its own
clock). What has expired goes the way an expired message found before
leasing goes: counted (`ttl_expired`), traced `expired`, and settled, or
dead-lettered with reason `expired (ttl)` when the topic says so. What has
not expired changes nothing and stays leased where it was; it is reported
with `NotExpiredError` (`NOTEXPIRED`), as stale receipts are with
`StaleDeliveryError`.
"""

from __future__ import annotations

from collections.abc import Iterable

from logq.broker.core import Core
from logq.broker.dead_lettering import DeadLetterMover
from logq.broker.delivery import Delivery, fill, leased_parts
from logq.broker.expiry import expired_offsets
from logq.broker.group import Group
from logq.broker.receipts import Named, check_named, current_parts, named_deliveries
from logq.broker.settlement import counted_stale
from logq.broker.state_commit import StateCommit
from logq.broker.topic import Topic
from logq.broker.tracing import Tracer
from logq.errors import NotExpiredError
from logq.state.events import Event, Settled
from logq.state.ranges import Range, RangeSet, ranges_of

NOT_EXPIRED_LISTED_MAX = 1000  # ids listed in one NotExpiredError (the count says the rest)
NOT_EXPIRED_SHOWN_MAX = 100  # of them, shown in its message


class ExpiredSettlement:
    """Settles what consumers release as expired; see the module doc."""

    def __init__(
        self, core: Core, tracer: Tracer, commit: StateCommit, mover: DeadLetterMover
    ) -> None:
        self._core = core
        self._tracer = tracer
        self._commit = commit
        self._mover = mover

    async def release_expired(self, topic_name: str, group_name: str, ids: Iterable[str]) -> int:
        """Release delivered messages (ids, or receipts `<id>@<lease>`) that
        have expired as the broker finds expired ones before leasing; returns
        how many. Raises StaleDeliveryError (stale receipts), else
        NotExpiredError (messages not expired by the broker's clock), after
        releasing the rest."""
        self._core.check_open()
        group = self._core.group(topic_name, group_name)
        return await self._release_expired(
            group, named_deliveries(topic_name, len(group.deliveries), ids)
        )

    async def release_expired_ranges(self, topic_name: str, group_name: str, ranges: Named) -> int:
        """`release_expired` for offset ranges [start, end) per (partition,
        lease token; 0 for none), as `ack_ranges` takes them."""
        self._core.check_open()
        group = self._core.group(topic_name, group_name)
        check_named(ranges, len(group.deliveries))
        return await self._release_expired(group, ranges)

    async def _release_expired(self, group: Group, named: Named) -> int:
        topic = self._core.topic(group.topic)
        current, stale = current_parts(group.deliveries, named)
        found: list[tuple[int, list[Range], int, str]] = []
        fresh: list[tuple[int, Range]] = []
        for partition, ranges in current.items():
            for (start, end), attempt in leased_parts(group.deliveries[partition], ranges):
                gone = await self._expired_in(topic, partition, start, end, attempt)
                if gone:
                    lease = group.deliveries[partition].lease_of(gone[0][0])
                    found.append((partition, gone, attempt, lease.consumer if lease else ""))
                left = RangeSet([(start, end)])
                for low, high in gone:
                    left.remove(low, high)
                fresh += [(partition, part) for part in left]
        count = await self._settle_expired(group, topic, found)
        if stale:
            raise counted_stale(group, stale, count)
        if fresh:
            raise _not_expired(topic.name, fresh, count)
        return count

    async def _expired_in(
        self, topic: Topic, partition: int, start: int, end: int, attempt: int
    ) -> list[Range]:
        """The offsets of [start, end) that have expired by the broker's
        clock, read from their stored batches (parts lost to damage are not)."""
        parts, _ = await fill(
            self._core.run, topic, Delivery(topic.name, partition, start, end, attempt, b"")
        )
        now_ms = self._core.clock.now_ms()
        offsets: list[int] = []
        for part in parts:
            offsets += expired_offsets(
                part.data, part.start, part.end, topic.settings.ttl_ms, now_ms
            )
        return ranges_of(offsets)

    async def _settle_expired(
        self, group: Group, topic: Topic, found: list[tuple[int, list[Range], int, str]]
    ) -> int:
        """Count, trace and settle (or dead-letter) expired leased parts."""
        events: list[Event] = []
        count = 0
        dead_letter = topic.settings.ttl_dead_letter
        for partition, ranges, attempt, consumer in found:
            size = sum(end - start for start, end in ranges)
            count += size
            group.counters["ttl_expired"] += size
            self._tracer.record(
                "expired",
                topic,
                partition,
                ranges,
                group=group.name,
                consumer=consumer,
                attempt=attempt,
                detail="ttl",
            )
            if not dead_letter:
                event = Settled(group.key, partition, ranges)
                group.deliveries[partition].apply(event)
                events.append(event)
        await self._commit.commit(events)
        for partition, ranges, attempt, _ in found if dead_letter else []:
            await self._mover.move(group, topic, partition, ranges, attempt, "expired (ttl)")
        if found:
            topic.changed.set()
        return count


def _not_expired(topic_name: str, fresh: list[tuple[int, Range]], count: int) -> NotExpiredError:
    """The error for the named messages that have not expired."""
    ids: list[str] = []
    total = 0
    for partition, (start, end) in fresh:
        total += end - start
        for offset in range(start, min(end, start + NOT_EXPIRED_LISTED_MAX - len(ids))):
            ids.append(f"{topic_name}:{partition}:{offset}")
    shown = " ".join(ids[:NOT_EXPIRED_SHOWN_MAX]) + (
        " ..." if total > NOT_EXPIRED_SHOWN_MAX else ""
    )
    return NotExpiredError(
        f"{total} of the messages named have not expired by the broker's clock; they"
        f" changed nothing and stay leased: {shown}",
        ids,
        count,
    )
