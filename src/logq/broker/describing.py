"""What the broker says of itself: topics, groups, statistics, the archive.

Answers are typed views (views.py) built from the registries as they are
now; nothing here reads a log's data or changes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from logq.archive.tiered_log import TieredLog
from logq.broker.core import Core
from logq.broker.dead_letter_names import DLQ_GROUP
from logq.broker.group import Group, group_key
from logq.broker.topic_counts import group_counts, topic_counts
from logq.broker.views import (
    ArchiveStatusView,
    DamageView,
    StatsView,
    TopicPartitionView,
    TopicView,
)


class Describer:
    """Describes topics, groups, statistics and the archive."""

    def __init__(self, core: Core) -> None:
        self._core = core

    def describe_topic(self, name: str) -> TopicView:
        topic = self._core.topic(name)
        groups = [g for g in self._core.groups.values() if g.topic == name]
        partitions = []
        for partition in topic.partitions:
            log = partition.log
            readable = partition.readable_end()
            stats = TopicPartitionView(
                partition=partition.index,
                role=partition.role.value,
                first_offset=log.first_offset,
                last_offset=readable - 1,
                next_offset=readable,
                messages=partition.readable_messages(),
                bytes=log.size_bytes,
                segments=log.segment_count,
            )
            if isinstance(log, TieredLog):  # the archive holds what lies below the disk
                stats["local_first_offset"] = log.local.first_offset
                archived = (
                    self._core.archive.archiver.get(name, partition.index)
                    if self._core.archive
                    else None
                )
                stats["archived_from"] = archived.manifest.first_offset if archived else None
                stats["archived_to"] = archived.manifest.archived_end if archived else None
            stats["pending"] = sum(
                g.deliveries[partition.index].unsettled(readable) for g in groups
            )
            stats["in_flight"] = sum(g.deliveries[partition.index].in_flight for g in groups)
            partitions.append(stats)
        counters = self._core.metrics.topic_counters(name)
        damaged = [
            DamageView(partition=p.index, start=d.start, end=d.end, reason=d.reason)
            for p in topic.partitions
            for d in p.log.damaged_ranges()
        ]
        totals = {
            key: sum(g.counters[key] for g in groups)
            for key in ("acked", "redelivered", "dead_lettered", "rejected", "nacked")
        }
        return TopicView(
            name=name,
            config=topic.settings.as_dict(),
            partitions=partitions,
            messages=sum(p["messages"] for p in partitions),
            bytes=sum(p["bytes"] for p in partitions),
            pending=sum(p["pending"] for p in partitions),
            in_flight=sum(p["in_flight"] for p in partitions),
            acked=totals["acked"],
            failed=totals["redelivered"],
            dead_lettered=totals["dead_lettered"],
            in_dlq=self.dlq_size(name),
            groups=sorted(g.name for g in groups),
            published=counters["messages_in"],
            damaged=damaged,
            damaged_offsets=int(
                sum(p.log.statistics().get("damaged_offsets", 0) for p in topic.partitions)
            ),
        )

    def list_topics(self) -> list[TopicView]:
        return [self.describe_topic(name) for name in sorted(self._core.topics)]

    def topic_counts(self) -> list[dict[str, Any]]:
        """Each topic's totals as `describe_topic` has them, cheaply, by name."""
        return topic_counts(self._core.topics, self._core.groups.values())

    def group_counts(self) -> list[dict[str, Any]]:
        """Each group's lag and in-flight as `list_groups` has them, cheaply."""
        return group_counts(self._core.topics, self._core.groups.values())

    def stats(self, names: Sequence[str] | None = None) -> StatsView:
        """Pending messages per partition of every topic, or of the topics
        `names` (a page); the broker's totals."""
        queues: dict[str, int] = {}
        by_topic: dict[str, list[Group]] = {}
        for group in self._core.groups.values():
            by_topic.setdefault(group.topic, []).append(group)
        chosen = (
            self._core.topics.values() if names is None else [self._core.topics[n] for n in names]
        )
        for topic in chosen:
            groups = by_topic.get(topic.name, [])
            for partition in topic.partitions:
                end = partition.readable_end()
                if groups:
                    pending = sum(g.deliveries[partition.index].unsettled(end) for g in groups)
                else:
                    pending = partition.readable_messages()
                queues[f"{topic.name}-{partition.index}"] = pending
        return StatsView(
            queues=queues,
            topics=len(self._core.topics),
            groups=len(self._core.groups),
            messages_in=self._core.metrics.total("messages_in"),
            messages_out=self._core.metrics.total("messages_out"),
        )

    def archive_status(self, topic_name: str | None = None) -> ArchiveStatusView:
        """The archive and, per archived partition: what it holds, what the
        local disk holds, the upload lag and the last error."""
        if topic_name is not None:
            self._core.topic(topic_name)
        if self._core.archive is None:
            return ArchiveStatusView(archive=None, partitions=[])
        archive = self._core.archive
        uploads = archive.archiver.uploader.stats
        reads = archive.archiver.reader.stats
        return ArchiveStatusView(
            archive=archive.description,
            partitions=[asdict(s) for s in archive.status(topic_name)],
            uploaded_segments=uploads.segments,
            uploaded_bytes=uploads.bytes,
            upload_failures=uploads.failures,
            remote_reads=reads.requests,
            remote_read_bytes=reads.bytes_read,
            cache_hits=reads.hits,
            cache_misses=reads.misses,
            damaged_reads=archive.archiver.damaged_reads,
            unavailable_reads=archive.archiver.unavailable_reads,
        )

    def dlq_size(self, topic_name: str) -> int:
        """Dead letters in the topic's DLQ now (not yet redriven, requeued or
        purged; all of a shared DLQ's), from the DLQ group's state: no reads."""
        dlq = self._core.topics.get(self._core.dlq_name(topic_name))
        if dlq is None:
            return 0
        group = self._core.groups.get(group_key(dlq.name, DLQ_GROUP))
        size = 0
        for partition in dlq.partitions:
            if group is None or partition.index >= len(group.deliveries):
                size += partition.readable_messages()
                continue
            state = group.deliveries[partition.index]
            start = max(state.floor, partition.log.first_offset)
            readable = partition.readable_end()
            size += sum(end - begin for begin, end in state.unsettled_ranges(start, readable))
        return size
