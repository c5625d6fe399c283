"""The catalogue of topics: made, changed and deleted, with their partition logs.

A topic's record (its settings) is durable before the topic takes a
message; its partitions' data and state logs are made before the record is
written and removed if the record is not (a create that fails part way
leaves nothing behind). Partition counts are held against
`limits.partitions` before anything is made. An archived topic's
partitions are put over the archive (tiered_log.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from logq.archive.tiered_log import TieredLog
from logq.broker.core import Core
from logq.broker.group_catalog import GroupCatalog
from logq.broker.metadata import topic_record_key
from logq.broker.settings import TopicSettings, check_topic_name, topic_settings
from logq.broker.topic import Partition, Topic
from logq.errors import AlreadyExistsError, BadArgumentError, CapacityError, LogqError, TooBigError
from logq.log import LogConfig, LogError, PartitionLog

logger = logging.getLogger(__name__)
# Partition logs made or recovered per hop to a storage thread at start
# (most are never opened and cost next to nothing: one hop each would be
# the cost).
LOGS_PER_HOP = 1000


class Catalog:
    """Creates, changes and deletes topics; see the module doc."""

    def __init__(self, core: Core, groups: GroupCatalog, on_delete: Callable[[str], None]) -> None:
        self._core = core
        self._groups = groups
        self._on_delete = on_delete  # forgets what other components keep of a deleted topic
        # partitions of every topic, and those of creates under way (limits.partitions)
        self.partitions_held = 0

    async def create_topic(
        self,
        name: str,
        settings: dict[str, Any] | None = None,
        *,
        exist_ok: bool = False,
        internal: bool = False,
    ) -> Topic:
        """Create a topic; `internal` (a DLQ) skips the configured name limit."""
        self._core.check_open()
        check_topic_name(name)
        parsed = topic_settings(settings or {}, self._core.config.topic_defaults)
        if name in self._core.topics:
            if exist_ok:
                return self._core.topics[name]
            raise AlreadyExistsError(f"topic {name!r} already exists")
        if not internal and len(name) > self._core.config.topic_name_length_max:
            raise BadArgumentError(
                f"topic name is {len(name)} characters, the limit "
                f"topic_name_length_max is {self._core.config.topic_name_length_max}"
            )
        self._check_partitions(parsed.partitions)
        self._check_archive(parsed)
        self._check_dlq(name, parsed.dlq_topic(name))
        self._hold_partitions(parsed.partitions, f"topic {name!r}")
        try:
            topic = await self._make_topic(name, parsed)
        except BaseException:
            self.partitions_held -= parsed.partitions
            raise
        logger.info("topic %r created with %d partitions", name, parsed.partitions)
        return topic

    async def update_topic(self, name: str, changes: dict[str, Any]) -> Topic:
        self._core.check_open()
        topic = self._core.topic(name)
        parsed = topic_settings(changes, topic.settings)
        self._check_partitions(parsed.partitions)
        self._check_archive(parsed, topic.settings)
        if parsed.dlq_topic(name) != topic.settings.dlq_topic(name):
            self._check_dlq(name, parsed.dlq_topic(name))
        if parsed.partitions < len(topic.partitions):
            raise BadArgumentError(
                f"partitions can only grow: {name!r} has {len(topic.partitions)}, "
                f"asked for {parsed.partitions}"
            )
        base = topic.log_config(self._core.config.log)
        before = len(topic.partitions)
        self._hold_partitions(parsed.partitions - before, f"topic {name!r}")
        try:
            for index in range(before, parsed.partitions):
                pair = await self._core.run(lambda i=index: self._open_partition_now(name, i, base))  # type: ignore[misc]
                topic.add_partition(*pair)
        finally:  # those that did not open are not held
            self.partitions_held -= parsed.partitions - len(topic.partitions)
        newly_archived = parsed.archive and not topic.settings.archive
        topic.settings = parsed
        for partition in topic.partitions:
            if parsed.archive:  # the archive keeps its horizons
                local = (
                    partition.log.local if isinstance(partition.log, TieredLog) else partition.log
                )
                self._core.backend.set_retention(local, None, None)
                if newly_archived or not isinstance(partition.log, TieredLog):
                    self.archive_partition(name, partition, b"", [])
            else:
                self._core.backend.set_retention(
                    partition.log, parsed.retention_ms, parsed.retention_bytes
                )
        for group in self._core.groups.values():
            if group.topic == name:
                group.add_partitions(parsed.partitions, self._core.clock.now_ms())
                topic.attach(group.key, group.deliveries)
        await self._save_topic(name)
        return topic

    async def delete_topic(self, name: str) -> None:
        self._core.check_open()
        topic = self._core.topic(name)
        del self._core.topics[name]
        self.partitions_held -= len(topic.partitions)
        groups = [group for group in self._core.groups.values() if group.topic == name]
        for group in groups:
            del self._core.groups[group.key]
        self._core.metrics.forget(name)
        self._on_delete(name)
        # the topic record goes first: a crash before its group records go
        # leaves them without a topic, and the next start deletes them
        await self._save_topic(name)
        await asyncio.gather(*(self._groups.save(name, group.name) for group in groups))
        # the commit journal must hold no copy of these logs when their files
        # go: a topic made again under this name would be given them back
        await self._core.writer.flush()
        for log in partition_logs(topic):
            await self._core.run(log.close)
        await self._core.run(lambda: self._core.backend.delete_topic(name))
        if self._core.archive is not None and topic.settings.archive:
            await self._core.archive.delete_topic(name)
        logger.info("topic %r deleted", name)

    def _check_dlq(self, name: str, dlq: str) -> None:
        """A DLQ is a topic only the broker writes to: a new name (the broker
        makes it), or one already some topic's DLQ; never a topic in use."""
        if dlq == name:
            raise BadArgumentError(f"topic {name!r} cannot be its own dead-letter topic")
        if dlq in self._core.topics and dlq not in self._core.dead_letter_topics:
            raise BadArgumentError(
                f"dlq {dlq!r} is a topic in use, not a dead-letter topic: name a new one"
                " (the broker makes it) or another topic's DLQ"
            )

    def _check_archive(self, settings: TopicSettings, before: TopicSettings | None = None) -> None:
        if settings.archive and self._core.archive is None:
            raise BadArgumentError(
                "archive: this broker has no archive (start it with --archive URL)"
            )
        if before is not None and before.archive and not settings.archive:
            raise BadArgumentError(
                "archive cannot be turned off for a topic (delete the topic to remove"
                " its archived data)"
            )

    def _check_partitions(self, partitions: int) -> None:
        limit = self._core.config.partitions_per_topic_max
        if partitions > limit:
            raise TooBigError(
                f"{partitions} partitions, the limit partitions_per_topic_max is {limit}"
            )

    def _hold_partitions(self, count: int, what: str) -> None:
        """Count `count` more partitions against limits.partitions, or refuse
        with CAPACITY before anything is made."""
        limit = self._core.config.partitions_max
        if count > 0 and limit is not None and self.partitions_held + count > limit:
            raise CapacityError(
                f"{what} needs {count} more partitions and the broker holds "
                f"{self.partitions_held}, the limit limits.partitions is {limit}: "
                "delete topics or raise the limit"
            )
        self.partitions_held += count

    async def _make_topic(self, name: str, settings: TopicSettings) -> Topic:
        """A new topic in full, or nothing of it: a create that fails part way
        (out of descriptors, a full disk) leaves no files behind, and files
        left by a create that a crash cut short are cleared first (they never
        held an acknowledged message: a topic takes messages once its
        record is stored). A name whose record is damaged is refused before
        anything is touched: its files are that topic's data."""
        self._core.records.check_usable(topic_record_key(name))
        if await self._core.run(lambda: self._core.backend.has_topic_files(name)):
            logger.warning(
                "clearing leftover files of topic %r, which no metadata record names", name
            )
            await self._core.run(lambda: self._core.backend.delete_topic(name))
        try:
            topic = await self._open_topic(name, settings)
        except BaseException:
            await self._remove_topic_files(name)
            raise
        if settings.archive:
            for partition in topic.partitions:
                self.archive_partition(name, partition, b"", [])
        self._core.topics[name] = topic
        try:
            await self._save_topic(name)
        except BaseException:
            del self._core.topics[name]
            await self.close_logs(partition_logs(topic))
            await self._remove_topic_files(name)
            raise
        return topic

    async def _remove_topic_files(self, name: str) -> None:
        try:
            await self._core.run(lambda: self._core.backend.delete_topic(name))
        except (LogqError, LogError, OSError) as error:
            logger.warning("removing the files of topic %r failed: %s", name, error)

    async def _open_topic(self, name: str, settings: TopicSettings) -> Topic:
        return (await self.open_topics([(name, settings)]))[0]

    async def open_topics(self, wanted: Sequence[tuple[str, TopicSettings]]) -> list[Topic]:
        """The topics, their partition logs made (not opened) in hops to the
        storage threads of up to LOGS_PER_HOP partitions each; all or none."""
        logs: dict[str, list[tuple[PartitionLog, PartitionLog]]] = {name: [] for name, _ in wanted}
        work = [
            (name, p, settings) for name, settings in wanted for p in range(settings.partitions)
        ]

        by_retention: dict[tuple[int | None, int | None], LogConfig] = {}
        configs: dict[str, LogConfig] = {}
        for name, settings in wanted:  # one config per distinct retention
            # an archived topic's retention is the archive's (archive/retention.py)
            retention = (
                (None, None)
                if settings.archive
                else (settings.retention_ms, settings.retention_bytes)
            )
            config = by_retention.get(retention)
            if config is None:
                config = by_retention[retention] = replace(
                    self._core.config.log, retention_ms=retention[0], retention_bytes=retention[1]
                )
            configs[name] = config

        def open_logs(chunk: list[tuple[str, int, TopicSettings]]) -> None:
            for name, p, _ in chunk:
                logs[name].append(self._open_partition_now(name, p, configs[name]))

        try:
            for start in range(0, len(work), LOGS_PER_HOP):
                await self._core.run(
                    functools.partial(open_logs, work[start : start + LOGS_PER_HOP])
                )
        except BaseException:
            made = [log for pairs in logs.values() for pair in pairs for log in pair]
            await self.close_logs(made)  # none left open
            raise
        return [
            Topic(
                name,
                settings,
                logs[name],
                self._core.run,
                self._core.writer,
                self._core.disk.storage_error,
                self._core.config.snapshot_bytes,
            )
            for name, settings in wanted
        ]

    def _open_partition_now(
        self, name: str, index: int, config: LogConfig
    ) -> tuple[PartitionLog, PartitionLog]:
        """A partition's data log and state log, both or neither (blocking)."""
        log = self._core.backend.open_log(name, index, config)
        try:
            state_log = self._core.backend.open_state_log(name, index, self._core.state_config)
        except BaseException:
            log.close()
            raise
        return log, state_log

    async def close_logs(self, logs: Sequence[PartitionLog]) -> None:
        for log in logs:
            try:
                await self._core.run(log.close)
            except (LogqError, LogError) as error:
                logger.warning("closing a partition log failed: %s", error)

    async def _save_topic(self, name: str) -> None:
        """Write topic `name`'s record (deleted when the topic is gone), and
        the record of each topic that became a dead-letter topic by this
        change; returns once they are durable. Nothing else is written:
        concurrent changes of other topics write side by side."""
        marked = self._core.dead_letter_topics.note(name, self._core.topics) - {name}
        await asyncio.gather(
            *(self._core.records.sync(topic_record_key(n), self.topic_document(n)) for n in marked),
            self._core.records.sync(topic_record_key(name), self.topic_document(name)),
        )

    def topic_document(self, name: str) -> Callable[[], dict[str, Any] | None]:
        def document() -> dict[str, Any] | None:
            topic = self._core.topics.get(name)
            if topic is None:
                return None
            return {
                "settings": topic.settings.as_dict(),
                "dead_letter_topic": name in self._core.dead_letter_topics.made,
            }

        return document

    def archive_partition(
        self, name: str, partition: Partition, snapshot: bytes, records: list[bytes]
    ) -> None:
        """Put the partition's log over the archive, with its manifest."""
        assert self._core.archive is not None
        local = partition.log
        partition.log = self._core.archive.wrap(
            name, partition.index, local, lambda: local.readable_offset, snapshot, records
        )

    def write_archive_record(self, name: str, index: int, record: bytes) -> Awaitable[object]:
        """Hand a manifest record to the partition's state log (now)."""
        topic = self._core.topic(name)
        state = topic.state_of(index)
        batch = state.archive_batch(record, self._core.clock.now_ms())
        return self._core.writer.write(state.log, state.log_id, batch)

    def archived_partition_document(self, name: str, index: int) -> dict[str, object]:
        """What the store's copy of a manifest carries for a restore: the
        topic's settings, and each group's settings and position in the
        partition (below it, everything settled)."""
        topic = self._core.topics.get(name)
        return {
            "partitions": len(topic.partitions) if topic is not None else 0,
            "settings": topic.settings.as_dict() if topic is not None else {},
            "groups": {
                group.name: {
                    "settings": group.settings.as_dict(),
                    "committed": group.deliveries[index].floor,
                }
                for group in self._core.groups.values()
                if group.topic == name
                and index < len(group.deliveries)
                and not group.name.startswith("~")
            },
        }


def partition_logs(topic: Topic) -> list[PartitionLog]:
    """A topic's data logs and state logs (an archived partition's local log,
    which is what its storage backend opened and closes)."""
    return [
        log
        for p in topic.partitions
        for log in (
            p.log.local if isinstance(p.log, TieredLog) else p.log,
            topic.state_of(p.index).log,
        )
    ]
