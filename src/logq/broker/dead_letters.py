"""Dead-letter operations: list, redrive, purge.

A dead-letter topic is an ordinary topic (consumable, replayable). What
"in the DLQ" means is kept by an internal group of that topic, `~dlq`
(a name no user can give): a dead letter is listed until that group
settles it, which redrive and purge do. Redrive hands each message back
to the group that dead-lettered it (attempts start over), and settles its
dead letter, in steps that recovery finishes (redrive.py): the other
groups of the origin topic, which already handled it, never see it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from logq.broker.core import Core
from logq.broker.dead_letter_names import DLQ_GROUP
from logq.broker.delivery import HEADER_GROUP, HEADER_ORIGIN_ID
from logq.broker.group import Group, group_key
from logq.broker.group_catalog import GroupCatalog
from logq.broker.messages import Message, MessageId, OutgoingMessage
from logq.broker.publishing import Publisher
from logq.broker.reading import Reader
from logq.broker.redrive import Redrives, origin_of, origin_topic_of
from logq.broker.state_commit import StateCommit
from logq.errors import BadArgumentError, MessageNotFoundError
from logq.state.events import Event, Settled
from logq.state.ranges import ranges_of

DLQ_PAGE = 1000
IDS_PER_CALL_MAX = 100_000
DLQ_LIST_MAX = 10_000  # letters one listing returns, as a peek (all of them are in memory)


class DeadLetters:
    """Lists, redrives, purges and requeues the letters of dead-letter topics."""

    def __init__(
        self,
        core: Core,
        commit: StateCommit,
        groups: GroupCatalog,
        reader: Reader,
        publisher: Publisher,
        redrives: Redrives,
    ) -> None:
        self._core = core
        self._commit = commit
        self._groups = groups
        self._reader = reader
        self._publisher = publisher
        self._redrives = redrives
        self._locks: dict[str, asyncio.Lock] = {}  # one DLQ action at a time per DLQ

    async def _dlq_group(self, dlq_topic: str) -> Group:
        return await self._groups.internal_group(dlq_topic, DLQ_GROUP)

    def forget(self, topic_name: str) -> None:
        """A deleted topic's lock goes with it."""
        self._locks.pop(topic_name, None)

    async def finish_redrives(self) -> int:
        """After recovery, finish the redrives a crash interrupted (their holds
        are in the DLQ groups' state); returns how many letters went back."""
        finished = 0
        for group in list(self._core.groups.values()):
            if group.name == DLQ_GROUP and group.topic in self._core.topics:
                async with self._locks.setdefault(group.topic, asyncio.Lock()):
                    finished += await self._redrives.finish(group)
        return finished

    async def dlq_messages(self, topic_name: str, limit: int = 100) -> list[Message]:
        """Dead letters of `topic_name` not yet redriven or purged, oldest first."""
        name = self._core.dlq_name(topic_name)
        if name not in self._core.topics:
            return []
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= DLQ_LIST_MAX:
            raise BadArgumentError(f"limit must be within 1..{DLQ_LIST_MAX}, got {limit!r}")
        group = await self._dlq_group(name)
        found: list[Message] = []
        for partition, state in enumerate(group.deliveries):
            stored = self._core.topic(name).partitions[partition]
            offset, end = max(state.floor, stored.log.first_offset), stored.readable_end()
            while len(found) < limit and offset < end:
                page = await self._reader.read_messages(
                    name, partition, offset=offset, limit=DLQ_PAGE
                )
                if not page:
                    break
                found.extend(m for m in page if not state.is_settled(m.offset))
                offset = page[-1].offset + 1
        found.sort(key=lambda m: (m.timestamp_ms, m.partition, m.offset))
        return found[:limit]

    @contextlib.asynccontextmanager
    async def _dlq_lock(self, topic_name: str) -> AsyncIterator[None]:
        """Redrive, purge and requeue of one DLQ run one at a time: each reads
        which letters are still in it, then settles them. Each first finishes
        the redrives its DLQ left unfinished (a failed write), oldest first."""
        name = self._core.dlq_name(topic_name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            group = self._core.groups.get(group_key(name, DLQ_GROUP))
            if group is not None and name in self._core.topics:
                await self._redrives.finish(group)
            yield

    async def redrive(self, topic_name: str, ids: list[str] | None = None) -> int:
        """Hand dead letters back to the groups that dead-lettered them
        (all of them when `ids` is None); returns how many went back."""
        async with self._dlq_lock(topic_name):
            return await self._redrive(topic_name, ids)

    async def purge_dlq(self, topic_name: str, ids: list[str] | None = None) -> int:
        """Drop dead letters of `topic_name` from the DLQ (the given dead-letter
        ids, or every one); returns how many."""
        async with self._dlq_lock(topic_name):
            return await self._purge(topic_name, ids)

    async def requeue_dlq(self, topic_name: str, ids: list[str] | None = None) -> int:
        """Publish dead letters again to their topic as new messages (every
        group sees them, as a fresh publish), then drop them from the DLQ;
        returns how many. Each copy carries a dedup id from its dead letter, so
        a requeue repeated after a crash within the dedup window stores once."""
        async with self._dlq_lock(topic_name):
            return await self._requeue(topic_name, ids)

    async def _redrive(self, topic_name: str, ids: list[str] | None) -> int:
        redriven = 0
        async for name, dlq_group, letters in self._chosen(topic_name, ids):
            redriven += await self._redrive_letters(name, dlq_group, letters)
        return redriven

    async def _redrive_letters(self, name: str, dlq_group: Group, letters: list[Message]) -> int:
        by_partition: dict[int, dict[int, Message]] = {}
        for letter in letters:
            if not dlq_group.deliveries[letter.partition].is_settled(letter.offset):
                by_partition.setdefault(letter.partition, {})[letter.offset] = letter
        redriven = 0
        for partition, chosen in by_partition.items():
            redriven += await self._redrives.redrive_held(
                dlq_group, partition, list(chosen.values())
            )
        return redriven

    async def _purge(self, topic_name: str, ids: list[str] | None) -> int:
        self._core.check_open()
        name = self._core.dlq_name(topic_name)
        if name not in self._core.topics:
            return 0
        shared = any(
            other != topic_name and topic.settings.dlq_topic(other) == name
            for other, topic in self._core.topics.items()
        )
        if ids is not None or shared:  # letter by letter: only this topic's letters go
            purged = 0
            async for _, group, letters in self._chosen(topic_name, ids, orphans=True):
                purged += await self._settle_letters(group, letters)
            return purged
        group = await self._dlq_group(name)
        events: list[Event] = []
        purged = 0
        for partition, state in enumerate(group.deliveries):
            stored = self._core.topic(name).partitions[partition]
            gaps = state.unsettled_ranges(state.floor, stored.readable_end())
            if gaps:
                # letters retention already removed are settled too, not counted
                first = stored.log.first_offset
                purged += sum(stop - max(start, first) for start, stop in gaps if stop > first)
                events.append(Settled(group.key, partition, gaps))
        for event in events:
            group.deliveries[event.partition].apply(event)
        await self._commit.commit(events)
        return purged

    async def _requeue(self, topic_name: str, ids: list[str] | None) -> int:
        if topic_name in self._core.dead_letter_topics:
            raise BadArgumentError(
                f"{topic_name!r} is a dead-letter topic: its letters cannot be published"
                " to it again; redrive them to the group that dead-lettered them"
            )
        requeued = 0
        async for _, group, letters in self._chosen(topic_name, ids):
            requeued += await self._requeue_letters(topic_name, group, letters)
        return requeued

    async def _requeue_letters(self, topic_name: str, group: Group, letters: list[Message]) -> int:
        letters = [
            letter
            for letter in letters
            if not group.deliveries[letter.partition].is_settled(letter.offset)
        ]
        copies = [
            OutgoingMessage(
                letter.value,
                letter.key,
                {k: v for k, v in letter.headers.items() if not k.startswith("logq-")},
                letter.priority,
                origin_of(letter).partition,
                dedup_id=f"requeue:{letter.id}",
            )
            for letter in letters
        ]
        for start in range(0, len(copies), 1000):
            await self._publisher.publish(topic_name, copies[start : start + 1000])
        return await self._settle_letters(group, letters)

    async def _chosen(
        self, topic_name: str, ids: list[str] | None, *, orphans: bool = False
    ) -> AsyncIterator[tuple[str, Group, list[Message]]]:
        """The DLQ's name, its group and the dead letters of `topic_name` that
        `ids` names, each once; when None, every letter in the DLQ that came
        from `topic_name` (a DLQ may be shared), a page at a time, so memory
        holds one page however long the DLQ. Nothing when there is no DLQ."""
        self._core.check_open()
        name = self._core.dlq_name(topic_name)
        if name not in self._core.topics:
            return
        group = await self._dlq_group(name)
        if ids is not None:
            yield name, group, await self._letters(topic_name, name, ids, orphans=orphans)
            return
        for partition, state in enumerate(group.deliveries):
            stored = self._core.topic(name).partitions[partition]
            offset, end = max(state.floor, stored.log.first_offset), stored.readable_end()
            while offset < end:  # letters arriving meanwhile wait for the next call
                page = await self._reader.read_messages(
                    name, partition, offset=offset, limit=DLQ_PAGE
                )
                if not page:
                    break
                offset = page[-1].offset + 1
                letters = [
                    m
                    for m in page
                    if m.offset < end
                    and not state.is_settled(m.offset)
                    and origin_topic_of(m) == topic_name
                ]
                if letters:
                    yield name, group, letters

    async def _letters(
        self, topic_name: str, name: str, ids: list[str], *, orphans: bool = False
    ) -> list[Message]:
        """The named letters of `topic_name`; `orphans`: letters with no
        origin too (a purge can drop them, nothing can send them back)."""
        if len(ids) > IDS_PER_CALL_MAX:
            raise BadArgumentError(f"{len(ids)} ids in one call, the limit is {IDS_PER_CALL_MAX}")
        letters: list[Message] = []
        for text in dict.fromkeys(ids):  # each letter once, however often it is named
            if MessageId.parse(text).topic != name:
                raise BadArgumentError(
                    f"{text!r} is not a dead letter of {topic_name!r} (those are {name}:...)"
                )
            letter = await self._reader.get_message(text)
            origin = origin_topic_of(letter)
            if origin is None and not orphans:
                raise MessageNotFoundError(f"{text} carries no {HEADER_ORIGIN_ID} header")
            if origin is not None and origin != topic_name:
                raise BadArgumentError(
                    f"{text!r} is a dead letter of {origin!r}, not of {topic_name!r}"
                )
            letters.append(letter)
        return letters

    async def _settle_letters(self, group: Group, letters: list[Message]) -> int:
        """Take dead letters out of the DLQ; how many were still in it."""
        settled: dict[int, list[int]] = {}
        for letter in letters:
            if not group.deliveries[letter.partition].is_settled(letter.offset):
                settled.setdefault(letter.partition, []).append(letter.offset)
        events: list[Event] = [
            Settled(group.key, partition, ranges_of(sorted(set(offsets))))
            for partition, offsets in settled.items()
        ]
        for event in events:
            group.deliveries[event.partition].apply(event)
        await self._commit.commit(events)
        return sum(len(set(offsets)) for offsets in settled.values())


__all__ = ["DLQ_GROUP", "HEADER_GROUP", "HEADER_ORIGIN_ID", "DeadLetters"]
