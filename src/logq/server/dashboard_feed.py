"""What the dashboard's event stream carries, bounded whatever the topic count.

Once an interval, shared by every open stream, the feed takes a `Sample`:
each topic's row with its in and out rate (the change of its counters since
the previous sample, over the time between them), the broker's totals, the
busiest topics and the groups with the most lag. Each stream then cuts its
own view of the topic table out of the sample (the name filter, sort and
page it asked for in its query string). So a frame holds at most
`TOPIC_ROWS_MAX` rows, `BUSIEST_TOPICS` rates and `GROUPS_SHOWN` groups:
its size does not grow with the topic count (`SNAPSHOT_BYTES_MAX`).

Plain code over the broker's descriptions: no I/O, and the time comes in
as an argument, so tests drive it with any clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from logq.broker import Broker
from logq.broker.settings import TOPIC_NAME_LENGTH_MAX
from logq.errors import BadArgumentError

# Charts side by side that an eye still compares at a glance; one chart per
# topic was a wall of tiny charts at 40 topics and unusable at 1,000.
BUSIEST_TOPICS = 6
# The busiest are ranked by their throughput smoothed over about this long,
# so the charts do not trade places with every second's noise.
BUSIEST_WINDOW_S = 10.0
# The consumer lag table: the groups furthest behind, the count of the rest.
GROUPS_SHOWN = 20
# Topic table rows per frame: a screen's worth by default, and the most a
# page may ask for (a frame is sent every second to every dashboard).
TOPIC_ROWS_DEFAULT = 50
TOPIC_ROWS_MAX = 100
# Past any real topic count; bounds what a query string may ask.
TOPIC_OFFSET_MAX = 1_000_000
# Every frame is under this, whatever the topic count: at most
# TOPIC_ROWS_MAX rows of 200-character names (about 560 bytes each), the
# busiest topics, GROUPS_SHOWN groups of 200-character topic and group names
# (about 600 bytes each), the lanes and the connection counts; asserted when
# a frame is made.
SNAPSHOT_BYTES_MAX = 96 * 1024

# the topic table's columns, each a key of a row and a sort order
SORT_KEYS = (
    "name",
    "partitions",
    "messages",
    "bytes",
    "pending",
    "in_flight",
    "acked",
    "failed",
    "dead_lettered",
    "in_per_s",
    "out_per_s",
)
ORDERS = ("asc", "desc")
VIEW_PARAMETERS = ("filter", "sort", "order", "offset", "limit")
_COUNTED = ("messages", "bytes", "pending", "in_flight", "acked", "failed", "dead_lettered")


@dataclass(frozen=True, slots=True)
class TopicView:
    """The part of the topic table one stream shows: topics whose name
    holds `filter` (any case), sorted by `sort` in `order` (ties by name),
    `limit` rows from `offset`."""

    filter: str = ""
    sort: str = "name"
    order: str = "asc"
    offset: int = 0
    limit: int = TOPIC_ROWS_DEFAULT


def parse_view(query: Mapping[str, str]) -> TopicView:
    """The view a stream's query string asks for; anything out of bounds is
    refused with BADARG, naming the value and what is allowed."""
    text = query.get("filter", "")
    if len(text) > TOPIC_NAME_LENGTH_MAX:
        raise BadArgumentError(
            f"filter is {len(text)} characters, the limit is {TOPIC_NAME_LENGTH_MAX}"
        )
    sort = query.get("sort", "name")
    if sort not in SORT_KEYS:
        raise BadArgumentError(f"sort must be one of {', '.join(SORT_KEYS)}, got {sort[:40]!r}")
    order = query.get("order", "asc")
    if order not in ORDERS:
        raise BadArgumentError(f"order must be asc or desc, got {order[:40]!r}")
    offset = _bounded_int(query, "offset", 0, 0, TOPIC_OFFSET_MAX)
    limit = _bounded_int(query, "limit", TOPIC_ROWS_DEFAULT, 1, TOPIC_ROWS_MAX)
    return TopicView(text, sort, order, offset, limit)


def _bounded_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit() and len(value) <= 10) or not (
        low <= int(value) <= high
    ):
        raise BadArgumentError(f"{name} must be an integer {low}..{high}, got {value[:40]!r}")
    return int(value)


class TopicRates:
    """Each topic's messages in and out per second between two samples, and
    a score (that rate smoothed over BUSIEST_WINDOW_S) to rank the busiest."""

    def __init__(self) -> None:
        self._counters: dict[str, tuple[int, int]] = {}
        self._scores: dict[str, float] = {}
        self._rates: dict[str, tuple[float, float]] = {}
        self._at_s: float | None = None

    def update(
        self, counters: Mapping[str, tuple[int, int]], now_s: float
    ) -> dict[str, tuple[float, float]]:
        """Rates since the last update from the topics' (in, out) counters;
        all zero on the first. A topic new since then counts from zero,
        and a deleted one is forgotten."""
        if self._at_s is not None and now_s <= self._at_s:
            return self._rates  # no time between the two: nothing new measured
        elapsed_s = None if self._at_s is None else now_s - self._at_s
        decay = 0.0 if elapsed_s is None else math.exp(-elapsed_s / BUSIEST_WINDOW_S)
        rates: dict[str, tuple[float, float]] = {}
        scores: dict[str, float] = {}
        for name, (count_in, count_out) in counters.items():
            if elapsed_s is None:
                rate_in = rate_out = 0.0
            else:
                before_in, before_out = self._counters.get(name, (0, 0))
                rate_in = max(count_in - before_in, 0) / elapsed_s
                rate_out = max(count_out - before_out, 0) / elapsed_s
            rates[name] = (rate_in, rate_out)
            score = self._scores.get(name, 0.0)
            scores[name] = score * decay + (rate_in + rate_out) * (1 - decay)
        self._counters = dict(counters)
        self._scores = scores  # a deleted topic's goes with it
        self._rates = rates
        self._at_s = now_s
        return rates

    def busiest(self, count: int) -> list[str]:
        """The `count` topics with the most smoothed throughput (ties by name)."""
        ranked = sorted(self._scores.items(), key=lambda item: (-item[1], item[0]))
        return [name for name, _ in ranked[:count]]


@dataclass(frozen=True, slots=True)
class Sample:
    """What every stream's frame of one interval shares."""

    at_ms: int
    node: str
    lanes: list[str]
    rows: list[dict[str, Any]]  # one per topic, by name
    totals: dict[str, Any]
    busiest: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    connections: dict[str, Any]
    _sorted: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    def snapshot(self, view: TopicView) -> dict[str, Any]:
        """The frame's object for a stream showing `view` of the topic table."""
        rows = self._ordered(view.sort, view.order)
        if view.filter:
            needle = view.filter.lower()
            rows = [row for row in rows if needle in row["name"].lower()]
        return {
            "at_ms": self.at_ms,
            "node": self.node,
            "lanes": self.lanes,
            "totals": self.totals,
            "busiest": self.busiest,
            "topics": {
                "filter": view.filter,
                "sort": view.sort,
                "order": view.order,
                "offset": view.offset,
                "limit": view.limit,
                "matching": len(rows),
                "rows": rows[view.offset : view.offset + view.limit],
            },
            "groups": self.groups,
            "connections": self.connections,
        }

    def _ordered(self, sort: str, order: str) -> list[dict[str, Any]]:
        # one sort per order asked for in an interval, whatever the streams
        key = (sort, order)
        ordered = self._sorted.get(key)
        if ordered is None:
            # rows are by name already, and a stable sort keeps ties so
            descending = order == "desc"
            if sort == "name":
                ordered = self.rows[::-1] if descending else list(self.rows)
            else:
                ordered = sorted(self.rows, key=lambda row: row[sort], reverse=descending)
            self._sorted[key] = ordered
        return ordered

    def frame(self, view: TopicView) -> bytes:
        body = b"data: " + msgspec.json.encode(self.snapshot(view)) + b"\n\n"
        assert len(body) <= SNAPSHOT_BYTES_MAX, f"a {len(body)}-byte dashboard frame"
        return body


