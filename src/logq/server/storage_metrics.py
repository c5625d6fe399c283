"""Prometheus families of the storage side, read at scrape time: the
writer's commit groups, fsync latency (a histogram per topic, and the
delivery journal's), fsync failures, what recovery found on start,
segments, rebalances per group, the data disk's free space, and the
metadata records' writes and damage. A scrape reads the logs' figures on
the event loop (`read`) and builds the families from them on a thread
(`build`): tens of thousands of partitions make about a hundred thousand
samples."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from logq.broker import Broker
from logq.log.file_log import FSYNC_BUCKETS_S

JOURNAL = "~journal"  # the `topic` label of the delivery journal's figures
TRACE = "~trace"  # the `topic` label of the trace journal's figures


@dataclass
class StorageFigures:
    """What a scrape read of the storage side, for `StorageCollector.build`."""

    # per topic (and the two journals): histograms and statistics of its
    # opened logs, and whether its logs keep an fsync histogram at all
    topics: list[tuple[str, list[list[int]], list[dict[str, Any]], bool]] = field(
        default_factory=list
    )
    rebalances: list[tuple[str, str, int]] = field(default_factory=list)
    gauges: dict[str, list[tuple[list[str], float]]] = field(default_factory=dict)


class StorageCollector(Collector):
    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def describe(self) -> Iterable[Metric]:
        return list(_families().values())

    def collect(self) -> Iterable[Metric]:
        return self.build(self.read())

    def read(self) -> StorageFigures:
        """The figures, read from the broker (on the event loop)."""
        figures = StorageFigures()
        broker = self._broker
        logs: list[tuple[str, list[Any]]] = [
            (name, [p.log for p in topic.partitions])
            for name, topic in sorted(broker.topics.items())
        ]
        logs.append((JOURNAL, broker.state_logs()))
        logs.append((TRACE, [broker.trace_log.log]))
        for name, logs_of_topic in logs:
            # a log not opened since the start has counted nothing: passed
            # over, so a scrape costs what the partitions in use cost
            members = [log for log in logs_of_topic if log.opened]
            histograms = [
                log.fsync_histogram() for log in members if hasattr(log, "fsync_histogram")
            ]
            keeps = bool(logs_of_topic) and hasattr(logs_of_topic[0], "fsync_histogram")
            stats = [log.statistics() for log in members]
            figures.topics.append((name, histograms, stats, keeps))
        figures.rebalances = [
            (group.topic, group.name, group.membership.generation)
            for group in broker.groups.values()
            if not group.name.startswith("~")
        ]
        gauges = figures.gauges
        writer = broker.writer.stats
        gauges["commit_groups"] = [([], writer["groups"])]
        gauges["commit_writes"] = [([], writer["writes"])]
        gauges["commit_fsyncs"] = [
            (["journal"], writer["journal_fsyncs"]),
            (["log"], writer["log_fsyncs"]),
        ]
        gauges["commit_flushes"] = [([], writer["flushes"])]
        gauges["commit_failed"] = [([], writer["failed_groups"])]
        journal = broker.writer.journal
        if journal is not None:
            gauges["commit_journal_bytes"] = [([], journal.size_bytes)]
            gauges["commit_journal_damaged"] = [([], journal.stats["damaged"])]
            gauges["commit_journal_cut"] = [([], journal.stats["cut_bytes"])]
        gauges["scrub_passes"] = [([], broker.scrub_passes)]
        disk = broker.disk
        if disk.free_bytes is not None:
            gauges["disk_free"] = [([], disk.free_bytes)]
        gauges["disk_full"] = [([], int(disk.full))]
        metadata = broker.backend.metadata_statistics()
        gauges["metadata_slots_damaged"] = [([], metadata["slots_damaged"])]
        gauges["metadata_records_damaged"] = [([], len(broker.records.damaged))]
        gauges["metadata_writes"] = [([], metadata["puts"] + metadata["deletes"])]
        gauges["metadata_written_bytes"] = [([], metadata["bytes_written"])]
        return figures

    @staticmethod
    def build(figures: StorageFigures) -> list[Metric]:
        """The families of what `read` found (on any thread)."""
        families = _families()
        for name, found, stats, keeps in figures.topics:
            histograms = found or ([[0] * (len(FSYNC_BUCKETS_S) + 1)] if keeps else [])
            if histograms:
                counts = [sum(column) for column in zip(*histograms, strict=True)]
                total_seconds = sum(float(s.get("fsync_seconds", 0.0)) for s in stats)
                buckets, running = [], 0
                for bound, count in zip((*map(str, FSYNC_BUCKETS_S), "+Inf"), counts, strict=True):
                    running += count
                    buckets.append((bound, running))
                families["fsync"].add_metric([name], buckets, total_seconds)
            families["fsync_failures"].add_metric(
                [name], sum(int(s.get("fsync_failures", 0)) for s in stats)
            )
            for key in (
                "recovery_ms",
                "recovery_cut_bytes",
                "recovery_scanned_bytes",
                "segments",
                "damaged_ranges",
                "damaged_offsets",
                "damage_found",
                "files_repaired",
                "verified_bytes",
            ):
                value = sum(float(s.get(key, 0)) for s in stats)
                families[key].add_metric([name], value / 1000 if key == "recovery_ms" else value)
        for topic, group, generation in figures.rebalances:
            families["rebalances"].add_metric([topic, group], generation)
        for key, samples in figures.gauges.items():
            for labels, value in samples:
                families[key].add_metric(labels, value)
        return list(families.values())


def _families() -> dict[str, Any]:
    topic = ["topic"]
    return {
        "commit_groups": CounterMetricFamily(
            "logq_commit_groups", "Commit groups the writer made durable (one fsync each at most)"
        ),
        "commit_writes": CounterMetricFamily(
            "logq_commit_writes", "Writes handed to the writer (each a batch of one log)"
        ),
        "commit_fsyncs": CounterMetricFamily(
            "logq_commit_fsyncs",
            "Fsyncs of the commit journal (journal) and of logs that took a large batch (log)",
            labels=["kind"],
        ),
        "commit_flushes": CounterMetricFamily(
            "logq_commit_flushes", "Flushes: logs fsynced and their journal copies removed"
        ),
        "commit_failed": CounterMetricFamily(
            "logq_commit_failed_groups", "Commit groups whose journal write or fsync failed"
        ),
        "commit_journal_bytes": GaugeMetricFamily(
            "logq_commit_journal_bytes", "Size of the active commit journal file"
        ),
        "commit_journal_damaged": CounterMetricFamily(
            "logq_commit_journal_damaged",
            "Commit journal records found not to verify before its last good one, and logs"
            " missing batches it lacked, at the last start",
        ),
        "commit_journal_cut": GaugeMetricFamily(
            "logq_commit_journal_cut_bytes",
            "Torn end of the commit journal (a write never acknowledged) cut at the last start",
        ),
        "fsync": HistogramMetricFamily(
            "logq_fsync_seconds", "fdatasync latency per topic (and ~journal)", labels=topic
        ),
        "fsync_failures": CounterMetricFamily(
            "logq_fsync_failures", "fsyncs that failed (the log was cut back)", labels=topic
        ),
        "recovery_ms": GaugeMetricFamily(
            "logq_recovery_seconds", "Time the last start took to open the logs", labels=topic
        ),
        "recovery_cut_bytes": GaugeMetricFamily(
            "logq_recovery_cut_bytes", "Torn or corrupt bytes cut at the last start", labels=topic
        ),
        "recovery_scanned_bytes": GaugeMetricFamily(
            "logq_recovery_scanned_bytes", "Bytes validated at the last start", labels=topic
        ),
        "segments": GaugeMetricFamily("logq_segments", "Segment files", labels=topic),
        "damaged_ranges": GaugeMetricFamily(
            "logq_damaged_ranges",
            "Ranges of offsets known lost to damage on disk (each logged once with its offsets)",
            labels=topic,
        ),
        "damaged_offsets": GaugeMetricFamily(
            "logq_damaged_offsets", "Offsets known lost to damage on disk", labels=topic
        ),
        "damage_found": CounterMetricFamily(
            "logq_damage_found", "Damaged ranges found since the start", labels=topic
        ),
        "files_repaired": CounterMetricFamily(
            "logq_files_repaired",
            "Indexes, checkpoints and epoch files found damaged at the last start and rebuilt",
            labels=topic,
        ),
        "verified_bytes": CounterMetricFamily(
            "logq_verified_bytes", "Segment bytes verified whole (scrubber and reads)", labels=topic
        ),
        "scrub_passes": CounterMetricFamily(
            "logq_scrub_passes", "Passes of the scrubber over every sealed segment since the start"
        ),
        "rebalances": CounterMetricFamily(
            "logq_rebalances", "Rebalances of the group", labels=["topic", "group"]
        ),
        "disk_free": GaugeMetricFamily(
            "logq_disk_free_bytes", "Free space on the data directory's disk, last measured"
        ),
        "disk_full": GaugeMetricFamily(
            "logq_disk_full", "1 while publishes are refused for want of disk space"
        ),
        "metadata_slots_damaged": CounterMetricFamily(
            "logq_metadata_slots_damaged",
            "Metadata record slots found not to verify (each logged once; the other slot used)",
        ),
        "metadata_records_damaged": GaugeMetricFamily(
            "logq_metadata_records_damaged",
            "Metadata records damaged in both slots: their topics or groups are left out",
        ),
        "metadata_writes": CounterMetricFamily(
            "logq_metadata_writes", "Metadata record puts and deletes since the start"
        ),
        "metadata_written_bytes": CounterMetricFamily(
            "logq_metadata_written_bytes", "Bytes of metadata record slots written since the start"
        ),
    }
