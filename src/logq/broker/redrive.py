"""Redrive as steps that recovery finishes: hold, hand back, settle.

A redrive changes two partitions' state: the origin group's (the message is
deliverable again) and the DLQ group's (the letter leaves the DLQ). Their
state logs are written apart, so a crash can keep one change and lose the
other. The redrive of letters of one DLQ partition therefore runs as three
steps, each durable before the next begins:

1. hold: the letters are leased in the DLQ group to `REDRIVE_CONSUMER`
   under a new lease token (the intent, in the DLQ partition's state log);
2. hand back: a `Redriven` event per origin group and partition, naming
   the DLQ partition (`source`) and the hold's token;
3. settle: the letters are settled in the DLQ group (the hold goes with it).

A group's partition applies a redrive from one source at most once (its
state keeps the last token applied per source, and tokens of one source
only grow), so step 2 may run again. Recovery finds unfinished holds in the
DLQ groups and runs steps 2 and 3 again from the letters: a redrive is
either finished or, if its hold never became durable, never happened. Every
DLQ operation (redrive, purge, requeue) finishes the unfinished holds of its
DLQ first, under the DLQ's lock, so holds finish in token order.

The broker's `fault_hook` (test-only fault injection, see config.py) is
awaited between the steps, at the points named `redrive.held` and
`redrive.handed_back`.
"""

from __future__ import annotations

from logq.broker.core import Core
from logq.broker.delivery import HEADER_DEAD_AT, HEADER_GROUP, HEADER_ORIGIN_ID, REDRIVE_CONSUMER
from logq.broker.group import Group, group_key
from logq.broker.messages import Message, MessageId
from logq.broker.reading import Reader
from logq.broker.state_commit import StateCommit
from logq.broker.tracing import Tracer
from logq.errors import BadArgumentError, LogqError, MessageNotFoundError
from logq.state.events import Event, Leased, Redriven, Released, Settled
from logq.state.ranges import Range, ranges_of

FAULT_HELD = "redrive.held"
FAULT_HANDED_BACK = "redrive.handed_back"
LETTERS_PAGE = 1000


