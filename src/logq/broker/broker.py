"""The Broker: one facade with async methods that every front end calls.

It owns the topics (partition logs), the groups (delivery state), the state
journal and a thread pool for blocking storage work. Topic and group
operations live here; the rest is mixed in, a module per job: delivery
(receive, ack, nack, reject, extend, seek, lease expiry) in `delivery.py`,
which builds on group membership (`coordination.py`) and tracing
(`tracing.py`); dead letters in `dead_letters.py`; replays in `replay.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from typing import Any, TypeVar

from logq.archive.tiered_log import TieredLog
from logq.broker.archiving import BrokerArchive
from logq.broker.clock import Clock, SystemClock
from logq.broker.commit import Commits
from logq.broker.config import BrokerConfig
from logq.broker.dead_letter_names import DeadLetterNames
from logq.broker.dead_letters import DeadLetterMixin, internal_group
from logq.broker.dedup import (
    DEDUP_ID_LENGTH_MAX,
    HEADER_DEDUP_ID,
    DedupTable,
    Seen,
    dedup_id_of,
    expires_last_ms,
    keeps_no_ids,
    recover_partition_ids,
)
from logq.broker.delays import check_delay
from logq.broker.disk import DiskGuard
from logq.broker.errors import from_log_error
from logq.broker.expired_settlement import ExpiredSettlementMixin
from logq.broker.expiry import HEADER_EXPIRES_AT
from logq.broker.group import Group, group_key
from logq.broker.lane_index import forget_loaded
from logq.broker.messages import (
    Message,
    MessageId,
    OutgoingMessage,
    PublishResult,
    message_from_record,
)
from logq.broker.metadata import (
    DEDUP_IDS_FORMAT,
    MetadataRecords,
    encode_record,
    group_record_key,
    topic_record_key,
)
from logq.broker.metrics import Metrics
from logq.broker.replay import ReplayMixin
from logq.broker.scrubber import Scrubber
from logq.broker.settings import (
    GroupMode,
    TopicSettings,
    check_group_name,
    check_topic_name,
    group_settings,
    topic_settings,
)
from logq.broker.state_writer import StateWriter
from logq.broker.topic import Partition, Topic, parse_partition_log_id, restore_producers
from logq.broker.topic_counts import group_counts, lag_end, topic_counts
from logq.broker.wheel import TimingWheel
from logq.durations import parse_duration_ms
from logq.errors import (
    AlreadyExistsError,
    BadArgumentError,
    CapacityError,
    GroupNotFoundError,
    LogqError,
    MessageNotFoundError,
    ShuttingDownError,
    TooBigError,
    TopicNotFoundError,
)
from logq.lanes import Lanes
from logq.log import (
    DirectoryLock,
    FileBackend,
    FsyncPolicy,
    LogConfig,
    LogError,
    MemoryBackend,
    PartitionLog,
    RetentionResult,
    StorageBackend,
    decode_batch,
    encode_batch,
)
from logq.log.batch import (
    DEDUP,
    DELAYED,
    EXPIRING,
    check_record_sizes,
    header_names_with,
    iter_headers,
    read_header,
)
from logq.log.file_cache import OPEN_FILES_DEFAULT, FileCache
from logq.log.writer import Writer
from logq.partitioning import partition_for_key
from logq.state.delivery import PartitionDelivery
from logq.state.legacy_journal import LegacyState
from logq.state.partition_state import Recovered
from logq.state.trace import TraceLog, TraceRecord

logger = logging.getLogger(__name__)
T = TypeVar("T")
READ_CHUNK_BYTES = 1 << 20
# Partition logs made or recovered per hop to a storage thread at start
# (most are never opened and cost next to nothing: one hop each would be
# the cost).
LOGS_PER_HOP = 1000
PEEK_LIMIT_MAX = 10_000


class Broker(ExpiredSettlementMixin, DeadLetterMixin, ReplayMixin):
    """A running broker. Build it with `await Broker.open(config)`."""

    def __init__(self, config: BrokerConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.backend: StorageBackend = (
            MemoryBackend()
            if config.data_dir is None
            else FileBackend(
                config.data_dir, FileCache(config.open_files_max or OPEN_FILES_DEFAULT)
            )
        )
        self.records = MetadataRecords(self.backend, self.run)
        self.topics: dict[str, Topic] = {}
        self.groups: dict[str, Group] = {}
        self.metrics = Metrics()
        self.disk = DiskGuard(config.data_dir, config.disk_free_min_bytes)
        self._disk_checked_ms = clock.now_ms()
        self._executor = ThreadPoolExecutor(
            max_workers=config.storage_threads, thread_name_prefix="logq-storage"
        )
        self.writer = Commits(
            Writer(
                self.backend.open_commit_journal(),
                inline=not self.backend.calls_block,
                flush_bytes=config.commit_flush_bytes,
            )
        )
        # a state log beside each partition: kept short by snapshots, not by time
        self._state_config = replace(
            config.log,
            retention_ms=None,
            retention_bytes=None,
            segment_bytes=max(4096, min(config.log.segment_bytes, config.snapshot_bytes)),
            batch_bytes_max=256 << 20,  # a snapshot is one batch
        )
        self.state_writer = StateWriter(
            self.writer, self.topics, self.groups, clock.now_ms, self._archive_snapshot
        )
        self.trace_log = TraceLog(
            self.backend.trace_directory,
            replace(
                config.log,
                fsync=FsyncPolicy.INTERVAL,
                fsync_interval_ms=config.trace_fsync_interval_ms,
                retention_ms=config.trace_retention_ms,
                retention_bytes=config.trace_retention_bytes,
                segment_bytes=min(config.log.segment_bytes, 64 << 20),
            ),
        )
        self._trace_buffer: list[TraceRecord] = []
        self._retention_checked_ms = clock.now_ms()
        self._ticker: asyncio.Task[None] | None = None
        self._scrubber: Scrubber | None = None
        self._random = random.Random()  # backoff jitter; tests seed it
        self.lanes = Lanes(config.lanes)
        # wakes the waiting receives of a topic when held-back or backed-off
        # messages come due (receives also compute their own deadline)
        self.scheduler: TimingWheel[str] = TimingWheel(tick_ms=10, start_ms=clock.now_ms())
        self.held_wake_ups: dict[tuple[str, int], int] = {}
        self._closed = False
        # Names that are some topic's dead-letter topic: only the broker
        # writes there, so a letter's origin headers can be trusted.
        self._dead_letter_topics = DeadLetterNames()
        self._dlq_locks: dict[str, asyncio.Lock] = {}  # one DLQ action at a time per DLQ
        self._directory_lock: DirectoryLock | None = None  # taken by open(), given back by close()
        # partitions of every topic, and those of creates under way (limits.partitions)
        self.partitions_held = 0
        self.archive: BrokerArchive | None = (
            BrokerArchive(
                config.archive,
                config.data_dir,
                write_record=self._write_archive_record,
                describe=self._archived_partition_document,
                settings_of=lambda name: t.settings if (t := self.topics.get(name)) else None,
                now_ms=clock.now_ms,
            )
            if config.archive is not None
            else None
        )

    # -- lifecycle ------------------------------------------------------------------

    @classmethod
    async def open(
        cls, config: BrokerConfig | None = None, *, clock: Clock | None = None
    ) -> Broker:
        config = config or BrokerConfig()
        # one broker per data directory, taken before any of its files is opened
        lock = DirectoryLock.acquire(config.data_dir) if config.data_dir is not None else None
        try:
            broker = cls(config, clock or SystemClock())
            broker._directory_lock = lock
            await broker._recover()
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return broker

    async def _recover(self) -> None:
        recovered = await self.run(self.records.load)
        self._dead_letter_topics = DeadLetterNames(recovered.dead_letter_topics)
        opening: list[tuple[str, TopicSettings]] = []
        # most topics share their settings: each distinct record is parsed
        # once (settings are frozen, so topics may share one object)
        parsed: dict[bytes, TopicSettings] = {}
        for name, data in recovered.topics.items():
            key = encode_record(data)
            settings = parsed.get(key)
            if settings is None:
                try:
                    settings = parsed[key] = topic_settings(data, self.config.topic_defaults)
                except LogqError as error:
                    self.records.note_unreadable(topic_record_key(name), str(error))
                    continue
            opening.append((name, settings))
        for topic in await self._open_topics(opening):
            self.topics[topic.name] = topic
        await self.run(self._replay_commit_journal)
        self.writer.start(asyncio.get_running_loop())
        replayed = await self._recover_states(recovered.groups, recovered.formats)
        await self._skip_offsets_seen_before()
        self.partitions_held = sum(len(topic.partitions) for topic in self.topics.values())
        limit = self.config.partitions_max
        if limit is not None and self.partitions_held > limit:
            logger.warning(
                "%d partitions are more than limits.partitions (%d): creates are refused"
                " until topics are deleted or the limit is raised",
                self.partitions_held,
                limit,
            )
        self._dead_letter_topics.made &= set(self.topics)
        marked: set[str] = set()
        for name in self.topics:
            marked |= self._dead_letter_topics.note(name, self.topics)
        for name in marked:  # some topic's DLQ, not yet marked in its record
            await self.records.sync(topic_record_key(name), self._topic_document(name))
        await self.finish_dead_letter_moves()
        await self.finish_redrives()
        await self.run(self.disk.measure)
        if self.records.damaged:
            logger.error(
                "%d damaged metadata records: the broker serves without their topics and "
                "groups (%s); see docs/operations.md, damaged metadata records",
                len(self.records.damaged),
                ", ".join(sorted(self.records.damaged)),
            )
        logger.info(
            "broker ready: %d topics, %d groups, %d journal events replayed",
            len(self.topics),
            len(self.groups),
            replayed,
        )

    def _replay_commit_journal(self) -> None:
        """Give every partition log back what the commit journal holds and its
        file lost (blocking: before the writer starts)."""
        journal = self.writer.journal
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
        for group in self.groups.values():
            for index, delivery in enumerate(group.deliveries):
                key = (group.topic, index)
                seen_of[key] = max(seen_of.get(key, 0), delivery.next_offset)
        # so does the last state snapshot: every append below its data offset was answered
        snapshot_said: set[tuple[str, int]] = set()
        for name, stored_topic in self.topics.items():
            for index, partition in enumerate(stored_topic.partitions):
                if (partition.producers_scan_from or 0) > seen_of.get((name, index), 0):
                    seen_of[(name, index)] = partition.producers_scan_from or 0
                    snapshot_said.add((name, index))
        candidates = [
            (partition, seen, (name, index) in snapshot_said)
            for (name, index), seen in seen_of.items()
            if seen > 0
            and (topic := self.topics.get(name)) is not None
            and index < len(topic.partitions)
            for partition in (topic.partitions[index],)
        ]
        # a log not opened tells its end from its files where it can (idle ones stay closed)
        ends = await self.run(lambda: [p.log.stored_figures()[1] for p, _, _ in candidates])
        for (partition, seen, by_snapshot), end in zip(candidates, ends, strict=True):
            if seen > end:
                why = (
                    f"its last state snapshot was taken with offsets up to {seen - 1} stored"
                    if by_snapshot
                    else f"its groups were handed offsets up to {seen - 1}"
                )
                await self.run(functools.partial(partition.log.resume_at, seen, why))

    def _log_named(self, log_id: str) -> PartitionLog | None:
        named = parse_partition_log_id(log_id)
        if named is None:
            return None
        topic_name, index, is_state = named
        topic = self.topics.get(topic_name)
        if topic is None or index >= len(topic.partitions):
            return None
        return topic.state_of(index).log if is_state else topic.partitions[index].log

    async def _recover_states(self, groups: dict[tuple[str, str], Any], formats: set[str]) -> int:
        """Every group's delivery state, partition by partition, from the state
        logs (or, once, from the state of an earlier release); returns the
        events replayed after the snapshots."""
        legacy_directory = self.backend.state_directory
        legacy = (
            LegacyState(legacy_directory, self._state_config)
            if legacy_directory is not None and LegacyState.present(legacy_directory)
            else None
        )
        # state written before snapshots held the dedup ids: each partition
        # without a snapshot that holds them reads its window once
        earlier_release = legacy is not None or (
            DEDUP_IDS_FORMAT not in formats and bool(self.topics)
        )
        now_ms = self.clock.now_ms()
        recovered: dict[tuple[str, int], Recovered] = {}
        keeping_no_ids: list[tuple[Topic, Partition]] = []  # snapshotted below, with them
        work = [
            (opened, partition)
            for opened in self.topics.values()
            for partition in opened.partitions
        ]
        read_of: dict[str, int] = {}
        for start in range(0, len(work), LOGS_PER_HOP):  # hops of many partitions each
            chunk = work[start : start + LOGS_PER_HOP]
            results = await self.run(
                functools.partial(_recover_partitions, chunk, now_ms, earlier_release)
            )
            for (opened, partition), (found, batches, read_window) in zip(
                chunk, results, strict=True
            ):
                recovered[(opened.name, partition.index)] = found
                read_of[opened.name] = read_of.get(opened.name, 0) + batches
                if read_window and legacy is None:
                    keeping_no_ids.append((opened, partition))
        for name, opened in self.topics.items():
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
                    self.topics[name].partitions[index], found.producers, found.data_offset
                )
            if self.topics[name].settings.archive:
                self._archive_partition(
                    name, self.topics[name].partitions[index], found.archive, found.archive_records
                )
        for (topic_name, name), data in groups.items():
            topic = self.topics.get(topic_name)
            if topic is None:
                continue
            key = group_key(topic_name, name)
            try:
                parsed = group_settings(data, self.config.group_defaults)
            except LogqError as error:
                self.records.note_unreadable(group_record_key(topic_name, name), str(error))
                continue
            deliveries: list[PartitionDelivery] = []
            for index in range(len(topic.partitions)):
                state = (
                    legacy_groups.get(key, {}).get(index)
                    if legacy is not None
                    else recovered[(topic_name, index)].groups.get(key)
                )
                deliveries.append(state or PartitionDelivery())
            self.groups[key] = Group(topic_name, name, parsed, deliveries)
        events = (
            legacy.events()
            if legacy is not None
            else (event for found in recovered.values() for event in found.events)
        )
        replayed = 0
        for event in events:
            group = self.groups.get(event.group)
            if group is not None and event.partition < len(group.deliveries):
                group.deliveries[event.partition].apply(event)
                replayed += 1
        if legacy is not None:
            await self._migrate_legacy_state(legacy)
        # a snapshot of an earlier release: the next one holds the ids, so the
        # window is read once
        stored = await asyncio.gather(
            *(self.state_writer.snapshot(t, p) for t, p in keeping_no_ids)
        )
        if DEDUP_IDS_FORMAT not in formats and all(stored) and self.config.data_dir is not None:
            await self._note_format(DEDUP_IDS_FORMAT)
        return replayed

    async def _note_format(self, key: str) -> None:
        """Record that the data directory's state is kept in the form `key`
        names (once the state is in that form, durably)."""
        try:
            await self.records.sync(key, dict)
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
            self.state_writer.snapshot(topic, partition)
            for topic in self.topics.values()
            for partition in topic.partitions
        ]
        await asyncio.gather(*snapshots)
        await self.run(legacy.remove)
        logger.info("delivery state of an earlier release moved into per-partition state logs")

    async def _open_topic(self, name: str, settings: TopicSettings) -> Topic:
        return (await self._open_topics([(name, settings)]))[0]

    async def _open_topics(self, wanted: Sequence[tuple[str, TopicSettings]]) -> list[Topic]:
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
                    self.config.log, retention_ms=retention[0], retention_bytes=retention[1]
                )
            configs[name] = config

        def open_logs(chunk: list[tuple[str, int, TopicSettings]]) -> None:
            for name, p, _ in chunk:
                logs[name].append(self._open_partition_now(name, p, configs[name]))

        try:
            for start in range(0, len(work), LOGS_PER_HOP):
                await self.run(lambda chunk=work[start : start + LOGS_PER_HOP]: open_logs(chunk))  # type: ignore[misc]
        except BaseException:
            made = [log for pairs in logs.values() for pair in pairs for log in pair]
            await self._close_logs(made)  # none left open
            raise
        return [
            Topic(
                name,
                settings,
                logs[name],
                self.run,
                self.writer,
                self.disk.storage_error,
                self.config.snapshot_bytes,
            )
            for name, settings in wanted
        ]

    def _open_partition_now(
        self, name: str, index: int, config: LogConfig
    ) -> tuple[PartitionLog, PartitionLog]:
        """A partition's data log and state log, both or neither (blocking)."""
        log = self.backend.open_log(name, index, config)
        try:
            state_log = self.backend.open_state_log(name, index, self._state_config)
        except BaseException:
            log.close()
            raise
        return log, state_log

    async def _close_logs(self, logs: Sequence[PartitionLog]) -> None:
        for log in logs:
            try:
                await self.run(log.close)
            except (LogqError, LogError) as error:
                logger.warning("closing a partition log failed: %s", error)

    async def _make_topic(self, name: str, settings: TopicSettings) -> Topic:
        """A new topic in full, or nothing of it: a create that fails part way
        (out of descriptors, a full disk) leaves no files behind, and files
        left by a create that a crash cut short are cleared first (they never
        held an acknowledged message: a topic takes messages once its
        record is stored). A name whose record is damaged is refused before
        anything is touched: its files are that topic's data."""
        self.records.check_usable(topic_record_key(name))
        if await self.run(lambda: self.backend.has_topic_files(name)):
            logger.warning(
                "clearing leftover files of topic %r, which no metadata record names", name
            )
            await self.run(lambda: self.backend.delete_topic(name))
        try:
            topic = await self._open_topic(name, settings)
        except BaseException:
            await self._remove_topic_files(name)
            raise
        if settings.archive:
            for partition in topic.partitions:
                self._archive_partition(name, partition, b"", [])
        self.topics[name] = topic
        try:
            await self._save_topic(name)
        except BaseException:
            del self.topics[name]
            await self._close_logs(_partition_logs(topic))
            await self._remove_topic_files(name)
            raise
        return topic

    async def _remove_topic_files(self, name: str) -> None:
        try:
            await self.run(lambda: self.backend.delete_topic(name))
        except (LogqError, LogError, OSError) as error:
            logger.warning("removing the files of topic %r failed: %s", name, error)

    def start(self) -> None:
        """Start the background timer (lease expiry, sessions, retention)."""
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        if self.archive is not None:
            self.archive.start()
        rate = self.config.scrub_bytes_per_second
        if self._scrubber is None and self.backend.persistent and rate > 0:
            self._scrubber = Scrubber(self._scrubbed_logs, rate)
            self._scrubber.start()

    @property
    def scrub_passes(self) -> int:
        """Passes the scrubber finished over every sealed segment (0 when it is off)."""
        return 0 if self._scrubber is None else self._scrubber.passes

    def topic_logs(self) -> list[PartitionLog]:
        """Every topic's partition logs."""
        return [p.log for topic in list(self.topics.values()) for p in topic.partitions]

    def _scrubbed_logs(self) -> list[PartitionLog]:
        """Every topic's partition logs, their state logs and the trace
        journal (the scrubber's thread asks): the trace is read only by trace
        queries, so its damage would otherwise wait for one."""
        for _ in range(3):
            try:
                partitions = [p for topic in list(self.topics.values()) for p in topic.partitions]
                states = [
                    topic.state_of(p.index).log
                    for topic in list(self.topics.values())
                    for p in topic.partitions
                ]
                return [*(p.log for p in partitions), *states, self.trace_log.log]
            except RuntimeError:  # a topic came or went meanwhile: look again
                continue
        return [self.trace_log.log]

    async def _tick_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.config.tick_ms / 1000)
            try:
                await self.tick()
            except LogqError as error:
                logger.warning("timer: %s", error)
            except Exception:
                logger.exception("timer failed")

    async def tick(self) -> None:
        """One round of timed work: expire leases and sessions, flush, retain."""
        await self.expire_leases()
        now_ms = self.clock.now_ms()
        for name in {topic_name for _, topic_name in self.scheduler.advance(now_ms)}:
            topic = self.topics.get(name)
            if topic is not None:
                topic.changed.set()
        self.expire_sessions()
        self._flush_trace()
        if self.backend.persistent:
            await self.run(self._flush_due)
            if self.disk.full or now_ms - self._disk_checked_ms >= self.config.disk_check_ms:
                self._disk_checked_ms = now_ms
                await self.run(self.disk.measure)
        if now_ms - self._retention_checked_ms >= self.config.retention_check_ms:
            self._retention_checked_ms = now_ms
            await self.apply_retention()

    def _flush_due(self) -> None:
        """Under `fsync: interval`, the logs whose interval has passed (blocking)."""
        for topic in list(self.topics.values()):
            for partition in topic.partitions:
                partition.log.flush_if_due()
        try:
            self.trace_log.flush_if_due()
        except OSError as error:  # the trace is not worth failing the timer for
            logger.warning("trace flush failed: %s", error)

    async def apply_retention(self) -> int:
        """Delete expired segments of every topic; returns segments deleted.
        One hop to the storage threads per topic; a partition whose log is
        not opened is passed over while its files say nothing can expire."""
        now_ms = self.clock.now_ms()
        deleted = 0
        for topic in list(self.topics.values()):
            partitions = list(topic.partitions)
            results = await self.run(lambda p=partitions: _apply_retention(p, now_ms))  # type: ignore[misc]
            for partition, before, result in results:
                deleted += result.deleted_segments
                if result.first_offset > before:
                    gone = [(before, result.first_offset)]
                    self._trace("retention_deleted", topic, partition.index, gone)
        self._flush_trace()
        await self.run(lambda: self.trace_log.apply_retention(now_ms))
        return deleted

    async def close(self) -> None:
        """Stop timers, flush and close every log and the journal."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._close_files()
        finally:
            if self._directory_lock is not None:
                self._directory_lock.release()

    async def _close_files(self) -> None:
        if self._scrubber is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._scrubber.stop)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.archive is not None:
            await self.archive.close()
        await self._snapshot_dedup_tails()
        await self.state_writer.close()
        # every write handed over is answered first; the commit journal keeps
        # its copies until the logs are closed: the logs opened since the start
        # share one flush (file backend: two syncs of the filesystem, not
        # fsyncs per log), the others cost nothing, and only then does the
        # journal go (a crash before that replays it, as after a kill)
        await self.writer.close(flush=False)
        logs = [log for topic in self.topics.values() for log in _partition_logs(topic)]
        await self.run(lambda: self.backend.close_logs(logs))
        journal = self.writer.journal
        if journal is not None:
            await self.run(journal.retire)
        self._flush_trace()
        await self.run(self.trace_log.close)
        await self.run(self.backend.close)
        self._executor.shutdown(wait=True)

    async def _snapshot_dedup_tails(self) -> None:
        """At a graceful stop, a snapshot of each partition whose data log may
        hold dedup batches past its last one: the next start reads no data."""
        if self.config.data_dir is None:
            return  # nothing outlives a broker in memory
        await asyncio.gather(
            *(
                self.state_writer.snapshot(topic, partition)
                for topic in list(self.topics.values())
                for partition in topic.partitions
                if (state := topic.state_of(partition.index)).dedup_marked
                and not state.snapshotting
            )
        )

    async def run(self, function: Callable[[], T]) -> T:
        """Run blocking storage work off the event loop (inline when the
        backend's calls never block)."""
        if not self.backend.calls_block:
            return function()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function)
        except OSError as error:  # a full or failing disk: a catalogue error
            raise self.disk.storage_error(error) from error

    def state_logs(self) -> list[PartitionLog]:
        """Every partition's state log, for their storage statistics."""
        return [
            topic.state_of(p.index).log for topic in self.topics.values() for p in topic.partitions
        ]

    def _check_open(self) -> None:
        if self._closed:
            raise ShuttingDownError("the broker is shutting down")

    # -- metadata -------------------------------------------------------------------

    async def _save_topic(self, name: str) -> None:
        """Write topic `name`'s record (deleted when the topic is gone), and
        the record of each topic that became a dead-letter topic by this
        change; returns once they are durable. Nothing else is written:
        concurrent changes of other topics write side by side."""
        marked = self._dead_letter_topics.note(name, self.topics) - {name}
        await asyncio.gather(
            *(self.records.sync(topic_record_key(n), self._topic_document(n)) for n in marked),
            self.records.sync(topic_record_key(name), self._topic_document(name)),
        )

    def _topic_document(self, name: str) -> Callable[[], dict[str, Any] | None]:
        def document() -> dict[str, Any] | None:
            topic = self.topics.get(name)
            if topic is None:
                return None
            return {
                "settings": topic.settings.as_dict(),
                "dead_letter_topic": name in self._dead_letter_topics.made,
            }

        return document

    async def _save_group(self, topic_name: str, name: str) -> None:
        """Write one group's record (deleted when the group is gone), durably."""
        key = group_key(topic_name, name)

        def document() -> dict[str, Any] | None:
            group = self.groups.get(key)
            return None if group is None else group.settings.as_dict()

        await self.records.sync(group_record_key(topic_name, name), document)

    # -- topics ---------------------------------------------------------------------

    def topic(self, name: str) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            raise TopicNotFoundError(f"topic {name!r} does not exist")
        return topic

    async def create_topic(
        self,
        name: str,
        settings: dict[str, Any] | None = None,
        *,
        exist_ok: bool = False,
        internal: bool = False,
    ) -> Topic:
        """Create a topic; `internal` (a DLQ) skips the configured name limit."""
        self._check_open()
        check_topic_name(name)
        parsed = topic_settings(settings or {}, self.config.topic_defaults)
        if name in self.topics:
            if exist_ok:
                return self.topics[name]
            raise AlreadyExistsError(f"topic {name!r} already exists")
        if not internal and len(name) > self.config.topic_name_length_max:
            raise BadArgumentError(
                f"topic name is {len(name)} characters, the limit "
                f"topic_name_length_max is {self.config.topic_name_length_max}"
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

    def _check_dlq(self, name: str, dlq: str) -> None:
        """A DLQ is a topic only the broker writes to: a new name (the broker
        makes it), or one already some topic's DLQ; never a topic in use."""
        if dlq == name:
            raise BadArgumentError(f"topic {name!r} cannot be its own dead-letter topic")
        if dlq in self.topics and dlq not in self._dead_letter_topics:
            raise BadArgumentError(
                f"dlq {dlq!r} is a topic in use, not a dead-letter topic: name a new one"
                " (the broker makes it) or another topic's DLQ"
            )

    def _check_archive(self, settings: TopicSettings, before: TopicSettings | None = None) -> None:
        if settings.archive and self.archive is None:
            raise BadArgumentError(
                "archive: this broker has no archive (start it with --archive URL)"
            )
        if before is not None and before.archive and not settings.archive:
            raise BadArgumentError(
                "archive cannot be turned off for a topic (delete the topic to remove"
                " its archived data)"
            )

    def _archive_partition(
        self, name: str, partition: Partition, snapshot: bytes, records: list[bytes]
    ) -> None:
        """Put the partition's log over the archive, with its manifest."""
        assert self.archive is not None
        local = partition.log
        partition.log = self.archive.wrap(
            name, partition.index, local, lambda: local.readable_offset, snapshot, records
        )

    def _write_archive_record(self, name: str, index: int, record: bytes) -> Awaitable[object]:
        """Hand a manifest record to the partition's state log (now)."""
        topic = self.topic(name)
        state = topic.state_of(index)
        batch = state.archive_batch(record, self.clock.now_ms())
        return self.writer.write(state.log, state.log_id, batch)

    def _archive_snapshot(self, name: str, index: int) -> bytes:
        return self.archive.snapshot(name, index) if self.archive is not None else b""

    def _archived_partition_document(self, name: str, index: int) -> dict[str, object]:
        """What the store's copy of a manifest carries for a restore: the
        topic's settings, and each group's settings and position in the
        partition (below it, everything settled)."""
        topic = self.topics.get(name)
        return {
            "partitions": len(topic.partitions) if topic is not None else 0,
            "settings": topic.settings.as_dict() if topic is not None else {},
            "groups": {
                group.name: {
                    "settings": group.settings.as_dict(),
                    "committed": group.deliveries[index].floor,
                }
                for group in self.groups.values()
                if group.topic == name
                and index < len(group.deliveries)
                and not group.name.startswith("~")
            },
        }

    def _check_partitions(self, partitions: int) -> None:
        limit = self.config.partitions_per_topic_max
        if partitions > limit:
            raise TooBigError(
                f"{partitions} partitions, the limit partitions_per_topic_max is {limit}"
            )

    def _hold_partitions(self, count: int, what: str) -> None:
        """Count `count` more partitions against limits.partitions, or refuse
        with CAPACITY before anything is made."""
        limit = self.config.partitions_max
        if count > 0 and limit is not None and self.partitions_held + count > limit:
            raise CapacityError(
                f"{what} needs {count} more partitions and the broker holds "
                f"{self.partitions_held}, the limit limits.partitions is {limit}: "
                "delete topics or raise the limit"
            )
        self.partitions_held += count

    async def update_topic(self, name: str, changes: dict[str, Any]) -> Topic:
        self._check_open()
        topic = self.topic(name)
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
        base = topic.log_config(self.config.log)
        before = len(topic.partitions)
        self._hold_partitions(parsed.partitions - before, f"topic {name!r}")
        try:
            for index in range(before, parsed.partitions):
                pair = await self.run(lambda i=index: self._open_partition_now(name, i, base))  # type: ignore[misc]
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
                self.backend.set_retention(local, None, None)
                if newly_archived or not isinstance(partition.log, TieredLog):
                    self._archive_partition(name, partition, b"", [])
            else:
                self.backend.set_retention(
                    partition.log, parsed.retention_ms, parsed.retention_bytes
                )
        for group in self.groups.values():
            if group.topic == name:
                group.add_partitions(parsed.partitions, self.clock.now_ms())
        await self._save_topic(name)
        return topic

    async def delete_topic(self, name: str) -> None:
        self._check_open()
        topic = self.topic(name)
        del self.topics[name]
        self.partitions_held -= len(topic.partitions)
        groups = [group for group in self.groups.values() if group.topic == name]
        for group in groups:
            del self.groups[group.key]
        self.metrics.forget(name)
        self._dlq_locks.pop(name, None)
        # the topic record goes first: a crash before its group records go
        # leaves them without a topic, and the next start deletes them
        await self._save_topic(name)
        await asyncio.gather(*(self._save_group(name, group.name) for group in groups))
        # the commit journal must hold no copy of these logs when their files
        # go: a topic made again under this name would be given them back
        await self.writer.flush()
        for log in _partition_logs(topic):
            await self.run(log.close)
        await self.run(lambda: self.backend.delete_topic(name))
        if self.archive is not None and topic.settings.archive:
            await self.archive.delete_topic(name)
        logger.info("topic %r deleted", name)

    def describe_topic(self, name: str) -> dict[str, Any]:
        topic = self.topic(name)
        groups = [g for g in self.groups.values() if g.topic == name]
        partitions = []
        for partition in topic.partitions:
            log = partition.log
            readable = partition.readable_end()
            stats: dict[str, Any] = {
                "partition": partition.index,
                "first_offset": log.first_offset,
                "last_offset": readable - 1,
                "next_offset": readable,
                "messages": partition.readable_messages(),
                "bytes": log.size_bytes,
                "segments": log.segment_count,
            }
            if isinstance(log, TieredLog):  # the archive holds what lies below the disk
                stats["local_first_offset"] = log.local.first_offset
                archived = (
                    self.archive.archiver.get(name, partition.index) if self.archive else None
                )
                stats["archived_from"] = archived.manifest.first_offset if archived else None
                stats["archived_to"] = archived.manifest.archived_end if archived else None
            stats["pending"] = sum(
                g.deliveries[partition.index].unsettled(readable) for g in groups
            )
            stats["in_flight"] = sum(g.deliveries[partition.index].in_flight for g in groups)
            partitions.append(stats)
        counters = self.metrics.topic_counters(name)
        damaged = [
            {"partition": p.index, "start": d.start, "end": d.end, "reason": d.reason}
            for p in topic.partitions
            for d in p.log.damaged_ranges()
        ]
        totals = {
            key: sum(g.counters[key] for g in groups)
            for key in ("acked", "redelivered", "dead_lettered", "rejected", "nacked")
        }
        return {
            "name": name,
            "config": topic.settings.as_dict(),
            "partitions": partitions,
            "messages": sum(p["messages"] for p in partitions),
            "bytes": sum(p["bytes"] for p in partitions),
            "pending": sum(p["pending"] for p in partitions),
            "in_flight": sum(p["in_flight"] for p in partitions),
            "acked": totals["acked"],
            "failed": totals["redelivered"],
            "dead_lettered": totals["dead_lettered"],
            "in_dlq": self.dlq_size(name),
            "groups": sorted(g.name for g in groups),
            "published": counters["messages_in"],
            "damaged": damaged,
            "damaged_offsets": sum(
                p.log.statistics().get("damaged_offsets", 0) for p in topic.partitions
            ),
        }

    def list_topics(self) -> list[dict[str, Any]]:
        return [self.describe_topic(name) for name in sorted(self.topics)]

    def topic_counts(self) -> list[dict[str, Any]]:
        """Each topic's totals as `describe_topic` has them, cheaply, by name."""
        return topic_counts(self.topics, self.groups.values())

    def group_counts(self) -> list[dict[str, Any]]:
        """Each group's lag and in-flight as `list_groups` has them, cheaply."""
        return group_counts(self.topics, self.groups.values())

    # -- publishing -----------------------------------------------------------------

    async def publish(
        self, topic_name: str, messages: Sequence[OutgoingMessage], *, as_broker: bool = False
    ) -> list[PublishResult]:
        """Place each message (explicit partition, key hash, else round-robin:
        the keyless messages of one call go to one partition, the next call's
        to the next, so a batch stays one append), store them as one batch
        per partition and lane, durably."""
        self._check_open()
        self.disk.check_publish()
        topic = await self._topic_for_publish(topic_name, as_broker=as_broker)
        if not messages:
            raise BadArgumentError("nothing to publish: give at least one message")
        if len(messages) > self.config.publish_messages_max:
            raise TooBigError(
                f"{len(messages)} messages in one publish, the limit is {self.config.publish_messages_max}"
            )
        now_ms = self.clock.now_ms()
        # partition -> runs of consecutive messages that share a batch, in
        # request order: a partition's runs are stored one after another, so
        # its messages lie in the order they came whatever path each takes
        runs: dict[int, list[tuple[int, bool, list[int]]]] = {}
        size_max = self.config.message_bytes_max
        max_delay = topic.settings.max_delay_ms
        partitions = len(topic.partitions)
        lane_of: dict[str, int] = {}
        sticky: int | None = None
        for index, message in enumerate(messages):  # per message: keep it lean
            value, key = message.value, message.key
            if (len(value) if value else 0) + (len(key) if key else 0) > size_max:
                size = len(value or b"") + len(key or b"")
                raise TooBigError(f"message {index} is {size} bytes, the limit is {size_max}")
            if key is not None and len(key) > self.config.key_bytes_max:
                raise TooBigError(
                    f"message {index} has a key of {len(key)} bytes, the limit "
                    f"key_bytes_max is {self.config.key_bytes_max}"
                )
            if message.headers:
                self._check_headers(index, message.headers, as_broker)
            if message.partition is not None:
                partition = topic.partition(message.partition).index
            elif key is not None:
                partition = partition_for_key(key, partitions)
            else:  # keyless: the whole call sticks to one partition, as Kafka's producer does
                if sticky is None:
                    sticky = topic.next_round_robin()
                partition = sticky
            if message.deliver_at_ms is not None and message.deliver_at_ms - now_ms > max_delay:
                raise BadArgumentError(
                    f"message {index} is due in {message.deliver_at_ms - now_ms} ms, "
                    f"past the topic's max_delay of {max_delay} ms"
                )
            # a message with a dedup id travels alone in its batch (see dedup.py)
            alone = message.dedup_id is not None
            lane = lane_of.get(message.priority)
            if lane is None:
                lane = lane_of[message.priority] = self.lanes.index_of(message.priority)
            partition_runs = runs.get(partition)
            if partition_runs is None:
                runs[partition] = [(lane, alone, [index])]
            elif alone or partition_runs[-1][0] != lane or partition_runs[-1][1]:
                partition_runs.append((lane, alone, [index]))
            else:
                partition_runs[-1][2].append(index)
        results: list[PublishResult | None] = [None] * len(messages)

        async def store(partition: int, lane: int, indexes: list[int]) -> None:
            chosen = [messages[i] for i in indexes]
            expiring = any(m.ttl_ms is not None for m in chosen)
            dedup = chosen[0].dedup_id is not None
            batch = encode_batch(
                [m.value for m in chosen],
                keys=[m.key for m in chosen],
                headers=[_with_dedup(_with_expiry(m, now_ms), m) for m in chosen]
                if expiring or dedup
                else [m.headers for m in chosen],
                timestamps=[m.deliver_at_ms or m.timestamp_ms or now_ms for m in chosen],
                lane=lane,
                expiring=expiring,
                delayed=any(m.deliver_at_ms is not None for m in chosen),
                dedup=dedup,
            )
            # the topic was checked above: a dead-letter topic only as_broker
            appended = await self.publish_batch(
                topic_name, partition, batch, as_broker=True, disk_checked=True
            )
            stored_in = appended.partition  # a duplicate answers where the first went
            prefix = f"{topic_name}:{stored_in}:"
            for offset, index in enumerate(indexes, appended.base_offset):
                results[index] = PublishResult(f"{prefix}{offset}", stored_in, offset)

        async def store_runs(
            partition: int, partition_runs: list[tuple[int, bool, list[int]]]
        ) -> None:
            for lane, _, indexes in partition_runs:
                await store(partition, lane, indexes)

        outcomes = await asyncio.gather(
            *(store_runs(p, r) for p, r in runs.items()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise _partly_stored(outcome, results)
        return [result for result in results if result is not None]

    def _check_headers(self, index: int, headers: dict[str, str], as_broker: bool) -> None:
        """A message's header count and encoded size against their limits;
        headers under `logq-` are the broker's to write."""
        if not as_broker:
            for name in headers:
                if name.startswith(RESERVED_HEADER_PREFIX):
                    raise BadArgumentError(
                        f"message {index} has the header {name[:64]!r}: headers under "
                        f"{RESERVED_HEADER_PREFIX} are written by the broker only "
                        "(ttl and dedup_id set the ones a publisher may ask for)"
                    )
        config = self.config
        if len(headers) > config.header_count_max:
            raise TooBigError(
                f"message {index} has {len(headers)} headers, the limit "
                f"header_count_max is {config.header_count_max}"
            )
        size = sum(len(k.encode()) + len(v.encode()) + 6 for k, v in headers.items()) + 2
        if size > config.header_bytes_max:
            raise TooBigError(
                f"message {index} has {size} bytes of headers, the limit "
                f"header_bytes_max is {config.header_bytes_max}"
            )

    async def _topic_for_publish(self, name: str, *, as_broker: bool = False) -> Topic:
        if name in self._dead_letter_topics and not as_broker:
            raise BadArgumentError(
                f"{name!r} is a dead-letter topic: only the broker writes to it"
                " (redrive or requeue move its letters back)"
            )
        if name not in self.topics and self.config.auto_create_topics:
            return await self.create_topic(name, exist_ok=True)
        return self.topic(name)

    async def publish_batch(
        self,
        topic_name: str,
        partition: int,
        batch: bytes,
        *,
        as_broker: bool = False,
        disk_checked: bool = False,
    ) -> BatchResult:
        """Store one producer-built batch as it came (the native fast path).
        `disk_checked`: the free-space guard already let in the request this
        batch is part of (a publish is let in or refused whole)."""
        self._check_open()
        if not disk_checked:
            self.disk.check_publish()
        topic = await self._topic_for_publish(topic_name, as_broker=as_broker)
        target = topic.partition(partition)
        now_ms = self.clock.now_ms()
        check_delay(batch, now_ms, topic.settings.max_delay_ms)
        try:
            check_record_sizes(
                batch,
                message_bytes_max=self.config.message_bytes_max,
                key_bytes_max=self.config.key_bytes_max,
                header_bytes_max=self.config.header_bytes_max,
                header_count_max=self.config.header_count_max,
            )
            if not as_broker:
                _check_reserved_headers(batch)
            log_config = self.config.log
            dedup_id = dedup_id_of(batch, log_config.batch_bytes_max, log_config.batch_records_max)
        except LogError as error:
            raise _from_log_error(error) from None
        if dedup_id is not None:
            return await self._publish_once(topic, target, batch, dedup_id, now_ms)
        try:
            result, duplicate = await topic.append(target, batch)
        except LogError as error:
            raise _from_log_error(error) from None
        if not duplicate:
            self._stored(topic, target, batch, result.base_offset, result.next_offset)
        return BatchResult(partition, result.base_offset, result.last_offset, duplicate)

    def _stored(self, topic: Topic, target: Partition, batch: bytes, start: int, end: int) -> None:
        """Count a newly stored batch; trace its publish if it is delayed (the
        record timestamps of a delayed batch are due times, not publish times)."""
        self.metrics.published(topic.name, end - start, len(batch))
        self.disk.spend(len(batch))
        state = target.state
        if state is not None and state.dedup_marked:  # the tail a restart would read grows
            state.data_bytes_since_mark += len(batch)
            if state.wants_dedup_snapshot(self.config.snapshot_dedup_ids):
                self.state_writer.start_snapshot(topic, target)
        if read_header(batch).attributes & DELAYED:
            self._trace("delayed", topic, target.index, [(start, end)])

    async def _publish_once(
        self, topic: Topic, target: Partition, batch: bytes, dedup_id: str, now_ms: int
    ) -> BatchResult:
        """Store a dedup-marked batch unless its id was seen within the window."""
        table = topic.dedup
        window_ms = topic.settings.dedup_window_ms
        first = table.lookup(dedup_id, now_ms)
        if isinstance(first, asyncio.Future):
            first = await asyncio.shield(first)
        if first is not None:
            return BatchResult(first.partition, first.offset, first.offset, True)
        table.claim(dedup_id)
        target.dedup_in_flight += 1
        try:
            await self._mark_dedup(topic, target)
            result, duplicate = await topic.append(target, batch)
        except LogError as error:
            self._unclaim(table, target, dedup_id, error)
            raise _from_log_error(error) from None
        except BaseException as error:
            self._unclaim(table, target, dedup_id, error)
            raise
        table.settle(dedup_id, Seen(target.index, result.base_offset, now_ms + window_ms))
        target.dedup_in_flight -= 1
        state = topic.state_of(target.index)
        state.dedup_ids_since_snapshot += 1
        if state.wants_dedup_snapshot(self.config.snapshot_dedup_ids):
            self.state_writer.start_snapshot(topic, target)
        if not duplicate:
            self._stored(topic, target, batch, result.base_offset, result.next_offset)
        return BatchResult(target.index, result.base_offset, result.last_offset, duplicate)

    @staticmethod
    def _unclaim(table: DedupTable, target: Partition, dedup_id: str, error: BaseException) -> None:
        table.settle(dedup_id, None, error)
        target.dedup_in_flight -= 1

    async def _mark_dedup(self, topic: Topic, target: Partition) -> None:
        """Make sure the partition's state log says, durably, that its data
        log may hold dedup batches past its last snapshot: once per snapshot,
        before the first such batch is stored (recovery reads the data log's
        tail only where a mark says so)."""
        state = topic.state_of(target.index)
        if state.dedup_marked:
            return
        mark = target.dedup_mark
        if mark is None:
            end = target.resolved_end
            batch = state.dedup_mark_batch(
                target.log.next_offset if end is None else end, self.clock.now_ms()
            )
            mark = target.dedup_mark = self.writer.write(state.log, state.log_id, batch)
        try:
            await asyncio.shield(mark)
        except OSError as error:
            if target.dedup_mark is mark:
                target.dedup_mark = None  # the next publish tries again
            raise self.disk.storage_error(error) from error
        except BaseException:
            if mark.done() and target.dedup_mark is mark:
                target.dedup_mark = None
            raise
        if target.dedup_mark is mark:
            state.dedup_marked = True

    # -- reading without a group ----------------------------------------------------------

    async def read_raw(self, topic_name: str, partition: int, offset: int, max_bytes: int) -> bytes:
        """Stored batches from `offset` on, as they lie (whole batches), up
        to the partition's readable end."""
        stored = self.topic(topic_name).partition(partition)
        log = stored.log
        if stored.readable_end() <= offset <= log.next_offset:
            return b""  # nothing readable there yet: as at the end, the reader comes back
        try:
            result = await self.run(lambda: log.read(offset, max_bytes))
        except LogError as error:
            raise _from_log_error(error) from None
        return result.data

    async def read_messages(
        self,
        topic_name: str,
        partition: int | None = None,
        *,
        offset: int | None = None,
        from_time_ms: int | None = None,
        to_time_ms: int | None = None,
        limit: int = 100,
        include_deleted: bool = False,
    ) -> list[Message]:
        """Peek or replay: by offset or time window [from, to), changing nothing;
        `include_deleted` reaches below the topic's start into what its archive
        keeps for audit (archive_retention)."""
        topic = self.topic(topic_name)
        archiver = self.archive.archiver if self.archive is not None else None
        audit = include_deleted and archiver is not None and topic.settings.archive
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= PEEK_LIMIT_MAX
        ):
            raise BadArgumentError(f"limit must be within 1..{PEEK_LIMIT_MAX}, got {limit!r}")
        indexes = (
            [topic.partition(partition).index]
            if partition is not None
            else [p.index for p in topic.partitions]
        )
        found: list[Message] = []
        for index in indexes:
            log = topic.partitions[index].log
            floor = log.first_offset
            if audit and archiver is not None:
                floor = archiver.audit_start(topic_name, index, floor)
            start = offset
            if start is None and from_time_ms is not None:
                start = await self._offset_for_time(topic_name, index, from_time_ms, audit)
                if start is None:
                    continue
            if start is None:
                start = floor
            start = max(start, floor)
            found.extend(
                await self._collect(
                    topic_name, index, start, limit, from_time_ms, to_time_ms, audit=audit
                )
            )
        found.sort(
            key=lambda m: (m.timestamp_ms, m.partition, m.offset) if partition is None else m.offset
        )
        return found[:limit]

    async def _collect(
        self,
        topic_name: str,
        partition: int,
        start: int,
        limit: int,
        from_time_ms: int | None,
        to_time_ms: int | None,
        *,
        audit: bool = False,
    ) -> list[Message]:
        end = self.topic(topic_name).partitions[partition].readable_end()
        messages: list[Message] = []
        offset = start
        log = self.topic(topic_name).partitions[partition].log
        while len(messages) < limit and offset < end:
            data: bytes | None = None
            if audit and self.archive is not None and offset < log.first_offset:
                data = await self.archive.archiver.read(
                    topic_name, partition, offset, READ_CHUNK_BYTES, include_deleted=True
                )
            if data is None:
                data = await self.read_raw(topic_name, partition, offset, READ_CHUNK_BYTES)
            if not data:
                break
            for position, header in iter_headers(data):
                for record in decode_batch(data, position).records():
                    if record.offset < offset:
                        continue
                    if to_time_ms is not None and record.timestamp >= to_time_ms:
                        continue
                    if from_time_ms is not None and record.timestamp < from_time_ms:
                        continue
                    messages.append(
                        message_from_record(
                            topic_name, partition, record, header.lane, 0, self.lanes
                        )
                    )
                offset = header.next_offset
                if len(messages) >= limit:
                    break
        return messages[:limit]

    async def _offset_for_time(
        self, topic_name: str, index: int, timestamp_ms: int, audit: bool
    ) -> int | None:
        log = self.topic(topic_name).partitions[index].log
        if audit and self.archive is not None:
            archived = self.archive.archiver.get(topic_name, index)
            if archived is not None:
                found = await archived.offset_for_time(timestamp_ms, include_deleted=True)
                if found is not None and found < log.first_offset:
                    return found
        return await self.run(lambda: log.offset_for_time(timestamp_ms))

    async def get_message(self, message_id: str) -> Message:
        parsed = MessageId.parse(message_id)
        topic = self.topics.get(parsed.topic)
        if topic is None or not 0 <= parsed.partition < len(topic.partitions):
            raise MessageNotFoundError(f"no message {message_id!r}")
        stored = topic.partitions[parsed.partition]
        if not stored.log.first_offset <= parsed.offset < stored.readable_end():
            raise MessageNotFoundError(f"no message {message_id!r} (not stored or past retention)")
        found = await self._collect(parsed.topic, parsed.partition, parsed.offset, 1, None, None)
        if not found or found[0].offset != parsed.offset:
            raise MessageNotFoundError(f"no message {message_id!r}")
        return found[0]

    # -- groups -------------------------------------------------------------------------

    def group(self, topic_name: str, name: str) -> Group:
        group = self.groups.get(group_key(topic_name, name))
        if group is None:
            self.topic(topic_name)
            raise GroupNotFoundError(f"group {name!r} of topic {topic_name!r} does not exist")
        return group

    async def put_group(
        self, topic_name: str, name: str, settings: dict[str, Any] | None = None
    ) -> Group:
        """Create a group, or change its settings."""
        self._check_open()
        topic = self.topic(topic_name)
        check_group_name(name)
        key = group_key(topic_name, name)
        self.records.check_usable(group_record_key(topic_name, name))
        existing = self.groups.get(key)
        base = existing.settings if existing else self.config.group_defaults
        parsed = group_settings(settings or {}, base)
        before = None if existing is None else existing.settings.mode
        if parsed.mode is not before and GroupMode.SHARED in (before, parsed.mode):
            for partition in topic.partitions:  # the index follows the shared groups
                forget_loaded(partition)
        if existing is not None:
            existing.configure(parsed, self.clock.now_ms())
        else:
            deliveries = [PartitionDelivery() for _ in topic.partitions]
            self.groups[key] = Group(topic_name, name, parsed, deliveries)
        try:
            await self._save_group(topic_name, name)
        except BaseException:
            if existing is None:  # a group whose record was not stored is not made
                self.groups.pop(key, None)
            raise
        return self.groups[key]

    async def group_for_receive(self, topic_name: str, name: str) -> Group:
        """The group, created with default settings on first use."""
        existing = self.groups.get(group_key(topic_name, name))
        if existing is not None:
            return existing
        return await self.put_group(topic_name, name)

    def describe_group(self, topic_name: str, name: str) -> dict[str, Any]:
        group = self.group(topic_name, name)
        topic = self.topic(topic_name)
        assignment = group.membership.assignment()
        owners = group.membership.owner
        ends = group.settings.end_offsets
        partitions = []
        for index, state in enumerate(group.deliveries):
            log_end = topic.partitions[index].readable_end()
            partitions.append(
                {
                    "partition": index,
                    "committed": state.floor,
                    "next_offset": state.next_offset,
                    "log_end": log_end,
                    "lag": state.unsettled(lag_end(group, index, log_end)),
                    "in_flight": state.in_flight,
                    "pending_redelivery": state.pending_count,
                    "owner": owners.get(index),
                    "end_offset": ends[index] if ends and index < len(ends) else None,
                }
            )
        return {
            "topic": topic_name,
            "group": name,
            "settings": group.settings.as_dict(),
            "members": [
                {**asdict(member), **assignment.get(member.name, {})}
                for member in group.membership.members.values()
            ],
            "assignment": {name: entry["partitions"] for name, entry in assignment.items()},
            "generation": group.membership.generation,
            "rebalances": [record.as_dict() for record in group.membership.history],
            "partitions": partitions,
            "lag": sum(p["lag"] for p in partitions),
            "in_flight": sum(p["in_flight"] for p in partitions),
            "counts": dict(group.counters),
            "lifecycle": group.lifecycle.as_dict(),
        }

    def list_groups(self) -> list[dict[str, Any]]:
        return [
            self.describe_group(group.topic, group.name)
            for group in sorted(self.groups.values(), key=lambda g: g.key)
            if not internal_group(group.name)
        ]

    # -- dead letters ---------------------------------------------------------------------

    def archive_status(self, topic_name: str | None = None) -> dict[str, Any]:
        """The archive and, per archived partition: what it holds, what the
        local disk holds, the upload lag and the last error."""
        if topic_name is not None:
            self.topic(topic_name)
        if self.archive is None:
            return {"archive": None, "partitions": []}
        return {
            "archive": self.archive.description,
            "partitions": [asdict(s) for s in self.archive.status(topic_name)],
            "uploaded_segments": self.archive.archiver.uploader.stats.segments,
            "uploaded_bytes": self.archive.archiver.uploader.stats.bytes,
            "upload_failures": self.archive.archiver.uploader.stats.failures,
            "remote_reads": self.archive.archiver.reader.stats.requests,
            "remote_read_bytes": self.archive.archiver.reader.stats.bytes_read,
            "cache_hits": self.archive.archiver.reader.stats.hits,
            "cache_misses": self.archive.archiver.reader.stats.misses,
            "damaged_reads": self.archive.archiver.damaged_reads,
        }

    def dlq_name(self, topic_name: str) -> str:
        return self.topic(topic_name).settings.dlq_topic(topic_name)

    # -- statistics -------------------------------------------------------------------------

    def stats(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """Pending messages per partition of every topic, or of the topics
        `names` (a page); the broker's totals."""
        queues: dict[str, int] = {}
        by_topic: dict[str, list[Group]] = {}
        for group in self.groups.values():
            by_topic.setdefault(group.topic, []).append(group)
        chosen = self.topics.values() if names is None else [self.topics[n] for n in names]
        for topic in chosen:
            groups = by_topic.get(topic.name, [])
            for partition in topic.partitions:
                end = partition.readable_end()
                if groups:
                    pending = sum(g.deliveries[partition.index].unsettled(end) for g in groups)
                else:
                    pending = partition.readable_messages()
                queues[f"{topic.name}-{partition.index}"] = pending
        return {
            "queues": queues,
            "topics": len(self.topics),
            "groups": len(self.groups),
            "messages_in": self.metrics.total("messages_in"),
            "messages_out": self.metrics.total("messages_out"),
        }


class BatchResult:
    __slots__ = ("base_offset", "duplicate", "last_offset", "partition")

    def __init__(self, partition: int, base_offset: int, last_offset: int, duplicate: bool) -> None:
        self.partition = partition
        self.base_offset = base_offset
        self.last_offset = last_offset
        self.duplicate = duplicate


RESERVED_HEADER_PREFIX = "logq-"


def _apply_retention(
    partitions: list[Partition], now_ms: int
) -> list[tuple[Partition, int, RetentionResult]]:
    """Retention of each partition not known to be idle (blocking): each
    with its first offset before and the result."""
    applied: list[tuple[Partition, int, RetentionResult]] = []
    for partition in partitions:
        log = partition.log
        if log.retention_idle(now_ms):
            continue
        before = log.first_offset
        applied.append((partition, before, log.apply_retention(now_ms)))
    return applied


def _partition_logs(topic: Topic) -> list[PartitionLog]:
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


def _check_reserved_headers(batch: bytes) -> None:
    """A producer-built batch may carry only the reserved headers its
    producer writes for a TTL and a dedup id, in their form and with the
    batch marked for them; nothing else under `logq-`."""
    found = header_names_with(batch, RESERVED_HEADER_PREFIX.encode())
    if not found:
        return
    attributes = read_header(batch).attributes
    for name, value in found.items():
        if (
            name == HEADER_EXPIRES_AT
            and attributes & EXPIRING
            and value.isascii()
            and value.isdigit()
        ):
            continue
        if name == HEADER_DEDUP_ID and attributes & DEDUP:
            continue
        raise BadArgumentError(
            f"a record has the header {name[:64]!r}: headers under {RESERVED_HEADER_PREFIX} are "
            "written by the broker only (a producer writes logq-expires-at and logq-dedup-id "
            "for a ttl and a dedup_id, in a batch marked for them)"
        )


def _with_dedup(headers: dict[str, str], message: OutgoingMessage) -> dict[str, str]:
    if message.dedup_id is None:
        return headers
    if not 1 <= len(message.dedup_id) <= DEDUP_ID_LENGTH_MAX:
        raise BadArgumentError(f"dedup_id must be 1..{DEDUP_ID_LENGTH_MAX} characters")
    return {**headers, HEADER_DEDUP_ID: message.dedup_id}


def _with_expiry(message: OutgoingMessage, now_ms: int) -> dict[str, str]:
    if message.ttl_ms is None:
        return message.headers
    ttl_ms = parse_duration_ms(message.ttl_ms, name="ttl")
    return {**message.headers, HEADER_EXPIRES_AT: str(now_ms + ttl_ms)}


def _from_log_error(error: LogError) -> LogqError:
    return from_log_error(error)


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


def _partly_stored(error: BaseException, results: list[PublishResult | None]) -> BaseException:
    """The error of a publish whose batches partly failed, saying which of
    its messages were stored all the same (they stay: a retry of those
    would store them twice)."""
    stored = [(index, result) for index, result in enumerate(results) if result is not None]
    if (
        not stored
        or not isinstance(error, LogqError)
        or type(error).__init__ is not LogqError.__init__
    ):
        return error
    indexes = ", ".join(str(index) for index, _ in stored)
    partial = type(error)(
        f"{error.message}; messages {indexes} of this publish were stored (see `stored`),"
        " the others were not"
    )
    partial.stored = [
        {"index": index, "id": r.id, "partition": r.partition, "offset": r.offset}
        for index, r in stored
    ]
    return partial
