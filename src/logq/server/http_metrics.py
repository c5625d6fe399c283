"""Prometheus metrics for one HTTP app, in a registry of its own.

Broker numbers (messages and bytes in and out, stored, pending, in flight,
acked, redelivered, dead-lettered...) are read from the Broker when
Prometheus scrapes, by a custom collector: the publish and delivery paths
keep their plain integer counters and pay nothing for the export. Only the
request latency histogram is updated per request, labelled by route
template (never the raw path), so its series are bounded by the route table.
The native listener's command latency comes from `command_metrics`.

A scrape reads the broker on the event loop (`collect`: its state is the
loop's) and sums (`metrics.aggregate`) and formats on a thread (`format`):
at 30,000 partitions the text alone took the loop 0.6 s a scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from logq.broker import Broker
from logq.server.archive_metrics import ArchiveCollector
from logq.server.auth_throttle import SignInThrottle
from logq.server.capacity_metrics import CapacityCollector, aggregate
from logq.server.command_metrics import CommandCollector, CommandTimes
from logq.server.connections import ConnectionCounter
from logq.server.descriptors import DescriptorWatch
from logq.server.security_metrics import AdmissionCollector
from logq.server.storage_metrics import StorageCollector

# Long polls wait up to a minute, so the buckets reach past it.
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Per topic, from the broker's Metrics counters.
_TOPIC_COUNTERS = {
    "messages_in": "Messages published",
    "bytes_in": "Bytes published (stored batch bytes)",
    "messages_out": "Messages delivered to groups",
    "bytes_out": "Bytes delivered to groups (stored batch bytes)",
}
# Per topic and group, from each group's counters.
_GROUP_COUNTERS = {
    "delivered": "Deliveries, first and repeated",
    "acked": "Messages acknowledged",
    "nacked": "Messages handed back with nack",
    "rejected": "Messages rejected straight to the dead-letter topic",
    "redelivered": "Deliveries after the first attempt",
    "dead_lettered": "Messages moved to the dead-letter topic",
    "expired": "Leases that expired before an ack",
    "ttl_expired": "Messages not delivered because their TTL had passed",
    "redriven": "Dead letters handed back to the group",
    "backoff_waits": "Redeliveries that waited a retry backoff",
    "backoff_wait_ms": "Milliseconds of retry backoff waited, in all",
    "stale": "Messages of settlements refused because the delivery named was no longer current",
    "lost_to_damage": "Messages passed without delivery, lost to damage on disk",
}


# Per topic and group, from each group's lifecycle figures: name, help, scale to the unit.
_LIFECYCLE_HISTOGRAMS = {
    "attempts": ("logq_delivery_attempts", "Delivery attempts a message took, when acked", 1.0),
    "time_to_ack_ms": (
        "logq_time_to_ack_seconds",
        "Time from a message's delivery to its ack",
        0.001,
    ),
    "time_in_dlq_ms": (
        "logq_time_in_dlq_seconds",
        "Time dead letters waited in the DLQ before a redrive",
        0.001,
    ),
}


def _lifecycle(families: dict[str, Any], labels: list[str], figures: dict[str, Any]) -> None:
    for key, (name, _, scale) in _LIFECYCLE_HISTOGRAMS.items():
        found = figures[key]
        buckets = [
            (bound if bound == "+Inf" else repr(float(bound) * scale), count)
            for bound, count in found["buckets"].items()
        ]
        families[name].add_metric(labels, buckets, found["sum"] * scale)
    reasons = families["logq_redeliveries"]
    for reason, count in sorted(figures["redelivery_reasons"].items()):
        reasons.add_metric([*labels, reason], count)


class BrokerCollector(Collector):
    """Reads the broker and the connection counter at scrape time."""

    def __init__(self, broker: Broker, connections: ConnectionCounter) -> None:
        self._broker = broker
        self._connections = connections

    def describe(self) -> Iterable[Metric]:
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        for topic, counters in sorted(self._broker.metrics.topics().items()):
            for name in _TOPIC_COUNTERS:
                families[name].add_metric([topic], counters[name])
        # the dashboard's cheap counts, not each topic's and group's full
        # description: a scrape of thousands of them holds the event loop
        for counted in self._broker.topic_counts():
            families["stored_messages"].add_metric([counted["name"]], counted["messages"])
            families["stored_bytes"].add_metric([counted["name"]], counted["bytes"])
        groups = {(g.topic, g.name): g for g in self._broker.groups.values()}
        for counted in self._broker.group_counts():
            labels = [counted["topic"], counted["group"]]
            group = groups[counted["topic"], counted["group"]]
            families["pending"].add_metric(labels, counted["lag"])
            families["in_flight"].add_metric(labels, counted["in_flight"])
            for name in _GROUP_COUNTERS:
                families[name].add_metric(labels, group.counters.get(name, 0))
            _lifecycle(families, labels, group.lifecycle.as_dict())
        connections = self._connections
        families["active_connections"].add_metric(["native"], connections.native)
        families["active_connections"].add_metric(["http"], connections.http_connections)
        families["connections_limit"].add_metric([], connections.limit)
        families["connections_refused"].add_metric([], connections.refused)
        return list(families.values())

    @staticmethod
    def _families() -> dict[str, Any]:
        """Metric families by key (each with `add_metric`, of its own kind)."""
        families: dict[str, Any] = {}
        for name, text in _TOPIC_COUNTERS.items():
            families[name] = CounterMetricFamily(f"logq_{name}", text, labels=["topic"])
        families["stored_messages"] = GaugeMetricFamily(
            "logq_stored_messages", "Messages held in the topic's log", labels=["topic"]
        )
        families["stored_bytes"] = GaugeMetricFamily(
            "logq_stored_bytes", "Bytes held in the topic's log", labels=["topic"]
        )
        group_labels = ["topic", "group"]
        families["pending"] = GaugeMetricFamily(
            "logq_pending_messages",
            "Messages the group has not settled (lag, in flight included)",
            labels=group_labels,
        )
        families["in_flight"] = GaugeMetricFamily(
            "logq_in_flight_messages", "Messages leased and not yet settled", labels=group_labels
        )
        for name, text in _GROUP_COUNTERS.items():
            families[name] = CounterMetricFamily(f"logq_{name}", text, labels=group_labels)
        for name, text, _ in _LIFECYCLE_HISTOGRAMS.values():
            families[name] = HistogramMetricFamily(name, text, labels=group_labels)
        families["logq_redeliveries"] = CounterMetricFamily(
            "logq_redeliveries",
            "Messages handed back for redelivery, by reason (lease_expired, nacked)",
            labels=[*group_labels, "reason"],
        )
        families["active_connections"] = GaugeMetricFamily(
            "logq_active_connections",
            "Open connections, by listener",
            labels=["listener"],
        )
        families["connections_limit"] = GaugeMetricFamily(
            "logq_connections_limit", "Most connections accepted at once"
        )
        families["connections_refused"] = CounterMetricFamily(
            "logq_connections_refused", "Connections refused at the limit"
        )
        return families


@dataclass(frozen=True)
class Collected:
    """A scrape as read: the per-topic and per-group families (made by
    calling `per_topic`, on any thread) apart from the others."""

    per_topic: list[Callable[[], Iterable[Metric]]]
    other: list[Metric]


class _Families(Collector):
    """Families already read, as `generate_latest` takes them."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class HttpMetrics:
    """The app's registry: broker numbers plus HTTP request latency."""

    def __init__(
        self,
        broker: Broker,
        connections: ConnectionCounter,
        native_times: CommandTimes | None = None,
        throttle: SignInThrottle | None = None,
        *,
        descriptors: DescriptorWatch | None = None,
        aggregate: bool = False,
    ) -> None:
        """`aggregate`: the per-topic and per-group families summed over
        topics and groups (see capacity_metrics)."""
        self.registry = CollectorRegistry()  # what is exposed as it is read
        self._per_topic: list[Collector] = [
            BrokerCollector(broker, connections),
            StorageCollector(broker),
            ArchiveCollector(broker),
        ]
        self._aggregate = aggregate
        self.registry.register(AdmissionCollector(connections, throttle or SignInThrottle()))
        self.registry.register(CapacityCollector(broker, descriptors or DescriptorWatch(None)))
        if native_times is not None:
            self.registry.register(CommandCollector(native_times))
        self._latency = Histogram(
            "logq_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._requests = Counter(
            "logq_http_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        self._latency.labels(method, route).observe(seconds)
        self._requests.labels(method, route, str(status)).inc()

    def collect(self) -> Collected:
        """Read every family (on the event loop: it reads the broker's state)."""
        per_topic: list[Callable[[], Iterable[Metric]]] = []
        for collector in self._per_topic:
            if isinstance(collector, StorageCollector):  # read now, built later
                per_topic.append(partial(collector.build, collector.read()))
            else:
                per_topic.append(partial(list, collector.collect()))
        return Collected(per_topic, list(self.registry.collect()))

    def format(self, collected: Collected) -> bytes:
        """The exposition text (on any thread: it reads only `collected`)."""
        per_topic = [family for build in collected.per_topic for family in build()]
        if self._aggregate:
            per_topic = [aggregate(family) for family in per_topic]
        return generate_latest(_Families([*per_topic, *collected.other]))

    def render(self) -> bytes:
        return self.format(self.collect())
