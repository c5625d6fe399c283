"""Lifecycle figures of one group: how many attempts messages took, how long
from delivery to ack, why messages were redelivered, how long dead letters
waited before a redrive.

Histograms are fixed buckets counted in plain integers, fed per range (one
update for a whole run of messages acked together), exported by the server
as Prometheus histograms.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

ATTEMPT_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100)
MS_BUCKETS = (
    1,
    5,
    10,
    50,
    100,
    500,
    1_000,
    5_000,
    10_000,
    60_000,
    300_000,
    3_600_000,
    86_400_000,
)


@dataclass(slots=True)
class Histogram:
    bounds: tuple[int, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; last: +Inf
    total: float = 0.0
    observations: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.total += value * count
        self.observations += count

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, count at or below it), Prometheus style."""
        result: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result

    def as_dict(self) -> dict[str, Any]:
        return {
            "buckets": dict(self.cumulative()),
            "count": self.observations,
            "sum": self.total,
        }


@dataclass(slots=True)
class Lifecycle:
    attempts: Histogram = field(default_factory=lambda: Histogram(ATTEMPT_BUCKETS))
    ack_ms: Histogram = field(default_factory=lambda: Histogram(MS_BUCKETS))
    dlq_ms: Histogram = field(default_factory=lambda: Histogram(MS_BUCKETS))
    redeliveries: dict[str, int] = field(default_factory=dict)  # reason -> messages

    def acked(self, count: int, attempt: int, since_delivery_ms: int | None) -> None:
        self.attempts.observe(attempt, count)
        if since_delivery_ms is not None:
            self.ack_ms.observe(max(since_delivery_ms, 0), count)

    def redelivery(self, reason: str, count: int) -> None:
        self.redeliveries[reason] = self.redeliveries.get(reason, 0) + count

    def redriven(self, waited_ms: int) -> None:
        self.dlq_ms.observe(max(waited_ms, 0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts.as_dict(),
            "time_to_ack_ms": self.ack_ms.as_dict(),
            "time_in_dlq_ms": self.dlq_ms.as_dict(),
            "redelivery_reasons": dict(self.redeliveries),
        }
