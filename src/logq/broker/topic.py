"""A topic at run time: its settings, and per partition everything that moves with it.

A `Partition` is the runtime of one partition, the unit a broker serves
(and, with replicas, the unit that moves between brokers): its data log
and the appends to it, its producer table, its lane index, its state log
with every group's delivery state of it, and its role (the leader on a
single node). Groups hold the same delivery states by partition: a group
made, grown or removed is attached to or detached from its topic's
partitions (`Topic.attach`, `Topic.detach`).

Appends go to the broker's one writer (log/writer.py), which commits the
writes of every partition that arrive together with one fsync; reads run
off the event loop in the broker's thread pool. The idempotent producer check keeps,
per partition and producer, the results of its last few batches: a retried
batch returns the first result (awaiting it if the first is still being
written) and is never stored twice.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol, TypeVar

from logq.broker.commit import Commits
from logq.broker.dedup import DedupTable
from logq.broker.settings import TopicSettings
from logq.errors import BadArgumentError
from logq.log import AppendResult, LogConfig, PartitionLog, read_header, read_past_damage
from logq.log.batch import LANE_MASK, LANE_SHIFT, NO_PRODUCER_ID, iter_headers
from logq.state.delivery import PartitionDelivery
from logq.state.partition_state import PartitionState, ProducerSnapshot

T = TypeVar("T")


class Runner(Protocol):
    """Runs blocking storage work off the event loop."""

    def __call__(self, function: Callable[[], T], /) -> Awaitable[T]: ...


# runs of unsettled high/low batches a partition's lane index holds
# (lane_index.py); past this many, later ones are served in offset order
# until it drains
LANE_BATCHES_MAX = 100_000
PRODUCER_BATCHES_KEPT = 5  # as Kafka: the last five batches of each producer
PRODUCERS_PER_PARTITION_MAX = 10_000
# After a restart, producer state is rebuilt from the batches of this many
# records at the tail of the partition, the first time a producer writes.
PRODUCER_SCAN_RECORDS = 100_000
TOPICS_LOG_PREFIX = "topics/"
STATE_LOG_SUFFIX = ".state"


class Role(Enum):
    """What this broker is for a partition: its leader takes appends and
    serves groups (every partition of a single node)."""

    LEADER = "leader"


@dataclass(slots=True)
class ProducerEntry:
    last_sequence: int = -1
    batches: OrderedDict[int, asyncio.Future[AppendResult]] = field(default_factory=OrderedDict)
    results: OrderedDict[int, AppendResult] = field(default_factory=OrderedDict)  # from the log


@dataclass(slots=True)
class Partition:
    index: int
    log: PartitionLog
    producers: OrderedDict[int, ProducerEntry] = field(default_factory=OrderedDict)
    producers_loaded: bool = False
    # (start, end, lane) of runs of batches outside the normal lane that some
    # shared group has not settled: lets them serve high before normal before
    # low (see lane_index.py; bounded by LANE_BATCHES_MAX)
    lanes: list[tuple[int, int, int]] = field(default_factory=list)
    lanes_loaded: bool = False
    lanes_generation: int = 0  # moves on each time the index must be scanned again
    lanes_overflowed: bool = False  # lane batches were left out: scan again once it drains
    log_id: bytes = b""  # names the log in the commit journal (log/writer.py)
    # the state log of every group's delivery events of this partition, durable
    # (state/partition_state.py), and those groups' states (group key -> state)
    state: PartitionState | None = None
    deliveries: dict[str, PartitionDelivery] = field(default_factory=dict)
    role: Role = Role.LEADER
    # the end of the appends answered so far: every batch below it is known
    # to the producer table (so a snapshot of the table is good up to it);
    # None until the first append (then the log's end at open: everything
    # the log held when it was opened was answered before the start)
    resolved_end: int | None = None
    # where the producer table's scan of the log starts: the data offset of
    # the last state snapshot; None: the log's last PRODUCER_SCAN_RECORDS
    producers_scan_from: int | None = None
    # dedup publishes between their claim and its settling: a snapshot taken
    # meanwhile says dedup batches may follow it (see dedup.py)
    dedup_in_flight: int = 0
    # the dedup mark being written to the state log, once per snapshot
    dedup_mark: asyncio.Future[AppendResult] | None = None

    def readable_end(self) -> int:
        """The partition's readable end: every reader (groups planning
        deliveries, peek, replay, raw reads, message lookups, counts and
        stats) stops here, so none sees a message appended but not yet
        durable. The log's durable end today (its written end under a
        policy that trades durability away); the high watermark once
        replicas exist."""
        return self.log.readable_offset

    def readable_messages(self) -> int:
        """Messages a reader can see: from the log's start to the readable end."""
        return max(0, self.readable_end() - self.log.first_offset)