def take_sample(
    broker: Broker, rates: TopicRates, connections: dict[str, Any], now_s: float
) -> Sample:
    """The broker's topics, totals, busiest topics and most lagging groups, now."""
    counters = broker.metrics.topics()
    counted = broker.topic_counts()
    rate_of = rates.update(
        {
            topic["name"]: (
                counters.get(topic["name"], {}).get("messages_in", 0),
                counters.get(topic["name"], {}).get("messages_out", 0),
            )
            for topic in counted
        },
        now_s,
    )
    rows = []
    for topic in counted:
        rate_in, rate_out = rate_of[topic["name"]]
        rows.append(topic | {"in_per_s": round(rate_in, 2), "out_per_s": round(rate_out, 2)})
    groups = broker.group_counts()
    by_name = {row["name"]: row for row in rows}
    busiest = [
        {key: by_name[name][key] for key in ("name", "in_per_s", "out_per_s")}
        for name in rates.busiest(BUSIEST_TOPICS)
    ]
    totals: dict[str, Any] = {"topics": len(rows), "groups": len(groups)}
    for key in (*_COUNTED, "in_per_s", "out_per_s"):
        totals[key] = sum(row[key] for row in rows)
    totals["in_per_s"] = round(totals["in_per_s"], 2)
    totals["out_per_s"] = round(totals["out_per_s"], 2)
    return Sample(
        at_ms=int(time.time() * 1000),
        node=broker.config.node_id,
        lanes=list(broker.lanes.order),
        rows=rows,
        totals=totals,
        busiest=sorted(busiest, key=lambda topic: topic["name"]),
        # the furthest behind first, ties in the broker's order
        groups=sorted(groups, key=lambda group: -group["lag"])[:GROUPS_SHOWN],
        connections=connections,
    )


class EventFeed:
    """What the open event streams share: one sample per interval, however
    many dashboards watch; the rates between samples; and how many streams
    are open (bounded)."""

    def __init__(self) -> None:
        self.streams = 0
        self.held: dict[str, int] = {}  # streams open per user (or address)
        self.rates = TopicRates()
        self._sample: Sample | None = None
        self._made_at = float("-inf")

    def opened(self, holder: str) -> None:
        self.streams += 1
        self.held[holder] = self.held.get(holder, 0) + 1

    def closed(self, holder: str) -> None:
        self.streams -= 1
        left = self.held[holder] - 1
        if left:
            self.held[holder] = left
        else:
            del self.held[holder]

    def sample(self, make: Callable[[TopicRates, float], Sample], max_age_s: float) -> Sample:
        now = time.monotonic()
        if self._sample is None or now - self._made_at >= max_age_s:
            self._sample = make(self.rates, now)
            self._made_at = now
        return self._sample
