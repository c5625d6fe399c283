"""The broker's own settings (the server's config file feeds them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from logq.broker.archiving import ArchiveConfig
from logq.broker.settings import GroupSettings, TopicSettings
from logq.lanes import DEFAULT_ORDER
from logq.log import LogConfig


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    # None keeps everything in memory (embedded use, tests).
    data_dir: Path | None = None
    # tiered storage: where closed segments of topics with `archive: true` go
    archive: ArchiveConfig | None = None
    node_id: str = "node-1"
    # priority lanes, highest first; must include "normal" (see logq.lanes)
    lanes: tuple[str, ...] = DEFAULT_ORDER
    log: LogConfig = field(default_factory=LogConfig)
    topic_defaults: TopicSettings = field(default_factory=TopicSettings)
    group_defaults: GroupSettings = field(default_factory=GroupSettings)
    # Threads for blocking storage work (fsync, reads): appends from many
    # producers run concurrently so they share fsyncs.
    storage_threads: int = 8
    # Commit journal bytes after which the partition files are fsynced and
    # the journal's older files removed (log/writer.py): bounds the replay
    # at a start.
    commit_flush_bytes: int = 16 * 1024 * 1024
    # ... or after this long since the last flush, whichever comes first.
    commit_flush_interval_ms: int = 2000
    # Journal bytes after which delivery state is snapshotted.
    snapshot_bytes: int = 64 * 1024 * 1024
    # Dedup ids stored in a partition after which its state is snapshotted
    # (with the window's ids): bounds the data a restart after a crash reads
    # to rebuild them (see logq.broker.dedup).
    snapshot_dedup_ids: int = 20_000
    # A member that has not asked for messages this long leaves its group.
    session_timeout_ms: int = 30_000
    # How often leases and sessions are checked for expiry.
    tick_ms: int = 50
    # How often topics (and the trace journal) drop segments past retention.
    retention_check_ms: int = 60_000
    # Most messages one receive returns, and the longest long-poll.
    receive_messages_max: int = 10_000
    receive_wait_ms_max: int = 60_000
    # Most messages one REST/embedded publish call carries.
    publish_messages_max: int = 100_000
    message_bytes_max: int = 4 * 1024 * 1024  # key + value of one message
    key_bytes_max: int = 64 * 1024
    header_count_max: int = 64  # headers of one message
    header_bytes_max: int = 64 * 1024  # all of one message's headers, encoded
    topic_name_length_max: int = 200
    partitions_per_topic_max: int = 1024
    # Partitions of all topics together (dead-letter topics included); None:
    # no cap. `logq serve` derives one from the descriptor limit when the
    # config names none (see logq.server.descriptors).
    partitions_max: int | None = None
    # Descriptors the partition logs keep open at most, together (an LRU
    # cache: idle partitions hold none; see logq.log.file_cache). None: the
    # cache's default; `logq serve` derives one from the descriptor limit.
    open_files_max: int | None = None
    auto_create_topics: bool = False
    # Publishes are refused (DISKFULL) while the data disk has less free
    # space than this, so acks and the journal keep room; measured this often.
    disk_free_min_bytes: int = 64 * 1024 * 1024
    disk_check_ms: int = 1000
    # The trace journal keeps message lifecycles this long / this big, and is
    # fsynced this often (a power loss may lose that much trace, no data).
    trace_retention_ms: int | None = 7 * 86_400_000
    trace_retention_bytes: int | None = 1 << 30
    trace_fsync_interval_ms: int = 1000
    # The scrubber verifies sealed segments in the background at most this
    # fast (0: off); see logq.broker.scrubber.
    scrub_bytes_per_second: int = 4 * 1024 * 1024
    # Fault injection, for tests of recovery only: awaited at named points
    # between the durable steps of multi-step operations (broker/redrive.py
    # names them); it may kill the process there. `logq serve` sets one only
    # when LOGQ_FAULT_CRASH asks for it (logq.server.faults). None: no faults.
    fault_hook: Callable[[str], Awaitable[None]] | None = None
