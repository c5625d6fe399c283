"""Prometheus families of what a broker can hold, and the switch that keeps
/metrics small whatever it holds.

`CapacityCollector`: open descriptors and their limit, the partition logs'
descriptor cache (open, its size, evictions), the partitions held and
their cap, and the times each listener ran out of descriptors.

`aggregate` sums a family's samples over the `topic` and `group` labels
(dropped): counters, gauges and each histogram bucket alike,
as Redpanda's `aggregate_metrics` does over partitions. With it on
(`metrics.aggregate`) the broker-wide families have one series each, so a
scrape's size no longer grows with the topic or group count.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from logq.broker import Broker
from logq.server.descriptors import DescriptorWatch

AGGREGATED_LABELS = frozenset({"topic", "group"})


class CapacityCollector(Collector):
    def __init__(self, broker: Broker, descriptors: DescriptorWatch) -> None:
        self._broker = broker
        self._descriptors = descriptors

    def describe(self) -> Iterable[Metric]:
        return list(_families().values())

    def collect(self) -> Iterable[Metric]:
        families = _families()
        descriptors = self._descriptors
        found = descriptors.check()
        if found is not None:
            families["open_fds"].add_metric([], found)
        if descriptors.limit is not None:
            families["max_fds"].add_metric([], descriptors.limit)
        families["partitions"].add_metric([], self._broker.partitions_held)
        limit = self._broker.config.partitions_max
        if limit is not None:
            families["partitions_max"].add_metric([], limit)
        files = self._broker.backend.file_statistics()
        if files is not None:
            families["log_open_files"].add_metric([], files["open_files"])
            families["log_open_files_max"].add_metric([], files["open_files_max"])
            families["log_file_evictions"].add_metric([], files["evictions"])
        for listener, count in sorted(descriptors.accept_paused.items()):
            families["accept_paused"].add_metric([listener], count)
        return list(families.values())


def _families() -> dict[str, Any]:
    return {
        "open_fds": GaugeMetricFamily("logq_open_fds", "File descriptors the broker holds"),
        "max_fds": GaugeMetricFamily(
            "logq_max_fds", "The limit on open file descriptors (soft, ulimit -n)"
        ),
        "partitions": GaugeMetricFamily(
            "logq_partitions", "Partitions of all topics (and of creates under way)"
        ),
        "partitions_max": GaugeMetricFamily(
            "logq_partitions_max", "The partition cap (limits.partitions, or derived)"
        ),
        "log_open_files": GaugeMetricFamily(
            "logq_log_open_files", "Descriptors the partition logs' cache holds open"
        ),
        "log_open_files_max": GaugeMetricFamily(
            "logq_log_open_files_max",
            "The partition logs' descriptor cache size (limits.openFiles)",
        ),
        "log_file_evictions": CounterMetricFamily(
            "logq_log_file_evictions",
            "Descriptors the cache closed to open another (their files reopen on use)",
        ),
        "accept_paused": CounterMetricFamily(
            "logq_accept_paused",
            "Times a listener stopped accepting for want of descriptors",
            labels=["listener"],
        ),
    }


def aggregate(family: Metric) -> Metric:
    """One family with its samples summed over the AGGREGATED_LABELS, in the
    order each remaining label set first came (so histogram buckets stay in
    order)."""
    summed: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for sample in family.samples:
        kept = tuple((k, v) for k, v in sample.labels.items() if k not in AGGREGATED_LABELS)
        key = (sample.name, kept)
        summed[key] = summed.get(key, 0.0) + sample.value
    result = Metric(family.name, family.documentation, family.type, family.unit)
    for (name, labels), value in summed.items():
        result.add_sample(name, dict(labels), value)
    return result
