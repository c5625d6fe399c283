"""Counters the broker keeps per topic; the server exports them (Prometheus,
/v1/stats, the dashboard). Plain integers: no locks, one event loop."""

from __future__ import annotations

from collections import defaultdict

TOPIC_COUNTERS = ("messages_in", "bytes_in", "messages_out", "bytes_out")


class Metrics:
    def __init__(self) -> None:
        self._topics: defaultdict[str, dict[str, int]] = defaultdict(
            lambda: dict.fromkeys(TOPIC_COUNTERS, 0)
        )

    def published(self, topic: str, messages: int, size_bytes: int) -> None:
        counters = self._topics[topic]
        counters["messages_in"] += messages
        counters["bytes_in"] += size_bytes

    def delivered(self, topic: str, messages: int, size_bytes: int) -> None:
        counters = self._topics[topic]
        counters["messages_out"] += messages
        counters["bytes_out"] += size_bytes

    def topic_counters(self, topic: str) -> dict[str, int]:
        found = self._topics.get(topic)
        return dict(found) if found is not None else dict.fromkeys(TOPIC_COUNTERS, 0)

    def forget(self, topic: str) -> None:
        """A deleted topic's counters go with it (its series leave /metrics)."""
        self._topics.pop(topic, None)

    def topics(self) -> dict[str, dict[str, int]]:
        return {name: dict(counters) for name, counters in self._topics.items()}

    def total(self, counter: str) -> int:
        return sum(counters[counter] for counters in self._topics.values())
