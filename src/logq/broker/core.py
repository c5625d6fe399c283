"""What the broker's components share: settings, clock, storage, registries.

`Core` holds no behaviour of its own beyond lookups and running blocking
work off the loop: the registries of topics and groups (each component
reads them; the catalogs change them), the storage backend and its thread
pool, the one writer and the state writer over it, the metrics, the disk
guard, the lane table and the timing wheel. Each component of the broker
(catalog.py, group_catalog.py, publishing.py, reading.py, delivery.py,
settlement.py, leases.py, dead_lettering.py, dead_letters.py, ...) takes
the core and the other components it calls, and nothing else.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

from logq.broker.archiving import BrokerArchive
from logq.broker.clock import Clock
from logq.broker.commit import Commits
from logq.broker.config import BrokerConfig
from logq.broker.dead_letter_names import DeadLetterNames
from logq.broker.disk import DiskGuard
from logq.broker.group import Group, group_key
from logq.broker.metadata import MetadataRecords
from logq.broker.metrics import Metrics
from logq.broker.state_writer import StateWriter
from logq.broker.topic import Topic
from logq.broker.wheel import TimingWheel
from logq.errors import GroupNotFoundError, ShuttingDownError, TopicNotFoundError
from logq.lanes import Lanes
from logq.log import FileBackend, LogConfig, MemoryBackend, StorageBackend
from logq.log.file_cache import OPEN_FILES_DEFAULT, FileCache
from logq.log.writer import Writer

T = TypeVar("T")


class Core:
    """The state and services every component of a broker works with."""

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
        self.executor = ThreadPoolExecutor(
            max_workers=config.storage_threads, thread_name_prefix="logq-storage"
        )
        self.writer = Commits(
            Writer(
                self.backend.open_commit_journal(),
                inline=not self.backend.calls_block,
                flush_bytes=config.commit_flush_bytes,
                flush_interval_s=config.commit_flush_interval_ms / 1000,
            )
        )
        # a state log beside each partition: kept short by snapshots, not by time
        self.state_config: LogConfig = replace(
            config.log,
            retention_ms=None,
            retention_bytes=None,
            segment_bytes=max(4096, min(config.log.segment_bytes, config.snapshot_bytes)),
            batch_bytes_max=256 << 20,  # a snapshot is one batch
        )
        self.state_writer = StateWriter(
            self.writer, self.topics, self.groups, clock.now_ms, self._archive_snapshot
        )
        self.random = random.Random()  # backoff jitter; tests seed it
        self.lanes = Lanes(config.lanes)
        # wakes the waiting receives of a topic when held-back or backed-off
        # messages come due (receives also compute their own deadline)
        self.scheduler: TimingWheel[str] = TimingWheel(tick_ms=10, start_ms=clock.now_ms())
        self.held_wake_ups: dict[tuple[str, int], int] = {}
        # Names that are some topic's dead-letter topic: only the broker
        # writes there, so a letter's origin headers can be trusted.
        self.dead_letter_topics = DeadLetterNames()
        self.archive: BrokerArchive | None = None  # set by the catalog when configured
        self.closed = False

    async def run(self, function: Callable[[], T]) -> T:
        """Run blocking storage work off the event loop (inline when the
        backend's calls never block)."""
        if not self.backend.calls_block:
            return function()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, function)
        except OSError as error:  # a full or failing disk: a catalogue error
            raise self.disk.storage_error(error) from error

    def check_open(self) -> None:
        if self.closed:
            raise ShuttingDownError("the broker is shutting down")

    def topic(self, name: str) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            raise TopicNotFoundError(f"topic {name!r} does not exist")
        return topic

    def group(self, topic_name: str, name: str) -> Group:
        group = self.groups.get(group_key(topic_name, name))
        if group is None:
            self.topic(topic_name)
            raise GroupNotFoundError(f"group {name!r} of topic {topic_name!r} does not exist")
        return group

    def dlq_name(self, topic_name: str) -> str:
        return self.topic(topic_name).settings.dlq_topic(topic_name)

    def _archive_snapshot(self, name: str, index: int) -> bytes:
        return self.archive.snapshot(name, index) if self.archive is not None else b""