class Topic:
    def __init__(
        self,
        name: str,
        settings: TopicSettings,
        logs: list[tuple[PartitionLog, PartitionLog]],
        run: Runner,
        writer: Commits,
        storage_error: Callable[[OSError], Exception],
        snapshot_bytes: int,
    ) -> None:
        self.name = name
        self.settings = settings
        self.snapshot_bytes = snapshot_bytes
        self.partitions: list[Partition] = []
        for log, state_log in logs:
            self.add_partition(log, state_log)
        self._run = run
        self._writer = writer
        self._storage_error = storage_error
        self._round_robin = itertools.count()
        self.changed = asyncio.Event()  # set on every append; waiters clear it
        self.dedup = DedupTable()

    def add_partition(self, log: PartitionLog, state_log: PartitionLog) -> Partition:
        index = len(self.partitions)
        state_id = partition_log_id(self.name, index, state=True)
        partition = Partition(
            index,
            log,
            log_id=partition_log_id(self.name, index),
            state=PartitionState(state_log, state_id, self.snapshot_bytes),
        )
        self.partitions.append(partition)
        return partition

    def state_of(self, index: int) -> PartitionState:
        state = self.partitions[index].state
        assert state is not None
        return state

    def next_round_robin(self) -> int:
        return next(self._round_robin) % len(self.partitions)

    def attach(self, key: str, deliveries: list[PartitionDelivery]) -> None:
        """Give each partition the delivery state of group `key` (by partition)."""
        for partition, state in zip(self.partitions, deliveries, strict=False):
            partition.deliveries[key] = state

    def detach(self, key: str) -> None:
        """Group `key` is gone: its partitions forget its state."""
        for partition in self.partitions:
            partition.deliveries.pop(key, None)

    def partition(self, index: object) -> Partition:
        if isinstance(index, bool) or not isinstance(index, int):
            raise BadArgumentError(f"partition must be an integer, got {index!r}")
        if not 0 <= index < len(self.partitions):
            raise BadArgumentError(
                f"partition {index} does not exist: topic {self.name!r} has "
                f"{len(self.partitions)} partitions (0..{len(self.partitions) - 1})"
            )
        return self.partitions[index]

    async def append(self, partition: Partition, batch: bytes) -> tuple[AppendResult, bool]:
        """Store `batch`; (result, True) when it duplicated an earlier batch."""
        header = read_header(batch)
        if header.producer_id == NO_PRODUCER_ID:
            result = await self._store(partition, batch)
            self.note_lane(partition, batch, result)
            return result, False
        await self.load_producers(partition)
        entry = partition.producers.get(header.producer_id)
        if entry is None:
            entry = partition.producers[header.producer_id] = ProducerEntry()
            while len(partition.producers) > PRODUCERS_PER_PARTITION_MAX:
                partition.producers.popitem(last=False)
        partition.producers.move_to_end(header.producer_id)
        known = entry.batches.get(header.base_sequence)
        if known is not None:
            return await asyncio.shield(known), True
        recovered = entry.results.get(header.base_sequence)
        if recovered is not None:
            return recovered, True
        if header.base_sequence <= entry.last_sequence:
            raise BadArgumentError(
                f"producer {header.producer_id} sequence {header.base_sequence} was already "
                f"stored (last {entry.last_sequence}) and is too old to return its offsets"
            )
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        entry.batches[header.base_sequence] = future
        entry.last_sequence = header.base_sequence + header.record_count - 1
        while len(entry.batches) > PRODUCER_BATCHES_KEPT:
            entry.batches.popitem(last=False)
        try:
            result = await self._store(partition, batch)
        except BaseException as error:
            entry.batches.pop(header.base_sequence, None)
            entry.last_sequence = header.base_sequence - 1
            future.set_exception(error)
            future.exception()  # retrieved: duplicates waiting on it re-raise it
            raise
        future.set_result(result)
        self.note_lane(partition, batch, result)
        return result, False

    async def load_producers(self, partition: Partition) -> None:
        """Complete the producer table: what the last state snapshot held, then
        the batches the log took after it (once after a start)."""
        if partition.producers_loaded:
            return
        start = partition.producers_scan_from
        found = await self._run(lambda: _scan_producers(partition.log, start))
        if partition.producers_loaded:
            return
        for producer_id, scanned in found.items():
            entry = partition.producers.get(producer_id)
            if entry is None:
                partition.producers[producer_id] = scanned
                continue
            entry.last_sequence = max(entry.last_sequence, scanned.last_sequence)
            entry.results.update(scanned.results)
            while len(entry.results) > PRODUCER_BATCHES_KEPT:
                entry.results.popitem(last=False)
        partition.producers_loaded = True

    async def _store(self, partition: Partition, batch: bytes) -> AppendResult:
        """Hand the batch to the broker's writer: batches of every partition
        that arrive together share one commit (one fsync); order is arrival."""
        try:
            if not partition.log.opened:
                # the first write opens the log (its files, a recovery): in the
                # storage threads, side by side with others, not one after
                # another in the writer's thread
                await self._run(partition.log.ensure_open)
            result = await self._writer.write(partition.log, partition.log_id, batch)
        except OSError as error:  # a full or failing disk: a catalogue error
            raise self._storage_error(error) from error
        partition.resolved_end = max(partition.resolved_end or 0, result.next_offset)
        self._notify()
        return result

    def note_lane(self, partition: Partition, batch: bytes, result: AppendResult) -> None:
        lane = (read_header(batch).attributes & LANE_MASK) >> LANE_SHIFT
        if not lane or not partition.lanes_loaded:
            return  # not kept while no shared group reads it: the next load scans for it
        last = partition.lanes[-1] if partition.lanes else None
        if last is not None and last[1] > result.base_offset:
            return  # the load's scan found it first
        if last is not None and last[1] == result.base_offset and last[2] == lane:
            partition.lanes[-1] = (last[0], result.next_offset, lane)  # one run of the lane
        elif len(partition.lanes) < LANE_BATCHES_MAX:
            partition.lanes.append((result.base_offset, result.next_offset, lane))
        else:
            partition.lanes_overflowed = True

    def _notify(self) -> None:
        self.changed.set()

    def log_config(self, base: LogConfig) -> LogConfig:
        return replace(
            base,
            retention_ms=self.settings.retention_ms,
            retention_bytes=self.settings.retention_bytes,
        )


