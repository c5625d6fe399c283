"""A topic at run time: its settings, its partition logs, and producer state.

Appends and reads run off the event loop in the broker's thread pool (the
file log blocks on fsync); concurrent appends to one partition share an
fsync inside the log (group commit). The idempotent producer check keeps,
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
from functools import partial
from typing import Protocol, TypeVar

from logq.broker.dedup import DedupTable
from logq.broker.settings import TopicSettings
from logq.errors import BadArgumentError
from logq.log import AppendResult, LogConfig, PartitionLog, read_header, read_past_damage
from logq.log.batch import LANE_MASK, LANE_SHIFT, NO_PRODUCER_ID, iter_headers

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
    # batches waiting for the partition's appender, and whether it runs
    queued: list[tuple[bytes, asyncio.Future[AppendResult]]] = field(default_factory=list)
    appending: bool = False


class Topic:
    def __init__(
        self,
        name: str,
        settings: TopicSettings,
        logs: list[PartitionLog],
        run: Runner,
    ) -> None:
        self.name = name
        self.settings = settings
        self.partitions = [Partition(index, log) for index, log in enumerate(logs)]
        self._run = run
        self._round_robin = itertools.count()
        self.changed = asyncio.Event()  # set on every append; waiters clear it
        self.dedup = DedupTable()
        self._appenders: set[asyncio.Task[None]] = set()  # owned until done

    def next_round_robin(self) -> int:
        return next(self._round_robin) % len(self.partitions)

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
        if not partition.producers_loaded:
            found = await self._run(lambda: _scan_producers(partition.log))
            if not partition.producers_loaded:
                for producer_id, scanned in found.items():
                    partition.producers.setdefault(producer_id, scanned)
                partition.producers_loaded = True
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

    async def _store(self, partition: Partition, batch: bytes) -> AppendResult:
        """Append through the partition's appender: the batches that arrive
        while one storage job runs go together in the next one (one job,
        one fsync), however many connections sent them; order is arrival."""
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        partition.queued.append((batch, future))
        if not partition.appending:
            partition.appending = True
            appender = asyncio.create_task(self._append_queued(partition))
            self._appenders.add(appender)
            appender.add_done_callback(self._appenders.discard)
        return await future

    async def _append_queued(self, partition: Partition) -> None:
        try:
            while partition.queued:
                taken, partition.queued = partition.queued, []
                batches = [batch for batch, _ in taken]
                try:
                    results = await self._run(partial(partition.log.append_many, batches))
                except Exception as error:  # fsync failed: none of them is acknowledged
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(error)
                    continue
                except BaseException:  # cancelled (shutdown): no caller waits forever
                    for _, future in taken + partition.queued:
                        future.cancel()
                    partition.queued = []
                    raise
                for (_, future), result in zip(taken, results, strict=True):
                    if future.done():  # its caller went away; the batch is stored
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                self._notify()
        finally:
            partition.appending = False

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


def _scan_producers(log: PartitionLog) -> dict[int, ProducerEntry]:
    """Producer sequences and results found in the tail of the log (blocking)."""
    offset = max(log.first_offset, log.next_offset - PRODUCER_SCAN_RECORDS)
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
