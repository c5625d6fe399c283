"""Prometheus metrics of what the listeners refuse: connections refused,
closed to make room and timed out, connections not signed in, and failed
and throttled sign-ins. Read from their counters at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from logq.server.auth_throttle import SignInThrottle
from logq.server.connections import ConnectionCounter


class AdmissionCollector:
    def __init__(self, connections: ConnectionCounter, throttle: SignInThrottle) -> None:
        self._connections = connections
        self._throttle = throttle

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        connections, throttle = self._connections, self._throttle
        unauthenticated = GaugeMetricFamily(
            "logq_unauthenticated_connections", "Open connections not signed in yet"
        )
        unauthenticated.add_metric([], connections.unauthenticated)
        evicted = CounterMetricFamily(
            "logq_connections_evicted",
            "Connections not signed in, closed to make room for a newcomer",
        )
        evicted.add_metric([], connections.evicted)
        timed_out = CounterMetricFamily(
            "logq_connections_timed_out",
            "Connections closed for taking too long (handshake, idle, http_header, http_body)",
            labels=["reason"],
        )
        for reason, count in sorted(connections.timed_out.items()):
            timed_out.add_metric([reason], count)
        oversize = CounterMetricFamily(
            "logq_connections_closed_oversize",
            "Connections closed for sending more than limits.handshakeBytes before signing in",
        )
        oversize.add_metric([], connections.oversize)
        failures = CounterMetricFamily(
            "logq_sign_in_failures", "Sign-ins refused for credentials that are not valid"
        )
        failures.add_metric([], throttle.failures)
        throttled = CounterMetricFamily(
            "logq_sign_in_throttled",
            "Sign-ins refused unchecked, while the user or address must wait after failures",
        )
        throttled.add_metric([], throttle.throttled)
        return [unauthenticated, evicted, timed_out, oversize, failures, throttled]
