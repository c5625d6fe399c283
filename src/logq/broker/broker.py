"""The Broker: the one facade every front end calls, over owned components.

Each job is a component of its own, a module each, sharing the registries
and services of `Core` (core.py) and calling one another only through
their methods:

- catalog.py (topics and their partition logs), group_catalog.py (groups),
  recovery.py (the start), describing.py (what the broker says of itself);
- publishing.py (storing what producers send), reading.py (peeks, replays
  by offset or time, lookups), replay.py (replay groups);
- coordination.py (membership), receiving.py (planning and handing out
  deliveries), settlement.py and expired_settlement.py (ack, nack, reject,
  extend, seek, EXPIRED), leases.py (lease expiry), dead_lettering.py (moves
  to a DLQ), dead_letters.py and redrive.py (DLQ operations);
- state_commit.py (delivery events made durable), tracing.py (lifecycles).

The facade builds them, runs the timer (lease expiry, sessions, flushes,
retention), and opens and closes the whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from logq.broker.archiving import BrokerArchive
from logq.broker.catalog import Catalog, partition_logs
from logq.broker.clock import Clock, SystemClock
from logq.broker.config import BrokerConfig
from logq.broker.coordination import Coordinator
from logq.broker.core import Core
from logq.broker.dead_lettering import DeadLetterMover
from logq.broker.dead_letters import DeadLetters
from logq.broker.describing import Describer
from logq.broker.expired_settlement import ExpiredSettlement
from logq.broker.group_catalog import GroupCatalog
from logq.broker.leases import Leases
from logq.broker.memory import release_free_memory
from logq.broker.publishing import BatchResult, Publisher
from logq.broker.reading import Reader
from logq.broker.receiving import Receiving
from logq.broker.recovery import Recovery
from logq.broker.redrive import Redrives
from logq.broker.replay import Replays
from logq.broker.scrubber import Scrubber
from logq.broker.settlement import Settlement
from logq.broker.state_commit import StateCommit
from logq.broker.topic import Partition
from logq.broker.tracing import Tracer
from logq.errors import LogqError
from logq.log import DirectoryLock, FsyncPolicy, PartitionLog, RetentionResult
from logq.state.trace import TraceLog

logger = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["BatchResult", "Broker"]


class Broker:
    """A running broker. Build it with `await Broker.open(config)`."""

    def __init__(self, config: BrokerConfig, clock: Clock) -> None:
        core = self._core = Core(config, clock)
        # the registries and services front ends and tests look at
        self.config = config
        self.clock = clock
        self.backend = core.backend
        self.records = core.records
        self.topics = core.topics
        self.groups = core.groups
        self.metrics = core.metrics
        self.disk = core.disk
        self.writer = core.writer
        self.state_writer = core.state_writer
        self.lanes = core.lanes
        self.scheduler = core.scheduler
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
        # the components, each given what it calls
        self._tracer = Tracer(core, self.trace_log)
        self._groups = GroupCatalog(core)
        self._coordinator = Coordinator(core, self._groups)
        self._commit = StateCommit(core, self._tracer, self._coordinator)
        self._catalog = Catalog(core, self._groups, self._forget_topic)
        self._publisher = Publisher(core, self._tracer, self._catalog)
        self._reader = Reader(core)
        self._mover = DeadLetterMover(
            core, self._tracer, self._commit, self._catalog, self._publisher
        )
        self._receiving = Receiving(
            core, self._tracer, self._commit, self._coordinator, self._groups, self._mover
        )
        self._settlement = Settlement(core, self._tracer, self._commit, self._groups, self._mover)
        self._expired = ExpiredSettlement(core, self._tracer, self._commit, self._mover)
        self._leases = Leases(core, self._tracer, self._commit, self._mover)
        self._dead_letters = DeadLetters(
            core,
            self._commit,
            self._groups,
            self._reader,
            self._publisher,
            Redrives(core, self._tracer, self._commit, self._reader),
        )
        self._replays = Replays(core, self._groups, self._settlement)
        self._describer = Describer(core)
        self.archive: BrokerArchive | None = (
            BrokerArchive(
                config.archive,
                config.data_dir,
                write_record=self._catalog.write_archive_record,
                describe=self._catalog.archived_partition_document,
                settings_of=lambda name: t.settings if (t := self.topics.get(name)) else None,
                now_ms=clock.now_ms,
            )
            if config.archive is not None
            else None
        )
        core.archive = self.archive
        self._bind_api()
        self._disk_checked_ms = clock.now_ms()
        self._retention_checked_ms = clock.now_ms()
        self._ticker: asyncio.Task[None] | None = None
        self._scrubber: Scrubber | None = None
        self._directory_lock: DirectoryLock | None = None  # taken by open(), given back by close()

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
            await Recovery(broker._core, broker._catalog).recover()
            # what a crash interrupted is finished at once, not when its holds expire
            await broker._mover.finish_moves()
            await broker._dead_letters.finish_redrives()
            # what recovery read (segments, snapshots) is freed: give it back
            await asyncio.to_thread(release_free_memory)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return broker

    def _bind_api(self) -> None:
        """The facade's calls, each the method of the component whose job it
        is (bound, so a request costs no extra hop; their docs are there)."""
        core, catalog, describer = self._core, self._catalog, self._describer
        # topics
        self.topic = core.topic
        self.dlq_name = core.dlq_name
        self.create_topic = catalog.create_topic
        self.update_topic = catalog.update_topic
        self.delete_topic = catalog.delete_topic
        self.describe_topic = describer.describe_topic
        self.list_topics = describer.list_topics
        self.topic_counts = describer.topic_counts
        self.group_counts = describer.group_counts
        self.stats = describer.stats
        self.archive_status = describer.archive_status
        self.dlq_size = describer.dlq_size
        # publishing and reading
        self.publish = self._publisher.publish
        self.publish_batch = self._publisher.publish_batch
        self.read_raw = self._reader.read_raw
        self.read_messages = self._reader.read_messages
        self.get_message = self._reader.get_message
        self.trace = self._tracer.trace
        # groups
        self.group = core.group
        self.put_group = self._groups.put_group
        self.describe_group = self._groups.describe_group
        self.list_groups = self._groups.list_groups
        self.join = self._coordinator.join
        self.heartbeat = self._coordinator.heartbeat
        self.leave = self._coordinator.leave
        self.replay = self._replays.replay
        # delivery
        self.receive_raw = self._receiving.receive_raw
        self.receive = self._receiving.receive
        self.ack = self._settlement.ack
        self.ack_ranges = self._settlement.ack_ranges
        self.nack = self._settlement.nack
        self.reject = self._settlement.reject
        self.extend = self._settlement.extend
        self.seek = self._settlement.seek
        self.release_expired = self._expired.release_expired
        self.release_expired_ranges = self._expired.release_expired_ranges
        self.expire_leases = self._leases.expire_leases
        # dead letters
        self.dlq_messages = self._dead_letters.dlq_messages
        self.redrive = self._dead_letters.redrive
        self.purge_dlq = self._dead_letters.purge_dlq
        self.requeue_dlq = self._dead_letters.requeue_dlq

    @property
    def partitions_held(self) -> int:
        """Partitions of every topic, and of creates under way (limits.partitions)."""
        return self._catalog.partitions_held

    def _forget_topic(self, name: str) -> None:
        self._dead_letters.forget(name)

    async def run(self, function: Callable[[], T]) -> T:
        """Run blocking storage work off the event loop (inline when the
        backend's calls never block)."""
        return await self._core.run(function)

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
        while not self._core.closed:
            await asyncio.sleep(self.config.tick_ms / 1000)
            try:
                await self.tick()
            except LogqError as error:
                logger.warning("timer: %s", error)
            except Exception:
                logger.exception("timer failed")

    async def tick(self) -> None:
        """One round of timed work: expire leases and sessions, flush, retain."""
        self._core.writer.kick()  # leases' records wait no longer than a tick
        await self._leases.expire_leases()
        now_ms = self.clock.now_ms()
        for name in {topic_name for _, topic_name in self.scheduler.advance(now_ms)}:
            topic = self.topics.get(name)
            if topic is not None:
                topic.changed.set()
        self._coordinator.expire_sessions()
        self._tracer.flush()
        if self.backend.persistent:
            await self.run(self._flush_due)
            if self.disk.full or now_ms - self._disk_checked_ms >= self.config.disk_check_ms:
                self._disk_checked_ms = now_ms
                await self.run(self.disk.measure)
        if now_ms - self._retention_checked_ms >= self.config.retention_check_ms:
            self._retention_checked_ms = now_ms
            await self.apply_retention()

    def _flush_due(self) -> None:
        """Under `fsync: interval`, the logs whose interval has passed (blocking);
        under the other policies no partition log is looked at (a tick comes
        every `tick_ms`: a walk over tens of thousands would cost a core)."""
        if self.config.log.fsync is FsyncPolicy.INTERVAL:
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
                    self._tracer.record("retention_deleted", topic, partition.index, gone)
        self._tracer.flush()
        await self.run(lambda: self.trace_log.apply_retention(now_ms))
        return deleted

    async def close(self) -> None:
        """Stop timers, flush and close every log and the journal."""
        if self._core.closed:
            return
        self._core.closed = True
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
        logs = [log for topic in self.topics.values() for log in partition_logs(topic)]
        await self.run(lambda: self.backend.close_logs(logs))
        journal = self.writer.journal
        if journal is not None:
            await self.run(journal.retire)
        self._tracer.flush()
        await self.run(self.trace_log.close)
        await self.run(self.backend.close)
        self._core.executor.shutdown(wait=True)

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

    def state_logs(self) -> list[PartitionLog]:
        """Every partition's state log, for their storage statistics."""
        return [
            topic.state_of(p.index).log for topic in self.topics.values() for p in topic.partitions
        ]

    async def snapshot_delivery_state(self) -> None:
        """Write a snapshot of every partition's delivery state now (each is
        also taken on its own once its state log has grown past
        `snapshot_bytes`); the state segments before each go."""
        await asyncio.gather(
            *(
                self.state_writer.snapshot(topic, partition)
                for topic in list(self.topics.values())
                for partition in topic.partitions
            )
        )


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
