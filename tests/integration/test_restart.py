"""Kill -9 under load: a real `logq serve` child is SIGKILLed while a producer
and a consumer run; after a restart on the same data dir nothing that was
acknowledged is missing or comes back, and what was not acked comes back."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from logq.client import Client
from tests.harness import start_process, stop_process

pytestmark = pytest.mark.slow


def test_sigkill_under_a_producer_and_a_consumer(tmp_path: Path) -> None:
    server = start_process(tmp_path)
    published: set[bytes] = set()
    acked: set[bytes] = set()
    enough = threading.Event()
    stop = threading.Event()
    try:
        with Client(server.native) as admin:
            admin.create_topic("orders", partitions=3)
            admin.put_group("orders", "g", mode="shared", visibility_timeout="1s")

        def produce() -> None:
            with Client(server.native, retries=1) as client:
                batch = 0
                while not stop.is_set():
                    values = [f"m-{batch}-{i}".encode() for i in range(50)]
                    try:
                        client.publish_many("orders", values)
                    except Exception:
                        return
                    published.update(values)
                    batch += 1

        def consume() -> None:
            with Client(server.native, retries=1) as client:
                try:
                    with client.consume("orders", "g", prefetch=100) as consumer:
                        while not stop.is_set():
                            message = consumer.next(2)
                            if message is None:
                                continue
                            message.ack().result(10)
                            assert message.value is not None
                            acked.add(message.value)
                            if len(acked) >= 500 and len(published) >= 2000:
                                enough.set()
                except Exception:
                    return

        threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
        for thread in threads:
            thread.start()
        assert enough.wait(60), f"no progress: published {len(published)}, acked {len(acked)}"
        stop_process(server, kill=True)
        stop.set()
        for thread in threads:
            thread.join(60)
        acknowledged, acked_before = set(published), set(acked)
    finally:
        stop.set()
        if server.process is not None and server.process.poll() is None:
            server.process.kill()

    restarted = start_process(tmp_path)
    try:
        with Client(restarted.native) as client:
            stored: set[bytes] = set()
            for partition in range(3):
                offset = 0
                while True:
                    page = client.peek("orders", partition=partition, offset=offset, limit=1000)
                    if not page:
                        break
                    stored.update(m.value or b"" for m in page)
                    offset = page[-1].offset + 1
            assert acknowledged <= stored, (
                f"{len(acknowledged - stored)} acknowledged publishes lost"
            )

            redelivered: set[bytes] = set()
            with client.consume("orders", "g", prefetch=500) as consumer:
                while (message := consumer.next(3)) is not None:
                    assert message.value is not None
                    redelivered.add(message.value)
                    message.ack()
            assert not redelivered & acked_before, "an acked message came back"
            assert stored - acked_before <= redelivered, "an unacked message did not come back"
    finally:
        assert stop_process(restarted) == 0


def test_delays_and_backoff_waits_survive_sigkill(tmp_path: Path) -> None:
    server = start_process(tmp_path)
    with Client(server.native) as client:
        client.create_topic("later", partitions=1, backoff={"initial": "1500ms"})
        started = time.time()
        client.publish("later", b"delayed", delay="1500ms")
        client.publish("later", b"retried")
        (retried,) = client.receive("later", "g", max=10)  # the delayed one is held back
        assert retried.value == b"retried"
        retried.nack()  # waits its 1.5 s backoff
        assert client.receive("later", "g", max=10) == []
    stop_process(server, kill=True)
    restarted = start_process(tmp_path)
    try:
        with Client(restarted.native) as client:
            got: list[bytes] = []
            while len(got) < 2:
                batch = client.receive("later", "g", max=10, wait="10s")
                assert batch, f"only {got} came back"
                assert time.time() >= started + 1.5 - 0.01, "delivered before its time"
                got += [m.value or b"" for m in batch]
                for message in batch:
                    message.ack().result(5)
            assert sorted(got) == [b"delayed", b"retried"]
            assert client.receive("later", "g", max=10, wait="300ms") == []  # once each
    finally:
        assert stop_process(restarted) == 0


def test_the_dedup_window_survives_sigkill(tmp_path: Path) -> None:
    server = start_process(tmp_path)
    with Client(server.native) as client:
        client.create_topic("pay", partitions=3, dedup_window="10m")
        first = client.publish("pay", b"charge", dedup_id="invoice-9")
    stop_process(server, kill=True)
    restarted = start_process(tmp_path)
    try:
        with Client(restarted.native) as client:
            again = client.publish("pay", b"charge", dedup_id="invoice-9", partition=2)
            assert again.id == first.id
            assert client.describe_topic("pay")["messages"] == 1
    finally:
        assert stop_process(restarted) == 0


def test_rest_publishes_with_dedup_ids_right_after_a_sigkill(tmp_path: Path) -> None:
    """Three concurrent REST requests of 20 messages of one key, each with its
    own dedup id, right after kill -9 and a restart: each is stored in request
    order (they came out shuffled), and a resend of one stores nothing."""
    server = start_process(tmp_path)
    with httpx.Client(base_url=server.http, timeout=60) as http:
        http.post(
            "/v1/topics", json={"name": "t", "partitions": 1, "dedup_window": "30m"}
        ).raise_for_status()
        for r in range(30):
            body = {
                "messages": [
                    {"key": "a", "value": f"old-{r}-{n}", "dedup_id": f"old-{r}-{n}"}
                    for n in range(100)
                ]
            }
            http.post("/v1/topics/t/messages", json=body).raise_for_status()
    stop_process(server, kill=True)
    restarted = start_process(tmp_path)
    try:
        requests = [
            {
                "messages": [
                    {"key": "a", "value": f"{r}-{n}", "dedup_id": f"new-{r}-{n}"} for n in range(20)
                ]
            }
            for r in range(3)
        ]
        answers: list[list[dict[str, Any]]] = [[] for _ in requests]

        def send(index: int) -> None:
            with httpx.Client(base_url=restarted.http, timeout=60) as http:
                response = http.post("/v1/topics/t/messages", json=requests[index])
                response.raise_for_status()
                answers[index] = response.json()["results"]

        threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for answer in answers:
            offsets = [result["offset"] for result in answer]
            assert len(offsets) == 20
            assert offsets == sorted(offsets), offsets
        with httpx.Client(base_url=restarted.http, timeout=60) as http:
            resent = http.post("/v1/topics/t/messages", json=requests[1]).json()["results"]
            assert resent == answers[1]
            assert http.get("/v1/topics/t").json()["messages"] == 3000 + 60
    finally:
        assert stop_process(restarted) == 0
