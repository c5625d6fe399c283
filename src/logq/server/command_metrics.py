"""Latency of native commands, per command name: a histogram the
connection loop feeds (one bisect and two additions per command, never per
message) and Prometheus reads at scrape time as
`logq_native_command_seconds{command}`.

The time runs from the command's turn to its reply, so a FETCH or RECEIVE
that waits for messages counts its wait, as HTTP long polls do. Names are
the protocol's own; anything else is counted as `unknown`, so a client
cannot grow the series."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from logq.broker.lifecycle import Histogram
from logq.server.commands import HANDLERS

# Microseconds: 100 µs to a minute (long polls wait up to one).
BOUNDS_US = (
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    1_000_000,
    5_000_000,
    30_000_000,
    60_000_000,
)
UNKNOWN = "unknown"


class CommandTimes:
    def __init__(self) -> None:
        self._by_name: dict[str, Histogram] = {}

    def observe(self, name: str, elapsed_ns: int) -> None:
        found = self._by_name.get(name)
        if found is None:
            name = name if name in HANDLERS else UNKNOWN
            found = self._by_name.setdefault(name, Histogram(BOUNDS_US))
        found.observe(elapsed_ns // 1000)

    def histograms(self) -> dict[str, Histogram]:
        return dict(self._by_name)


class CommandCollector(Collector):
    def __init__(self, times: CommandTimes) -> None:
        self._times = times

    def describe(self) -> Iterable[Metric]:
        return [_family()]

    def collect(self) -> Iterable[Metric]:
        family = _family()
        for name, histogram in sorted(self._times.histograms().items()):
            buckets = [
                (bound if bound == "+Inf" else repr(int(bound) / 1e6), count)
                for bound, count in histogram.cumulative()
            ]
            family.add_metric([name], buckets, histogram.total / 1e6)
        return [family]


def _family() -> HistogramMetricFamily:
    return HistogramMetricFamily(
        "logq_native_command_seconds",
        "Native protocol command latency, from its turn to its reply, by command",
        labels=["command"],
    )