def partition_log_id(topic: str, partition: int, *, state: bool = False) -> bytes:
    """How the commit journal names a partition's data log (or its state log)."""
    suffix = STATE_LOG_SUFFIX if state else ""
    return f"{TOPICS_LOG_PREFIX}{topic}/{partition}{suffix}".encode()


def parse_partition_log_id(log_id: str) -> tuple[str, int, bool] | None:
    """(topic, partition, is the state log) of a partition log id, None for others."""
    if not log_id.startswith(TOPICS_LOG_PREFIX):
        return None
    topic, _, partition = log_id[len(TOPICS_LOG_PREFIX) :].rpartition("/")
    state = partition.endswith(STATE_LOG_SUFFIX)
    if state:
        partition = partition[: -len(STATE_LOG_SUFFIX)]
    return (topic, int(partition), state) if topic and partition.isdigit() else None


def producer_snapshot(partition: Partition) -> tuple[int, list[ProducerSnapshot]]:
    """The producer table as a state snapshot keeps it (load it first): good
    up to the returned data offset, below which every append was answered."""
    assert partition.producers_loaded
    kept: list[ProducerSnapshot] = []
    for producer_id, entry in partition.producers.items():
        batches = {seq: (r.base_offset, r.last_offset) for seq, r in entry.results.items()}
        for seq, future in entry.batches.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                batches[seq] = (future.result().base_offset, future.result().last_offset)
        if not batches:
            continue
        ordered = sorted(batches.items())[-PRODUCER_BATCHES_KEPT:]
        last_seq, (base, last) = ordered[-1]
        kept.append(
            ProducerSnapshot(
                producer_id,
                last_seq + last - base,
                [(seq, b, e) for seq, (b, e) in ordered],
            )
        )
    resolved_end = partition.resolved_end
    if resolved_end is None:  # nothing appended since the start: the log's end
        resolved_end = partition.log.next_offset  # (opened by the producer scan)
    return resolved_end, kept


def restore_producers(
    partition: Partition, producers: list[ProducerSnapshot], data_offset: int
) -> None:
    """Start the producer table from a state snapshot (its scan starts at `data_offset`)."""
    for kept in producers:
        entry = ProducerEntry(last_sequence=kept.last_sequence)
        for seq, base, last in kept.batches:
            entry.results[seq] = AppendResult(base, last)
        partition.producers[kept.producer_id] = entry
    partition.producers_scan_from = data_offset


def _scan_producers(log: PartitionLog, start: int | None) -> dict[int, ProducerEntry]:
    """Producer sequences and results found in the log from `start` (None:
    its last PRODUCER_SCAN_RECORDS records) on (blocking)."""
    if start is None:
        offset = max(log.first_offset, log.next_offset - PRODUCER_SCAN_RECORDS)
    else:
        offset = max(log.first_offset, start)
    found: dict[int, ProducerEntry] = {}
    for result in read_past_damage(log, offset, 4 << 20):
        for _, header in iter_headers(result.data):
            if header.producer_id == NO_PRODUCER_ID or header.base_offset < offset:
                continue
            entry = found.setdefault(header.producer_id, ProducerEntry())
            entry.last_sequence = header.base_sequence + header.record_count - 1
            entry.results[header.base_sequence] = AppendResult(
                header.base_offset, header.last_offset
            )
            while len(entry.results) > PRODUCER_BATCHES_KEPT:
                entry.results.popitem(last=False)
    return found
