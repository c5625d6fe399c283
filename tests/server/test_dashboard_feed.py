"""The dashboard's event stream: rates between samples, the busiest topics,
the topic table's filter, sort and page, and a frame whose size does not
grow with the topic count. Time is an argument of the feed: no test sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.broker.settings import GROUP_NAME_LENGTH_MAX, TOPIC_NAME_LENGTH_MAX
from logq.errors import BadArgumentError
from logq.server.connections import ConnectionCounter
from logq.server.dashboard_feed import (
    BUSIEST_TOPICS,
    GROUPS_SHOWN,
    SNAPSHOT_BYTES_MAX,
    TOPIC_ROWS_MAX,
    Sample,
    TopicRates,
    TopicView,
    parse_view,
    take_sample,
)
from logq.server.http_app import create_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    opened = await Broker.open(BrokerConfig(), clock=FakeClock())
    try:
        yield opened
    finally:
        await opened.close()


def sample(broker: Broker, rates: TopicRates | None = None, now_s: float = 0.0) -> Sample:
    return take_sample(broker, rates or TopicRates(), {"active_connections": 0}, now_s)


async def topics(broker: Broker, names: list[str]) -> None:
    await asyncio.gather(*(broker.create_topic(name, {"partitions": 1}) for name in names))


async def test_rates_are_the_change_of_the_counters_over_the_time_between() -> None:
    rates = TopicRates()
    assert rates.update({"a": (100, 0)}, 10.0) == {"a": (0.0, 0.0)}  # nothing to compare yet
    assert rates.update({"a": (300, 50), "b": (40, 0)}, 12.0) == {
        "a": (100.0, 25.0),
        "b": (20.0, 0.0),  # new since: counted from zero
    }
    # counters that went back (a topic deleted and made again) count no negative rate
    assert rates.update({"a": (10, 60)}, 13.0) == {"a": (0.0, 10.0)}
    assert rates.busiest(5) == ["a"]  # b is gone
    assert rates.update({"a": (20, 60)}, 13.0) == {"a": (0.0, 10.0)}  # no time passed


async def test_the_busiest_are_ranked_by_smoothed_throughput_ties_by_name() -> None:
    rates = TopicRates()
    names = [f"t{i}" for i in range(10)]
    counts = dict.fromkeys(names, 0)
    rates.update(dict.fromkeys(names, (0, 0)), 0.0)
    assert rates.busiest(3) == ["t0", "t1", "t2"]
    for second in range(1, 30):
        counts["t7"] += 1000  # steady
        counts["t3"] += 500
        if second == 29:
            counts["t5"] += 3000  # one burst: not yet busier than the steady ones
        rates.update({name: (count, 0) for name, count in counts.items()}, float(second))
    # the burst was the most in the last second, but not over the window
    assert rates.busiest(3) == ["t7", "t3", "t5"]


async def test_the_topic_table_filters_sorts_and_pages(broker: Broker) -> None:
    await topics(broker, ["Orders-eu", "orders-us", "audit", "billing", "emails"])
    await broker.publish("billing", [OutgoingMessage(b"x")] * 3)
    await broker.publish("orders-us", [OutgoingMessage(b"x")] * 2)
    taken = sample(broker)

    def names(view: TopicView) -> list[str]:
        return [row["name"] for row in taken.snapshot(view)["topics"]["rows"]]

    assert names(TopicView()) == ["Orders-eu", "audit", "billing", "emails", "orders-us"]
    assert names(TopicView(sort="name", order="desc"))[0] == "orders-us"
    # ties keep the name order, whichever way the column sorts
    assert names(TopicView(sort="messages", order="desc")) == [
        "billing",
        "orders-us",
        "Orders-eu",
        "audit",
        "emails",
    ]
    assert names(TopicView(sort="messages")) == [
        "Orders-eu",
        "audit",
        "emails",
        "orders-us",
        "billing",
    ]
    table = taken.snapshot(TopicView(filter="ORDERS", offset=1, limit=1))["topics"]
    assert (table["matching"], [row["name"] for row in table["rows"]]) == (2, ["orders-us"])
    assert taken.snapshot(TopicView(filter="nothing"))["topics"]["matching"] == 0
    assert taken.snapshot(TopicView(offset=10))["topics"]["rows"] == []


async def test_a_frame_does_not_grow_with_the_topic_count(broker: Broker) -> None:
    # the longest names there may be, and more groups than are shown
    def long(prefix: str, index: int, length: int) -> str:
        return f"{prefix}{index:05d}".ljust(length, "x")

    sizes = []
    for count in (150, 600):
        await topics(broker, [long("t", i, TOPIC_NAME_LENGTH_MAX) for i in range(count)])
        for i in range(GROUPS_SHOWN + 5):
            await broker.put_group(
                long("t", i, TOPIC_NAME_LENGTH_MAX), long("g", i, GROUP_NAME_LENGTH_MAX)
            )
        frame = sample(broker).frame(TopicView(limit=TOPIC_ROWS_MAX))
        snapshot = sample(broker).snapshot(TopicView(limit=TOPIC_ROWS_MAX))
        assert len(snapshot["topics"]["rows"]) == TOPIC_ROWS_MAX
        assert len(snapshot["busiest"]) == BUSIEST_TOPICS
        assert len(snapshot["groups"]) == GROUPS_SHOWN
        assert len(frame) <= SNAPSHOT_BYTES_MAX
        sizes.append(len(frame))
        for name in list(broker.topics):
            await broker.delete_topic(name)
    # only the totals' digits may differ
    assert abs(sizes[1] - sizes[0]) < 50, sizes


async def test_the_most_lagging_groups_come_first(broker: Broker) -> None:
    await topics(broker, ["a", "b", "c"])
    await broker.publish("b", [OutgoingMessage(b"x")] * 5)
    await broker.publish("c", [OutgoingMessage(b"x")] * 2)
    for topic in ("a", "b", "c"):
        await broker.put_group(topic, "workers")
    groups = sample(broker).snapshot(TopicView())["groups"]
    assert [(group["topic"], group["lag"]) for group in groups] == [("b", 5), ("c", 2), ("a", 0)]


def test_a_view_out_of_bounds_is_refused() -> None:
    assert parse_view({}) == TopicView()
    assert parse_view({"sort": "pending", "order": "desc", "offset": "50", "limit": "100"}) == (
        TopicView(sort="pending", order="desc", offset=50, limit=100)
    )
    for query, words in (
        ({"sort": "colour"}, "sort must be one of name,"),
        ({"order": "up"}, "order must be asc or desc"),
        ({"limit": "0"}, "limit must be an integer 1..100"),
        ({"limit": str(TOPIC_ROWS_MAX + 1)}, "limit must be an integer 1..100"),
        ({"offset": "-1"}, "offset must be an integer 0..1000000"),
        ({"offset": "9" * 30}, "offset must be an integer"),
        ({"filter": "x" * (TOPIC_NAME_LENGTH_MAX + 1)}, "filter is 201 characters"),
    ):
        with pytest.raises(BadArgumentError, match=words):
            parse_view(query)


async def test_the_event_route_refuses_a_bad_view(broker: Broker) -> None:
    app = create_app(broker, ConnectionCounter())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://logq.test") as client:
        for query in ("sort=colour", "limit=1000", "offset=x", "page=2"):
            response = await client.get(f"/v1/events?{query}")
            assert response.status_code == 400, query
            assert response.json()["error"]["code"] == "BADARG"
