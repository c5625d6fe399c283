"""Delivery events to the state logs of the partitions they concern.

Each event names a group and a partition; the events of one call go, one
batch per partition, to those partitions' state logs through the broker's
writer, so a settlement that spans partitions is one commit group (one
fsync). A partition whose state log has grown past its snapshot size gets a
snapshot of every group's state for it, its producer table and its dedup
ids, after which its older state segments are deleted
(state/partition_state.py).

Writes are handed over in the same turn of the event loop as the state
change they record, so a snapshot (taken in one turn too) always lies after
every event it includes and before every event it does not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from logq.broker.commit import Commits
from logq.broker.group import Group
from logq.broker.memory import TRIM_AFTER_BYTES, release_free_memory
from logq.broker.topic import Partition, Topic, producer_snapshot
from logq.log import AppendResult, LogError
from logq.state.events import Event

logger = logging.getLogger(__name__)


class StateWriter:
    def __init__(
        self,
        writer: Commits,
        topics: dict[str, Topic],
        groups: dict[str, Group],
        now_ms: Callable[[], int],
        archive_snapshot: Callable[[str, int], bytes] | None = None,
    ) -> None:
        self._archive_snapshot = archive_snapshot
        self._writer = writer
        self._topics = topics
        self._groups = groups
        self._now_ms = now_ms
        self._snapshots: set[asyncio.Task[bool]] = set()  # owned until done

    def submit(
        self, events: Sequence[Event], *, sync: bool = True
    ) -> list[asyncio.Future[AppendResult]]:
        """Hand the events to the writer, one batch per partition (now, in
        this turn of the loop); the futures resolve once each is durable (not
        `sync`: once written, durable with the next commit that fsyncs)."""
        by_partition: dict[tuple[str, int], list[Event]] = {}
        for event in events:
            group = self._groups.get(event.group)
            topic_name = group.topic if group is not None else event.group.partition("/")[0]
            by_partition.setdefault((topic_name, event.partition), []).append(event)
        now_ms = self._now_ms()
        futures = []
        for (topic_name, index), found in by_partition.items():
            topic = self._topics.get(topic_name)
            if topic is None or index >= len(topic.partitions):
                continue  # deleted meanwhile: its state went with it
            state = topic.state_of(index)
            batch = state.events_batch(found, now_ms)
            futures.append(self._writer.write(state.log, state.log_id, batch, sync=sync))
            if state.wants_snapshot:
                self.start_snapshot(topic, topic.partitions[index])
        return futures

    def start_snapshot(self, topic: Topic, partition: Partition) -> None:
        """Take a snapshot of `partition`'s state in the background (marked as
        under way at once, not when the task first runs: the calls until it
        starts, this turn's next write among them, start no second one)."""
        topic.state_of(partition.index).snapshotting = True
        task = asyncio.get_running_loop().create_task(self.snapshot(topic, partition))
        self._snapshots.add(task)
        task.add_done_callback(self._snapshot_done)

    def _snapshot_done(self, task: asyncio.Task[bool]) -> None:
        self._snapshots.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("a state snapshot failed: %s", task.exception())

    async def snapshot(self, topic: Topic, partition: Partition) -> bool:
        """Write every group's state of `partition` as a snapshot, durably, and
        delete the state segments before it; whether it was stored."""
        state = topic.state_of(partition.index)
        state.snapshotting = True
        try:
            await topic.load_producers(partition)
            groups = dict(partition.deliveries)
            data_offset, producers = producer_snapshot(partition)
            archive = (
                self._archive_snapshot(topic.name, partition.index)
                if self._archive_snapshot is not None and topic.settings.archive
                else b""
            )
            under_way = partition.dedup_in_flight > 0
            batch = state.snapshot_batch(
                groups,
                data_offset,
                producers,
                self._now_ms(),
                topic.dedup.partition_ids(partition.index),
                dedup_tail=under_way,
                archive=archive,
            )
            if not under_way:
                partition.dedup_mark = None  # the next dedup publish marks anew
            result = await self._writer.write(state.log, state.log_id, batch)
            await asyncio.to_thread(state.snapshot_stored, result.base_offset)
            if len(batch) >= TRIM_AFTER_BYTES:  # a large buffer let go: give it back
                del batch, groups, producers, archive
                await asyncio.to_thread(release_free_memory)
        except (LogError, OSError) as error:
            logger.warning(
                "state snapshot of %s/%d not written: %s", topic.name, partition.index, error
            )
            return False
        else:
            return True
        finally:
            state.snapshotting = False

    async def close(self) -> None:
        """Let the snapshots under way finish."""
        if self._snapshots:
            await asyncio.gather(*self._snapshots, return_exceptions=True)
