"""Make the README's dashboard screenshots from a broker under live traffic.

    .venv/bin/python scripts/screenshots.py [docs/screenshots]

Starts `logq serve` on free ports, opens the dashboard in headless Chromium
(Debian's `chromium`), and runs a minute of traffic on three topics: a
steady and a bursty producer, an ordered group and a shared group that
acks, and a payments consumer that rejects some messages to the DLQ. Then
it saves the overview, a topic, a message with its lifecycle, the DLQ page
and the overview on a phone in the dark scheme. `tests/dashboard` checks
the same pages; this only makes pictures worth looking at.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from logq.bench.broker_bench import running_server
from logq.client import Client

SECONDS = 62  # the overview's charts hold a minute


def traffic(native: str, stop: threading.Event, acked: list[str]) -> None:
    """Producers and consumers until `stop`; ids of acked orders go to `acked`."""
    with Client(native) as client:
        tick = 0
        while not stop.is_set():
            tick += 1
            wave = 1 + math.sin(tick / 25)  # a slow swell in the order rate
            orders = [
                f'{{"order_id": {tick * 100 + i}, "sku": "book-{i % 7}", "qty": {1 + i % 3}}}'
                for i in range(int(300 + 500 * wave))
            ]
            client.publish_many("orders", [o.encode() for o in orders])
            if tick % 20 < 4:  # bursts of mail
                client.publish_many("emails", [b'{"to": "ada@example.com"}'] * 1200)
            client.publish_many(
                "payments", [f'{{"payment": {tick * 10 + i}}}'.encode() for i in range(30)]
            )
            for message in client.receive("orders", "billing", max=2000, wait="20ms"):
                message.ack()
                acked[:] = [message.id]
            for index, message in enumerate(
                client.receive("emails", "mailer", max=700, wait="20ms")
            ):
                if index % 97 == 0:
                    message.nack()  # a flaky mail server: tried again
                else:
                    message.ack()
            for index, message in enumerate(client.receive("payments", "ledger", max=30)):
                if index % 9 == 4:
                    message.reject("card declined")
                else:
                    message.ack()
            stop.wait(0.15)


def settle(page: Page) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(1_500)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with running_server(None) as server, sync_playwright() as driver:
        assert server.http is not None
        with Client(server.address) as client:
            client.create_topic("orders", partitions=3)
            client.create_topic("emails", partitions=2)
            client.create_topic("payments", partitions=1)
        browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{server.http}/")
        phone = browser.new_context(
            viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True
        ).new_page()
        phone.goto(f"{server.http}/")
        stop, acked = threading.Event(), [""]
        worker = threading.Thread(target=traffic, args=(server.address, stop, acked))
        worker.start()
        try:
            time.sleep(SECONDS)
            page.screenshot(path=str(out / "overview.png"), full_page=True)
            phone.screenshot(path=str(out / "overview-phone-dark.png"), full_page=True)
        finally:
            stop.set()
            worker.join()
        page.goto(f"{server.http}/#/topics/orders")
        settle(page)
        page.screenshot(path=str(out / "topic.png"), full_page=True)
        page.goto(f"{server.http}/#/messages/{acked[0]}")
        settle(page)
        page.screenshot(path=str(out / "message.png"), full_page=True)
        page.goto(f"{server.http}/#/topics/payments/dlq")
        settle(page)
        page.screenshot(path=str(out / "dlq.png"))
        browser.close()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
