"""The dashboard with 1,000 topics of 6 partitions: the event stream's frame
stays under its bound, the overview charts the broker and the busiest topics
only, and its topic table filters, sorts and pages (timeouts here are
generous waits, never speed assertions)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import msgspec
import pytest
from playwright.sync_api import Page, expect

from logq.client import Client
from logq.server.dashboard_feed import BUSIEST_TOPICS, SNAPSHOT_BYTES_MAX, TOPIC_ROWS_MAX
from tests.harness import Running, server_process, stop_process

TOPICS = 1000
PARTITIONS = 6
NAMES = [f"t{i:04d}" for i in range(TOPICS)]
CREATORS = 16  # requests at once: the broker's metadata writes are shared by them
SETTLE_MS = 60_000  # a generous wait for the first frame on a busy machine
ANSWER_MS = 20_000  # a generous wait for the table to follow a filter, sort or page
STOP_S = 120  # closing 6,000 partition logs on a busy machine


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One server with 1,000 topics for the module (making them takes a while)."""
    with server_process(Path(tmp_path_factory.mktemp("many")) / "data") as running:
        with httpx.Client(base_url=running.http, timeout=60) as http:

            def create(name: str) -> None:
                answer = http.post("/v1/topics", json={"name": name, "partitions": PARTITIONS})
                assert answer.status_code == 201, answer.text

            with ThreadPoolExecutor(CREATORS) as pool:
                list(pool.map(create, NAMES))
        yield running
        stop_process(running, timeout_s=STOP_S)


def first_frame(running: Running, query: str = "") -> bytes:
    """The first event of a stream, as the server sent it."""
    url = f"{running.http}/v1/events{query}"
    with httpx.Client(timeout=60) as http, http.stream("GET", url) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                return line.encode()
    raise AssertionError("the stream ended before its first event")


def test_the_event_frame_stays_bounded_at_1000_topics(broker: Running) -> None:
    frame = first_frame(broker)
    assert len(frame) <= SNAPSHOT_BYTES_MAX, f"{len(frame)} bytes"
    snapshot = msgspec.json.decode(frame.removeprefix(b"data: "))
    assert snapshot["totals"]["topics"] == TOPICS
    assert snapshot["topics"]["matching"] == TOPICS
    assert [row["name"] for row in snapshot["topics"]["rows"]] == NAMES[:50]
    assert len(snapshot["busiest"]) == BUSIEST_TOPICS
    # the largest page there is, sorted and filtered
    frame = first_frame(broker, f"?limit={TOPIC_ROWS_MAX}&sort=partitions&order=desc&filter=T0")
    assert len(frame) <= SNAPSHOT_BYTES_MAX, f"{len(frame)} bytes"
    table = msgspec.json.decode(frame.removeprefix(b"data: "))["topics"]
    assert table["matching"] == TOPICS and len(table["rows"]) == TOPIC_ROWS_MAX


def test_the_overview_of_1000_topics(page: Page, broker: Running) -> None:
    page.set_default_timeout(SETTLE_MS)
    page.goto(f"{broker.http}/")
    topics = page.get_by_role("table", name="Topics")
    rows = topics.locator("tbody tr[data-topic]")
    count = page.locator("#topic-count")
    expect(count).to_have_text("1\N{EN DASH}50 of 1,000 topics", timeout=SETTLE_MS)
    expect(rows).to_have_count(50)
    expect(page.locator("[data-stat=topics]")).to_have_text("1,000")
    # one broker-wide chart, and charts for the busiest topics only
    expect(page.get_by_role("img", name=re.compile(r"^All topics: "))).to_have_count(1)
    charts = page.locator("[data-chart]")
    expect(charts).to_have_count(BUSIEST_TOPICS)
    with Client(broker.native) as client:
        client.publish_many("t0500", [b"x"] * 300)
        client.publish_many("t0777", [b"x"] * 100)
    for name in ("t0500", "t0777"):
        expect(page.locator(f"[data-chart={name}] figcaption")).to_contain_text(
            re.compile(r"peak [1-9]"), timeout=ANSWER_MS
        )
    expect(charts).to_have_count(BUSIEST_TOPICS)
    # a filter narrows the table
    search = page.get_by_role("searchbox", name="Filter topics by name")
    search.fill("t07")
    expect(count).to_have_text(
        "1\N{EN DASH}50 of 100 topics whose name holds “t07” (1,000 in all)", timeout=ANSWER_MS
    )
    search.fill("t0777")
    expect(rows).to_have_count(1, timeout=ANSWER_MS)
    expect(rows.first).to_have_attribute("data-topic", "t0777")
    expect(rows.first.locator("[data-col=messages]")).to_have_text("100")
    search.fill("")
    expect(count).to_have_text("1\N{EN DASH}50 of 1,000 topics", timeout=ANSWER_MS)
    # sorting by a column: most first, then least first; aria-sort says which
    header = topics.get_by_role("columnheader", name="messages")
    header.get_by_role("button").click()
    expect(header).to_have_attribute("aria-sort", "descending")
    expect(header).to_have_accessible_name("messages")  # the arrow is not read out
    expect(rows.nth(0)).to_have_attribute("data-topic", "t0500", timeout=ANSWER_MS)
    expect(rows.nth(1)).to_have_attribute("data-topic", "t0777")
    expect(rows.nth(2)).to_have_attribute("data-topic", "t0000")  # ties by name
    expect(topics.locator("th[aria-sort]")).to_have_count(1)
    header.get_by_role("button").click()
    expect(header).to_have_attribute("aria-sort", "ascending")
    expect(rows.nth(0)).to_have_attribute("data-topic", "t0000", timeout=ANSWER_MS)
    expect(rows.nth(49)).to_have_attribute("data-topic", "t0049")
    # the next page, from the sorted order
    page.get_by_role("button", name="Next").click()
    expect(count).to_have_text("51\N{EN DASH}100 of 1,000 topics", timeout=ANSWER_MS)
    expect(rows.nth(0)).to_have_attribute("data-topic", "t0050")
    expect(page.get_by_role("button", name="Previous")).to_be_enabled()
