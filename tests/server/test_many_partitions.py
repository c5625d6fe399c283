"""Monitoring a broker of many partitions: /metrics with `metrics.aggregate`
sums the per-topic and per-group families (their labels dropped), so its
size does not grow with the topic count; /v1/stats pages and filters its
queues as /v1/topics does, and answers as before without paging."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from prometheus_client.metrics_core import Metric

from logq.broker import Broker, BrokerConfig, OutgoingMessage
from logq.server.connections import ConnectionCounter
from logq.server.http_app import create_app
from logq.server.http_routes_topics import TOPICS_PAGE_MAX
from logq.server.storage_metrics import StorageCollector, StorageFigures

PARTITIONS = 6
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def served(topic_count: int, *, aggregate: bool) -> AsyncIterator[httpx.AsyncClient]:
    """An in-memory broker of `topic_count` topics, each with a message and a
    group that took it, behind the HTTP app."""
    broker = await Broker.open(BrokerConfig())
    try:
        for n in range(topic_count):
            name = f"topic-{n:05d}"
            await broker.create_topic(name, {"partitions": PARTITIONS})
            await broker.publish(name, [OutgoingMessage(b"x"), OutgoingMessage(b"yy")])
            await broker.receive(name, "g", "c", max_messages=1)
        app = create_app(broker, ConnectionCounter(), metrics_aggregate=aggregate)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client
    finally:
        await broker.close()


def series(text: str, name: str) -> dict[str, float]:
    """The samples of `name`: their labels, as written, to value."""
    found = re.findall(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)
    return {labels: float(value) for labels, value in found}


async def test_aggregated_metrics_drop_the_topic_and_group_labels_and_sum() -> None:
    sizes = []
    for count in (20, 200):
        async with served(count, aggregate=True) as client:
            text = (await client.get("/metrics")).text
        assert 'topic="' not in text and 'group="' not in text
        assert series(text, "logq_messages_in_total") == {"": 2.0 * count}
        assert series(text, "logq_stored_messages") == {"": 2.0 * count}
        assert series(text, "logq_pending_messages") == {"": 2.0 * count}
        assert series(text, "logq_in_flight_messages") == {"": 1.0 * count}
        assert series(text, "logq_delivered_total") == {"": 1.0 * count}
        # a histogram keeps its buckets, each summed
        buckets = series(text, "logq_delivery_attempts_bucket")
        assert len(buckets) > 1 and all(labels.startswith('{le="') for labels in buckets)
        assert series(text, "logq_time_to_ack_seconds_count") == {"": 0.0}
        # what has no topic label is as it was
        assert series(text, "logq_partitions") == {"": float(count * PARTITIONS)}
        sizes.append(len(text))
    # ten times the partitions, the same series: only digits differ
    assert abs(sizes[1] - sizes[0]) < 200, sizes


async def test_unaggregated_metrics_are_per_topic_and_group() -> None:
    async with served(20, aggregate=False) as client:
        text = (await client.get("/metrics")).text
    assert len(series(text, "logq_messages_in_total")) == 20
    assert series(text, "logq_pending_messages")['{group="g",topic="topic-00003"}'] == 2.0


async def test_stats_pages_and_filters_like_the_topic_list() -> None:
    async with served(30, aggregate=False) as client:
        whole = (await client.get("/v1/stats")).json()
        assert len(whole["queues"]) == 30 * PARTITIONS
        assert "matching" not in whole and "next_offset" not in whole
        assert whole["topics"] == 30
        page = (await client.get("/v1/stats", params={"offset": 10, "limit": 5})).json()
        assert page["matching"] == 30 and page["next_offset"] == 15
        names = sorted({key.rpartition("-")[0] for key in page["queues"]})
        assert names == [f"topic-{n:05d}" for n in range(10, 15)]
        assert all(page["queues"][key] == whole["queues"][key] for key in page["queues"])
        assert page["topics"] == 30 and "active_connections" in page
        last = (await client.get("/v1/stats", params={"filter": "TOPIC-0002"})).json()
        assert last["matching"] == 10 and last["next_offset"] is None
        assert len(last["queues"]) == 10 * PARTITIONS
        # the topic list pages the same names
        listed = (await client.get("/v1/topics", params={"offset": 10, "limit": 5})).json()
        assert [t["name"] for t in listed["topics"]] == names
        for query in (
            {"limit": str(TOPICS_PAGE_MAX + 1)},
            {"limit": "0"},
            {"offset": "-1"},
            {"filter": "x" * 256},
        ):
            response = await client.get("/v1/stats", params=query)
            assert response.status_code == 400, query
            assert response.json()["error"]["code"] == "BADARG"


async def test_a_scrape_sums_and_formats_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What grows with the partitions (the per-topic families, summing,
    the text) is built on a thread: the loop only reads the broker."""
    built_on: list[bool] = []
    build = StorageCollector.build

    def watched(figures: StorageFigures) -> list[Metric]:
        try:
            asyncio.get_running_loop()
            built_on.append(True)
        except RuntimeError:
            built_on.append(False)
        return build(figures)

    monkeypatch.setattr(StorageCollector, "build", staticmethod(watched))
    for aggregate in (False, True):
        async with served(5, aggregate=aggregate) as client:
            text = (await client.get("/metrics")).text
        assert "logq_segments" in text
    assert built_on == [False, False], "built on the event loop"