class Redrives:
    """Runs the steps of redrives (see the module doc); the caller holds the DLQ's lock."""

    def __init__(self, core: Core, tracer: Tracer, commit: StateCommit, reader: Reader) -> None:
        self._core = core
        self._tracer = tracer
        self._commit = commit
        self._reader = reader

    async def _fault(self, point: str) -> None:
        hook = self._core.config.fault_hook
        if hook is not None:
            await hook(point)

    async def finish(self, dlq_group: Group) -> int:
        """Run steps 2 and 3 of every unfinished hold of `dlq_group`, oldest
        first (the caller holds the DLQ's lock)."""
        finished = 0
        for partition, state in enumerate(dlq_group.deliveries):
            held: dict[int, list[Range]] = {}  # token -> its ranges (a hold of several)
            for lease in state.leases:
                if lease.consumer == REDRIVE_CONSUMER:
                    held.setdefault(lease.token, []).extend(
                        state.unsettled_ranges(lease.start, lease.end)
                    )
            for token, found in sorted(held.items()):
                if not found:
                    continue
                ranges = sorted(found)
                letters = await self._letters_within(dlq_group.topic, partition, ranges)
                finished += await self._hand_back(dlq_group, partition, letters, ranges, token)
        return finished

    async def _letters_within(
        self, name: str, partition: int, ranges: list[Range]
    ) -> list[Message]:
        """The letters of `ranges` still stored (retention may have taken some)."""
        letters: list[Message] = []
        for start, end in ranges:
            offset = start
            while offset < end:
                page = await self._reader.read_messages(
                    name, partition, offset=offset, limit=LETTERS_PAGE
                )
                letters += [m for m in page if start <= m.offset < end]
                if not page or page[-1].offset + 1 >= end:
                    break
                offset = page[-1].offset + 1
        return letters

    async def redrive_held(self, dlq_group: Group, partition: int, letters: list[Message]) -> int:
        """Redrive `letters` (unsettled, of one DLQ partition): hold them, then
        hand them back and settle them."""
        state = dlq_group.deliveries[partition]
        now_ms = self._core.clock.now_ms()
        source = _source(dlq_group.topic, partition)
        # above the last redrive every target applied from this source, so a
        # DLQ made again (its tokens start afresh) still redrives
        token = max(
            [state.next_token(now_ms)]
            + [
                self._core.groups[key].deliveries[index].redrives.get(source, 0) + 1
                for key, index in self._targets(letters)
            ]
        )
        ranges = ranges_of(sorted({letter.offset for letter in letters}))
        hold = Leased(dlq_group.key, partition, ranges, REDRIVE_CONSUMER, now_ms, 0, now_ms, token)
        state.apply(hold)
        try:
            await self._commit.commit([hold])
        except LogqError:
            # not stored (a failed write stores nothing): nor is it held here
            state.apply(Released(dlq_group.key, partition, ranges, 0, 0))
            raise
        await self._fault(FAULT_HELD)
        return await self._hand_back(dlq_group, partition, letters, ranges, token)

    def _target_of(self, letter: Message) -> tuple[str, int] | None:
        """(origin group key, origin partition) of a letter; None when the
        group or partition is gone (the letter just leaves the DLQ)."""
        origin = origin_of(letter)
        group = self._core.groups.get(group_key(origin.topic, letter.headers.get(HEADER_GROUP, "")))
        if group is None or origin.partition >= len(group.deliveries):
            return None
        return group.key, origin.partition

    def _targets(self, letters: list[Message]) -> dict[tuple[str, int], list[int]]:
        """(origin group key, origin partition) -> origin offsets of `letters`."""
        targets: dict[tuple[str, int], list[int]] = {}
        for letter in letters:
            target = self._target_of(letter)
            if target is not None:
                targets.setdefault(target, []).append(origin_of(letter).offset)
        return targets

    async def _hand_back(
        self,
        dlq_group: Group,
        partition: int,
        letters: list[Message],
        ranges: list[Range],
        token: int,
    ) -> int:
        """Steps 2 and 3 of the redrive held under `token`: hand the letters
        back to their groups (where not done already), then settle `ranges`
        in the DLQ group. Returns how many went back now."""
        now_ms = self._core.clock.now_ms()
        source = _source(dlq_group.topic, partition)
        events: list[Event] = []
        fresh: set[tuple[str, int]] = set()
        for (key, index), offsets in self._targets(letters).items():
            group = self._core.groups[key]
            event = Redriven(key, index, ranges_of(sorted(set(offsets))), now_ms, source, token)
            events.append(event)  # written again if applied: its second copy changes nothing
            if not group.deliveries[index].takes_redrive(source, token):
                continue
            fresh.add((key, index))
            group.deliveries[index].apply(event)
            group.counters["redriven"] += len(offsets)
            self._tracer.record(
                "redriven",
                self._core.topics[group.topic],
                index,
                event.ranges,
                group=group.name,
                detail=f"from {dlq_group.topic}",
            )
        handed_back = 0
        for letter in letters:
            target = self._target_of(letter)
            if target is None or target not in fresh:
                continue
            handed_back += 1
            dead_at = letter.headers.get(HEADER_DEAD_AT, "")
            if dead_at.isdecimal():
                self._core.groups[target[0]].lifecycle.redriven(now_ms - int(dead_at))
        await self._commit.commit(events)
        await self._fault(FAULT_HANDED_BACK)
        settle = Settled(dlq_group.key, partition, ranges)
        dlq_group.deliveries[partition].apply(settle)
        await self._commit.commit([settle])
        return handed_back


def _source(dlq_topic: str, partition: int) -> str:
    return f"{dlq_topic}:{partition}"


def origin_of(letter: Message) -> MessageId:
    text = letter.headers.get(HEADER_ORIGIN_ID)
    if text is None:
        raise MessageNotFoundError(f"{letter.id} carries no {HEADER_ORIGIN_ID} header")
    return MessageId.parse(text)


def origin_topic_of(letter: Message) -> str | None:
    """The topic a letter came from; None for a letter with no (valid) origin."""
    text = letter.headers.get(HEADER_ORIGIN_ID)
    if text is None:
        return None
    try:
        return MessageId.parse(text).topic
    except BadArgumentError:
        return None
