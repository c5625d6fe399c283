"""The dashboard in headless Chromium against a real broker: numbers and
charts change by push, without a reload; a message's trace; redrive,
requeue and purge from the DLQ page; no console error anywhere.
(`scripts/screenshots.py` makes the README's pictures of the same pages.)"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Literal

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from logq.client import Client
from tests.harness import Running, start_process, stop_process


def hold(page: Page, url: str) -> list[Route]:
    """Requests to `url`, held unanswered until the test continues them."""
    held: list[Route] = []

    def keep(route: Route) -> None:
        held.append(route)

    page.route(url, keep)
    return held


def one_dead_letter(client: Client, topic: str) -> None:
    """A topic whose one message group `billing` dead-lettered."""
    client.create_topic(topic, partitions=1)
    client.publish(topic, b"x")
    (message,) = client.receive(topic, "billing", max=1, wait="1s")
    message.reject("declined")


def stat(page: Page, name: str) -> str:
    return page.locator(f"[data-stat={name}]").inner_text()


def test_numbers_and_charts_change_without_reload(page: Page, broker: Running) -> None:
    with Client(broker.native) as client:
        client.create_topic("orders", partitions=3)
        page.goto(f"{broker.http}/")
        expect(page.locator("#live")).to_have_text("live")
        expect(page.locator("[data-topic=orders] [data-col=messages]")).to_have_text("0")
        page.evaluate("window.__same_page = true")  # gone if the page reloads
        for _ in range(4):
            client.publish_many("orders", [b'{"item": "book"}'] * 250)
        expect(page.locator("[data-topic=orders] [data-col=messages]")).to_have_text("1,000")
        expect(page.locator("[data-stat=messages]")).to_have_text("1,000")
        # the chart drew the publishes: some point above the baseline
        expect(page.locator("[data-chart=orders] figcaption")).to_contain_text(
            re.compile(r"peak [1-9]")
        )
        for message in client.receive("orders", "billing", max=100, wait="1s"):
            message.ack().result(5)
        expect(page.locator("[data-stat=acked]")).to_have_text("100")
        expect(page.locator("[data-topic=orders] [data-col=pending]")).to_have_text("900")
        assert page.evaluate("window.__same_page") is True


def test_topic_page_and_a_message_trace(page: Page, broker: Running) -> None:
    with Client(broker.native) as client:
        client.create_topic("orders", partitions=2)
        client.publish_many("orders", [f"order {i}".encode() for i in range(10)])
        (message,) = client.receive("orders", "billing", max=1, wait="1s")
        message.ack().result(5)
        page.goto(f"{broker.http}/#/topics/orders")
        expect(page.get_by_role("table", name="Partitions")).to_be_visible()
        expect(page.get_by_role("table", name="Messages").locator("tbody tr")).to_have_count(10)
        expect(page.get_by_role("region", name="Group billing")).to_be_visible()
        page.get_by_label("Partition", exact=True).select_option("0")
        page.get_by_role("button", name="Peek").click()
        first = page.get_by_role("table", name="Messages").locator("tbody tr a").first
        expect(first).to_have_text(re.compile(r"orders:0:\d+"))
        page.goto(f"{broker.http}/#/messages/{message.id}")
        timeline = page.get_by_role("list", name="Lifecycle")
        for event in ("PUBLISHED", "DELIVERED", "ACKED"):
            expect(timeline.locator(f"[data-event='{event}']")).to_have_count(1)
        expect(page.locator("[data-value]")).to_have_text((message.value or b"").decode())


def test_redrive_requeue_and_purge_from_the_dlq_page(page: Page, broker: Running) -> None:
    with Client(broker.native) as client:
        client.create_topic("pay", partitions=1)
        # values as long as real ones: the table must still fit the screen
        payments = [
            f'{{"payment": {i}, "card": "4242 4242 4242 4242", "amount_cents": 129900, '
            f'"currency": "EUR", "customer": "cus_{i:020d}"}}'.encode()
            for i in range(4)
        ]
        client.publish_many("pay", payments)
        for message in client.receive("pay", "billing", max=4, wait="1s"):
            message.reject("card declined by the issuing bank")
        page.goto(f"{broker.http}/#/topics/pay/dlq")
        rows = page.get_by_role("table", name="Dead letters").locator("tbody tr[data-letter]")
        expect(rows).to_have_count(4)
        # on a laptop screen the table fits: the row's Redrive button needs no scrolling
        overflow = page.evaluate(
            "(() => { const box = document.querySelector('.scroll:has(table[aria-label=\"Dead letters\"])');"
            " return box.scrollWidth - box.clientWidth; })()"
        )
        assert overflow <= 0, f"the dead-letter table is {overflow} px too wide for 1280 px"
        # redrive one, from its row, after confirming
        page.get_by_role("button", name="Redrive pay.dlq:0:0").click()
        page.get_by_role("button", name="Confirm").click()
        expect(page.get_by_role("status").filter(has_text="redriven 1")).to_be_visible()
        expect(rows).to_have_count(3)
        (back,) = client.receive("pay", "billing", max=10, wait="1s")
        assert back.value == payments[0] and back.attempt == 1
        back.ack().result(5)
        # requeue the selected one: a new message every group sees
        page.get_by_role("checkbox", name="Select pay.dlq:0:1").check()
        page.get_by_role("button", name="Requeue selected").click()
        page.get_by_role("button", name="Confirm").click()
        expect(page.get_by_role("status").filter(has_text="requeued 1")).to_be_visible()
        expect(rows).to_have_count(2)
        assert [m.value for m in client.peek("pay", offset=4)] == [payments[1]]
        # a cancelled purge changes nothing; a confirmed one empties the DLQ
        page.get_by_role("button", name="Purge all").click()
        page.get_by_role("button", name="Cancel").click()
        expect(rows).to_have_count(2)
        page.get_by_role("button", name="Purge all").click()
        page.get_by_role("button", name="Confirm").click()
        expect(page.get_by_role("status").filter(has_text="purged 2")).to_be_visible()
        expect(rows).to_have_count(0)
        assert client.dlq("pay") == []


def test_a_phone_screen_and_the_dark_scheme(browser: Browser, broker: Running) -> None:
    with Client(broker.native) as client:
        client.create_topic("orders", partitions=1)
        client.publish_many("orders", [b"x"] * 5)
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True
    )
    page = context.new_page()
    try:
        page.goto(f"{broker.http}/")
        expect(page.locator("[data-topic=orders] [data-col=messages]")).to_have_text("5")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px screen"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 20, 25)"  # the dark scheme
    finally:
        context.close()


def test_a_superseded_navigation_does_not_show(page: Page, broker: Running) -> None:
    with Client(broker.native) as client:
        client.create_topic("orders", partitions=1)
        held = hold(page, "**/v1/topics/orders")
        page.goto(f"{broker.http}/")
        expect(page.locator("[data-topic=orders] [data-col=messages]")).to_have_text("0")
        # the topic page is still loading when the overview is asked for
        with page.expect_request("**/v1/topics/orders"):
            page.evaluate("location.hash = '#/topics/orders'")
        page.evaluate("location.hash = '#/'")
        expect(page.locator("h1")).to_have_text("Overview")
        held[0].continue_()
        client.publish_many("orders", [b"x"] * 5)
        # the overview stays, and its numbers still come live
        expect(page.locator("[data-topic=orders] [data-col=messages]")).to_have_text("5")
        expect(page.locator("h1")).to_have_text("Overview")


def test_a_dlq_action_answered_after_leaving_does_not_redraw(page: Page, broker: Running) -> None:
    with Client(broker.native) as client:
        one_dead_letter(client, "pay")
        held = hold(page, "**/dlq/purge")
        page.goto(f"{broker.http}/#/topics/pay/dlq")
        page.get_by_role("button", name="Purge all").click()
        with page.expect_request("**/dlq/purge"):
            page.get_by_role("button", name="Confirm").click()
        page.evaluate("location.hash = '#/'")
        expect(page.locator("[data-topic=pay] [data-col=messages]")).to_have_text("1")
        page.evaluate(
            "window.__titles = [];"
            "new MutationObserver(() => window.__titles.push(document.querySelector('h1')?.textContent))"
            ".observe(document.getElementById('view'), { childList: true, subtree: true })"
        )
        with page.expect_response("**/dlq/purge"):
            held[0].continue_()
        # a snapshot later, a redraw of the DLQ page would have happened
        client.publish("pay", b"y")
        expect(page.locator("[data-topic=pay] [data-col=messages]")).to_have_text("2")
        assert "Dead letters of pay" not in page.evaluate("window.__titles")
        expect(page.locator("h1")).to_have_text("Overview")


def test_live_numbers_return_after_an_error_answer(
    page: Page, broker: Running, expected_errors: list[str]
) -> None:
    expected_errors.append("status of 503")  # Chromium reports the error answer
    refused: list[Route] = []

    def events(route: Route) -> None:
        if refused:
            route.fallback()
        else:
            refused.append(route)
            route.fulfill(status=503, body="busy")

    page.route("**/v1/events", events)
    with Client(broker.native) as client:
        client.create_topic("orders", partitions=1)
        page.goto(f"{broker.http}/")
        expect(page.locator("#live")).to_have_text("disconnected")
        expect(page.locator("#live")).to_have_text("live")
        expect(page.locator("[data-topic=orders] [data-col=messages]")).to_have_text("0")


def test_live_updates_keep_the_keyboard_focus(page: Page, broker: Running) -> None:
    with Client(broker.native) as client:
        client.create_topic("orders", partitions=1)
        page.goto(f"{broker.http}/")
        link = page.locator("[data-topic=orders] td a").first
        link.focus()
        page.evaluate("window.__focused = document.activeElement")
        client.publish_many("orders", [b"x"] * 5)
        expect(page.locator("[data-topic=orders] [data-col=messages]")).to_have_text("5")
        assert page.evaluate("document.activeElement === window.__focused")
        # a new topic redraws the page: the focus stays on the equivalent link
        client.create_topic("audit", partitions=1)
        expect(page.locator("[data-topic=audit]")).to_have_count(1)
        expect(link).to_be_focused()


def contrast(foreground: str, background: str) -> float:
    """WCAG's contrast ratio of two computed colours, 'rgb(r, g, b)'."""

    def luminance(colour: str) -> float:
        channels = [int(part) / 255 for part in re.findall(r"\d+", colour)[:3]]
        r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted([luminance(foreground), luminance(background)], reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_button_text_contrast(
    browser: Browser, broker: Running, scheme: Literal["light", "dark"]
) -> None:
    with Client(broker.native) as client:
        client.create_topic("orders", partitions=1)
    context = browser.new_context(color_scheme=scheme)
    page = context.new_page()
    try:
        page.goto(f"{broker.http}/#/topics/orders")
        for button in (page.locator("button.primary"), page.locator("#confirm-ok")):
            colours = button.evaluate(
                "b => [getComputedStyle(b).color, getComputedStyle(b).backgroundColor]"
            )
            assert contrast(*colours) >= 4.5, f"{scheme}: {colours}"
    finally:
        context.close()


def test_chart_lines_differ_by_more_than_colour(page: Page, broker: Running) -> None:
    with Client(broker.native) as client:
        client.create_topic("orders", partitions=1)
        page.goto(f"{broker.http}/")
        chart = page.locator("[data-chart=orders]")
        dashes = "line => getComputedStyle(line).strokeDasharray"
        assert chart.locator("polyline.in").evaluate(dashes) == "none"
        assert chart.locator("polyline.out").evaluate(dashes) != "none"
        legend = chart.locator(".legend .out").evaluate(
            "s => getComputedStyle(s, '::before').borderTopStyle"
        )
        assert legend == "dashed"


def test_dlq_headers_and_the_confirm_question_are_announced(page: Page, broker: Running) -> None:
    with Client(broker.native) as client:
        one_dead_letter(client, "pay")
        page.goto(f"{broker.http}/#/topics/pay/dlq")
        dead = page.get_by_role("table", name="Dead letters")
        for name in ("Select", "Actions"):
            header = dead.get_by_role("columnheader", name=name, exact=True)
            expect(header).to_have_count(1)
            expect(header.locator(".visually-hidden")).to_have_css("position", "absolute")
        page.get_by_role("button", name="Purge all").click()
        expect(page.get_by_role("dialog")).to_have_accessible_description(
            "Drop every dead letter (1) for good?"
        )
        page.get_by_role("button", name="Cancel").click()


def test_an_archived_topic_shows_its_archived_and_local_ranges(
    browser: Browser, tmp_path: Path
) -> None:
    config = tmp_path / "logq.yaml"
    config.write_text(
        "broker: {segmentBytes: 65536}\n"
        f"archive: {{url: 'file://{tmp_path / 'archive'}', tickMs: 100}}\n"
    )
    running = start_process(tmp_path / "data", "--config", str(config))
    try:
        with Client(running.native) as client:
            client.create_topic(
                "ledger", partitions=1, archive=True, local_retention_bytes=64 * 1024
            )
            with client.producer() as producer:
                for n in range(2000):
                    producer.send("ledger", f"entry {n:05d} ".encode() * 20)
            deadline = time.monotonic() + 60
            while True:
                part = client.archive_status("ledger")["partitions"][0]
                if part["local_from"] > 0 and part["upload_lag_bytes"] == 0:
                    break
                assert time.monotonic() < deadline, part
                time.sleep(0.1)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{running.http}/#/topics/ledger")
        partitions = page.get_by_role("table", name="Partitions")
        expect(partitions.locator("th", has_text="archived")).to_be_visible()
        row = partitions.locator("tbody tr").first
        expect(row.locator("td").nth(7)).to_have_text(re.compile("^0\u2013[\\d,]+$"))
        expect(row.locator("td").nth(8)).to_have_text(f"{part['local_from']:,}")
        expect(page.get_by_text("retention 7d")).to_be_visible()
        context.close()
    finally:
        stop_process(running)
