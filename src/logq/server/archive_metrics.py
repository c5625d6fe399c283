"""Prometheus families of the archive (tiered storage), read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from logq.broker import Broker

TOPIC = ["topic"]  # summed over the topic's partitions (per-partition labels would not scale)


class ArchiveCollector(Collector):
    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def describe(self) -> Iterable[Metric]:
        return list(_families().values())

    def collect(self) -> Iterable[Metric]:
        families = _families()
        archive = self._broker.archive
        if archive is None:
            return families.values()
        by_topic: dict[str, list[float]] = {}
        for status in archive.status():
            sums = by_topic.setdefault(status.topic, [0.0, 0.0, 0.0, 0.0])
            sums[0] += status.upload_lag_bytes
            sums[1] = max(sums[1], status.upload_lag_ms / 1000)
            sums[2] += status.archived_bytes
            sums[3] += status.archived_segments
        for topic, (lag_bytes, lag_seconds, archived_bytes, segments) in sorted(by_topic.items()):
            families["lag_bytes"].add_metric([topic], lag_bytes)
            families["lag_seconds"].add_metric([topic], lag_seconds)
            families["archived_bytes"].add_metric([topic], archived_bytes)
            families["archived_segments"].add_metric([topic], segments)
        archiver = archive.archiver
        uploads, reads = archiver.uploader.stats, archiver.reader.stats
        families["uploaded_segments"].add_metric([], uploads.segments)
        families["uploaded_bytes"].add_metric([], uploads.bytes)
        families["upload_failures"].add_metric([], uploads.failures)
        families["remote_reads"].add_metric([], reads.requests)
        families["remote_read_bytes"].add_metric([], reads.bytes_read)
        families["cache_hits"].add_metric([], reads.hits)
        families["cache_misses"].add_metric([], reads.misses)
        families["cache_bytes"].add_metric([], archiver.reader.cache.bytes)
        families["errors"].add_metric([], archiver.errors)
        families["orphans_removed"].add_metric([], archiver.orphans_removed)
        families["damaged_reads"].add_metric([], archiver.damaged_reads)
        families["unavailable_reads"].add_metric([], archiver.unavailable_reads)
        return families.values()


def _families() -> dict[str, Any]:
    return {
        "lag_bytes": GaugeMetricFamily(
            "logq_archive_upload_lag_bytes",
            "Bytes of sealed segments not yet archived",
            labels=TOPIC,
        ),
        "lag_seconds": GaugeMetricFamily(
            "logq_archive_upload_lag_seconds",
            "Age of the newest message of the oldest segment not yet archived (the most of any partition)",
            labels=TOPIC,
        ),
        "archived_bytes": GaugeMetricFamily(
            "logq_archive_bytes", "Bytes of the partition held by the archive", labels=TOPIC
        ),
        "archived_segments": GaugeMetricFamily(
            "logq_archive_segments", "Segment objects the manifest holds", labels=TOPIC
        ),
        "uploaded_segments": CounterMetricFamily(
            "logq_archive_uploaded_segments", "Segments uploaded"
        ),
        "uploaded_bytes": CounterMetricFamily("logq_archive_uploaded_bytes", "Bytes uploaded"),
        "upload_failures": CounterMetricFamily(
            "logq_archive_upload_failures", "Upload rounds that failed (retried with backoff)"
        ),
        "remote_reads": CounterMetricFamily(
            "logq_archive_remote_reads", "Ranged requests to the object store"
        ),
        "remote_read_bytes": CounterMetricFamily(
            "logq_archive_remote_read_bytes", "Bytes read from the object store"
        ),
        "cache_hits": CounterMetricFamily(
            "logq_archive_cache_hits", "Chunk reads served by the local cache"
        ),
        "cache_misses": CounterMetricFamily(
            "logq_archive_cache_misses", "Chunk reads that went to the object store"
        ),
        "cache_bytes": GaugeMetricFamily(
            "logq_archive_cache_bytes", "Bytes in the archive's read cache"
        ),
        "errors": CounterMetricFamily(
            "logq_archive_errors", "Archive work that failed (horizons, deletion)"
        ),
        "orphans_removed": CounterMetricFamily(
            "logq_archive_orphans_removed", "Objects the reconciler removed"
        ),
        "damaged_reads": CounterMetricFamily(
            "logq_archive_damaged_reads",
            "Reads refused (CORRUPT) because an archived object failed its checks or is missing",
        ),
        "unavailable_reads": CounterMetricFamily(
            "logq_archive_unavailable_reads",
            "Reads refused (UNAVAILABLE) because the store was out of reach or did not answer",
        ),
    }
