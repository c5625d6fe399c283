"""A broker's start: topics opened, the commit journal replayed, state recovered.

Topics come from their metadata records (their partition logs made, not
opened: an idle partition costs nothing until used); the commit journal
gives every partition log back what its file lost; each partition's state
log gives its groups' delivery state (one snapshot plus the tail), its
producer table, its dedup ids and, for an archived topic, its manifest. A
data directory of an earlier release is migrated once, durably.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from logq.broker.catalog import LOGS_PER_HOP, Catalog
from logq.broker.core import Core
from logq.broker.dead_letter_names import DeadLetterNames
from logq.broker.dedup import (
    expires_last_ms,
    keeps_no_ids,
    recover_partition_ids,
)
from logq.broker.group import Group, group_key
from logq.broker.metadata import (
    DEDUP_IDS_FORMAT,
    encode_record,
    group_record_key,
    topic_record_key,
)
from logq.broker.settings import TopicSettings, group_settings, topic_settings
from logq.broker.topic import Partition, Topic, parse_partition_log_id, restore_producers
from logq.errors import LogqError
from logq.log import PartitionLog
from logq.state.delivery import PartitionDelivery
from logq.state.legacy_journal import LegacyState
from logq.state.partition_state import Recovered

logger = logging.getLogger(__name__)


class Recovery:
    """Brings a broker's state back from its data directory; see the module doc."""

    def __init__(self, core: Core, catalog: Catalog) -> None:
        self._core = core
        self._catalog = catalog

    async def recover(self) -> None:
        """Open the topics, replay the commit journal, recover every group's
        state; the caller finishes what a crash interrupted (moves, redrives)."""
        recovered = await self._core.run(self._core.records.load)
        self._core.dead_letter_topics = DeadLetterNames(recovered.dead_letter_topics)
        opening: list[tuple[str, TopicSettings]] = []
        # most topics share their settings: each distinct record is parsed
        # once (settings are frozen, so topics may share one object)
        parsed: dict[bytes, TopicSettings] = {}
        for name, data in recovered.topics.items():
            key = encode_record(data)
            settings = parsed.get(key)
            if settings is None:
                try:
                    settings = parsed[key] = topic_settings(data, self._core.config.topic_defaults)
                except LogqError as error:
                    self._core.records.note_unreadable(topic_record_key(name), str(error))
                    continue
            opening.append((name, settings))
        for topic in await self._catalog.open_topics(opening):
            self._core.topics[topic.name] = topic
        await self._core.run(self._replay_commit_journal)
        self._core.writer.start(asyncio.get_running_loop())
        replayed = await self._recover_states(recovered.groups, recovered.formats)
        await self._skip_offsets_seen_before()
        self._catalog.partitions_held = sum(
            len(topic.partitions) for topic in self._core.topics.values()
        )
        limit = self._core.config.partitions_max
        if limit is not None and self._catalog.partitions_held > limit:
            logger.warning(
                "%d partitions are more than limits.partitions (%d): creates are refused"
                " until topics are deleted or the limit is raised",
                self._catalog.partitions_held,
                limit,
            )
        self._core.dead_letter_topics.made &= set(self._core.topics)
        marked: set[str] = set()
        for name in self._core.topics:
            marked |= self._core.dead_letter_topics.note(name, self._core.topics)
        for name in marked:  # some topic's DLQ, not yet marked in its record
            await self._core.records.sync(
                topic_record_key(name), self._catalog.topic_document(name)
            )
        await self._core.run(self._core.disk.measure)
        if self._core.records.damaged:
            logger.error(
                "%d damaged metadata records: the broker serves without their topics and "
                "groups (%s); see docs/operations.md, damaged metadata records",
                len(self._core.records.damaged),
                ", ".join(sorted(self._core.records.damaged)),
            )
        logger.info(
            "broker ready: %d topics, %d groups, %d journal events replayed",
            len(self._core.topics),
            len(self._core.groups),
            replayed,
        )

    def _replay_commit_journal(self) -> None:
        """Give every partition log back what the commit journal holds and its
        file lost (blocking: before the writer starts)."""
        journal = self._core.writer.journal
        if journal is None:
            return
        report = journal.replay(self._log_named)
        if report.damaged or report.gaps:
            logger.error(
                "commit journal: damaged records at %s; logs missing data: %s",
                ", ".join(report.damaged) or "none",
                "; ".join(report.gaps) or "none",
            )

    async def _skip_offsets_seen_before(self) -> None:
        """A group that has planned offsets past its partition's end saw
        messages the data log has lost (its active segment cut short below
        what the commit journal still held), and a state snapshot taken with
        more stored than the log now holds says the same: the log goes on
        past them (reporting the range), so no new message takes an offset
        a group has already settled or a producer was answered with."""
        seen_of: dict[tuple[str, int], int] = {}
        for group in self._core.groups.values():
            for index, delivery in enumerate(group.deliveries):
                key = (group.topic, index)
                seen_of[key] = max(seen_of.get(key, 0), delivery.next_offset)
        # so does the last state snapshot: every append below its data offset was answered
        snapshot_said: set[tuple[str, int]] = set()
        for name, stored_topic in self._core.topics.items():
            for index, partition in enumerate(stored_topic.partitions):
                if (partition.producers_scan_from or 0) > seen_of.get((name, index), 0):
                    seen_of[(name, index)] = partition.producers_scan_from or 0
                    snapshot_said.add((name, index))
        candidates = [
            (partition, seen, (name, index) in snapshot_said)
            for (name, index), seen in seen_of.items()
            if seen > 0
            and (topic := self._core.topics.get(name)) is not None
            and index < len(topic.partitions)
            for partition in (topic.partitions[index],)
        ]
        # a log not opened tells its end from its files where it can (idle ones stay closed)
        ends = await self._core.run(lambda: [p.log.stored_figures()[1] for p, _, _ in candidates])
        for (partition, seen, by_snapshot), end in zip(candidates, ends, strict=True):
            if seen > end:
                why = (
                    f"its last state snapshot was taken with offsets up to {seen - 1} stored"
                    if by_snapshot
                    else f"its groups were handed offsets up to {seen - 1}"
                )
                await self._core.run(functools.partial(partition.log.resume_at, seen, why))

    def _log_named(self, log_id: str) -> PartitionLog | None:
        named = parse_partition_log_id(log_id)
        if named is None:
            return None
        topic_name, index, is_state = named
        topic = self._core.topics.get(topic_name)
        if topic is None or index >= len(topic.partitions):
            return None
        return topic.state_of(index).log if is_state else topic.partitions[index].log

    async def _recover_states(self, groups: dict[tuple[str, str], Any], formats: set[str]) -> int:
        """Every group's delivery state, partition by partition, from the state
        logs (or, once, from the state of an earlier release); returns the
        events replayed after the snapshots."""
        legacy_directory = self._core.backend.state_directory
        legacy = (
            LegacyState(legacy_directory, self._core.state_config)
            if legacy_directory is not None and LegacyState.present(legacy_directory)
            else None
        )
        # state written before snapshots held the dedup ids: each partition
        # without a snapshot that holds them reads its window once
        earlier_release = legacy is not None or (
            DEDUP_IDS_FORMAT not in formats and bool(self._core.topics)
        )
        now_ms = self._core.clock.now_ms()
        recovered: dict[tuple[str, int], Recovered] = {}
        keeping_no_ids: list[tuple[Topic, Partition]] = []  # snapshotted below, with them
        work = [
            (opened, partition)
            for opened in self._core.topics.values()
            for partition in opened.partitions
        ]
        read_of: dict[str, int] = {}
        for start in range(0, len(work), LOGS_PER_HOP):  # hops of many partitions each
            chunk = work[start : start + LOGS_PER_HOP]
            results = await self._core.run(
                functools.partial(_recover_partitions, chunk, now_ms, earlier_release)
            )
            for (opened, partition), (found, batches, read_window) in zip(
                chunk, results, strict=True
            ):
                recovered[(opened.name, partition.index)] = found
                read_of[opened.name] = read_of.get(opened.name, 0) + batches
                if read_window and legacy is None:
                    keeping_no_ids.append((opened, partition))
        for name, opened in self._core.topics.items():
            read = read_of.get(name, 0)
            opened.dedup.batches_read_at_open = read
            if read or len(opened.dedup):
                logger.info(
                    "dedup window of topic %r rebuilt: %d ids from the last %d ms",
                    name,
                    len(opened.dedup),
                    opened.settings.dedup_window_ms,
                )
        legacy_groups = legacy.groups() if legacy is not None else {}
        for (name, index), found in recovered.items():
            if found.snapshot_offset is not None:
                restore_producers(
                    self._core.topics[name].partitions[index], found.producers, found.data_offset
                )
            if self._core.topics[name].settings.archive:
                self._catalog.archive_partition(
                    name,
                    self._core.topics[name].partitions[index],
                    found.archive,
                    found.archive_records,
                )
        for (topic_name, name), data in groups.items():
            topic = self._core.topics.get(topic_name)
            if topic is None:
                continue
            key = group_key(topic_name, name)
            try:
                parsed = group_settings(data, self._core.config.group_defaults)
            except LogqError as error:
                self._core.records.note_unreadable(group_record_key(topic_name, name), str(error))
                continue
            deliveries: list[PartitionDelivery] = []
            for index in range(len(topic.partitions)):
                state = (
                    legacy_groups.get(key, {}).get(index)
                    if legacy is not None
                    else recovered[(topic_name, index)].groups.get(key)
                )
                deliveries.append(state or PartitionDelivery())
            self._core.groups[key] = Group(topic_name, name, parsed, deliveries)
            topic.attach(key, deliveries)
        events = (
            legacy.events()
            if legacy is not None
            else (event for found in recovered.values() for event in found.events)
        )
        replayed = 0
        for event in events:
            group = self._core.groups.get(event.group)
            if group is not None and event.partition < len(group.deliveries):
                group.deliveries[event.partition].apply(event)
                replayed += 1
        if legacy is not None:
            await self._migrate_legacy_state(legacy)
        # a snapshot of an earlier release: the next one holds the ids, so the
        # window is read once
        stored = await asyncio.gather(
            *(self._core.state_writer.snapshot(t, p) for t, p in keeping_no_ids)
        )
        if (
            DEDUP_IDS_FORMAT not in formats
            and all(stored)
            and self._core.config.data_dir is not None
        ):
            await self._note_format(DEDUP_IDS_FORMAT)
        return replayed

    async def _note_format(self, key: str) -> None:
        """Record that the data directory's state is kept in the form `key`
        names (once the state is in that form, durably)."""
        try:
            await self._core.records.sync(key, dict)
        except LogqError as error:
            logger.warning(
                "metadata record %r not written (%s): the next start reads "
                "the state as an earlier release left it",
                key,
                error,
            )

    async def _migrate_legacy_state(self, legacy: LegacyState) -> None:
        """Store the state read from an earlier release's `state/` as a snapshot
        in every partition's state log, durably, then remove `state/`."""
        snapshots = [
            self._core.state_writer.snapshot(topic, partition)
            for topic in self._core.topics.values()
            for partition in topic.partitions
        ]
        await asyncio.gather(*snapshots)
        await self._core.run(legacy.remove)
        logger.info("delivery state of an earlier release moved into per-partition state logs")


def _recover_partitions(
    pairs: list[tuple[Topic, Partition]], now_ms: int, earlier_release: bool
) -> list[tuple[Recovered, int, bool]]:
    """`_recover_partition` of each (blocking: one hop for many)."""
    return [
        _recover_partition(topic, partition, now_ms, earlier_release=earlier_release)
        for topic, partition in pairs
    ]


def _recover_partition(
    topic: Topic, partition: Partition, now_ms: int, *, earlier_release: bool
) -> tuple[Recovered, int, bool]:
    """A partition's state log, then its dedup ids from the snapshot in it
    (and the data log's tail where a mark says so), into the topic's table;
    the batches of the data log read for them, and whether its window was
    read for want of ids in its state (blocking: at open, when nothing else
    uses the table, off the event loop)."""
    found = topic.state_of(partition.index).recover()
    read_window = keeps_no_ids(found) or (earlier_release and found.dedup is None)
    ids, batches = recover_partition_ids(
        partition.log,
        partition.index,
        found,
        now_ms,
        topic.settings.dedup_window_ms,
        read_window=read_window,
    )
    if ids:
        topic.dedup.restore(partition.index, ids, expires_last_ms(ids))
    return found, batches, read_window
