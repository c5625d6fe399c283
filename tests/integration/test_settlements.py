"""Every settlement a program made reaches the broker before its client closes.

A real server (in this process, or a `logq serve` child where the test
stops or kills it) and the real client: acks made through consumers the
client handed out and never closed, acks and nacks nobody awaited, a
producer left open, an embedded broker closed right after an ack. And when
the broker cannot confirm them, `close()` says which.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import logq
from logq.errors import UnconfirmedError
from tests.harness import Running, server_process, server_thread, stop_process


@pytest.fixture
def server() -> Iterator[Running]:
    with server_thread() as running:
        yield running


def group_of(server: Running, topic: str, group: str) -> dict[str, Any]:
    with logq.Client(server.native) as client:
        return client.describe_group(topic, group)


def test_acks_of_a_sync_consumer_left_open_are_confirmed_by_close(server: Running) -> None:
    with logq.Client(server.native) as client:
        client.create_topic("jobs", partitions=3)
        client.publish_many("jobs", [f"job {n}" for n in range(60)])
        confirmations = [msg.ack() for msg in client.consume("jobs", "workers", limit=60)]
    assert all(done.done() and done.exception() is None for done in confirmations)
    described = group_of(server, "jobs", "workers")
    assert described["counts"]["delivered"] == 60
    assert described["counts"]["acked"] == 60
    assert described["in_flight"] == 0


def test_acks_never_awaited_in_an_async_for_are_confirmed_by_close(server: Running) -> None:
    async def run() -> None:
        async with logq.AsyncClient(server.native) as client:
            await client.create_topic("orders", partitions=2)
            await client.publish_many("orders", [f"order {n}" for n in range(50)])
            async for msg in client.consume("orders", "workers", limit=50):
                msg.ack()

    asyncio.run(run())
    described = group_of(server, "orders", "workers")
    assert described["counts"]["acked"] == 50
    assert described["in_flight"] == 0


def test_a_nack_never_awaited_is_sent(server: Running) -> None:
    async def run() -> None:
        async with logq.AsyncClient(server.native) as client:
            await client.create_topic("t", partitions=1)
            await client.publish("t", b"again")
            (msg,) = await client.receive("t", "g", max=1)
            msg.nack()  # the pattern under test: nobody awaits it

    asyncio.run(run())
    described = group_of(server, "t", "g")
    assert described["counts"]["nacked"] == 1
    assert described["in_flight"] == 0


def test_an_async_producer_flushes_when_its_block_ends(server: Running) -> None:
    async def run() -> int:
        async with logq.AsyncClient(server.native) as client:
            await client.create_topic("t", partitions=1)
            async with client.producer(linger_ms=60_000) as producer:
                futures = [await producer.send("t", f"{n}") for n in range(20)]
            assert all(future.done() for future in futures)
            return len(await client.peek("t", partition=0, offset=0, limit=100))

    assert asyncio.run(run()) == 20


def test_a_producer_left_open_is_flushed_by_the_client_s_close(server: Running) -> None:
    async def run() -> None:
        async with logq.AsyncClient(server.native) as client:
            await client.create_topic("t", partitions=1)
            producer = client.producer(linger_ms=60_000)
            await producer.send("t", b"queued")

    asyncio.run(run())
    with logq.Client(server.native) as client:
        assert [m.value for m in client.peek("t", partition=0, offset=0)] == [b"queued"]


def test_flush_waits_until_the_broker_has_every_ack(server: Running) -> None:
    with logq.Client(server.native) as client, logq.Client(server.native) as observer:
        client.create_topic("t", partitions=2)
        client.publish_many("t", [b"a", b"b", b"c"])
        for msg in client.receive("t", "g", max=3):
            msg.ack()
        client.flush(timeout_s=10)
        assert observer.describe_group("t", "g")["counts"]["acked"] == 3


def test_acks_made_just_before_the_embedded_broker_closes_survive_reopen(
    tmp_path: Path,
) -> None:
    with logq.Broker(tmp_path) as broker:
        client = broker.client()
        client.create_topic("jobs", partitions=2)
        client.publish_many("jobs", [f"job {n}" for n in range(40)])
        confirmations = [msg.ack() for msg in client.receive("jobs", "receivers", max=40)]
        confirmations += [msg.ack() for msg in client.consume("jobs", "consumers", limit=40)]
    assert len(confirmations) == 80
    assert all(done.done() and done.exception() is None for done in confirmations)
    with logq.Broker(tmp_path) as broker:
        client = broker.client()
        for group in ("receivers", "consumers"):
            partitions = client.describe_group("jobs", group)["partitions"]
            assert sum(partition["committed"] for partition in partitions) == 40
            assert sum(partition["in_flight"] for partition in partitions) == 0


def named_offsets(unconfirmed: list[str], where: str) -> set[int]:
    """The offsets of partition 0 that unconfirmed acks of `where` name."""
    found: set[int] = set()
    for item in unconfirmed:
        if f"{where} partition:offsets" not in item:
            continue
        for start, end in re.findall(r"\b0:(\d+)(?:-(\d+))?", item.split("offsets", 1)[1]):
            found.update(range(int(start), int(end or start) + 1))
    return found


def test_close_names_the_acks_the_broker_did_not_answer_in_time(tmp_path: Path) -> None:
    with server_process(tmp_path / "data") as running:
        assert running.process is not None
        client = logq.Client(running.native)
        client.create_topic("t", partitions=1)
        client.publish_many("t", [b"a", b"b", b"c"])
        received = client.receive("t", "g", max=3)
        assert len(received) == 3
        os.kill(running.process.pid, signal.SIGSTOP)  # the broker hears nothing now
        try:
            for msg in received:
                msg.ack()
            with pytest.raises(UnconfirmedError) as raised:
                client.close(timeout_s=0.5)
        finally:
            os.kill(running.process.pid, signal.SIGCONT)
        assert raised.value.code == "UNCONFIRMED"
        # all three named, however the loop thread grouped them into ACKRs
        assert named_offsets(raised.value.unconfirmed, "t/g") == {0, 1, 2}, raised.value.unconfirmed
        client.close()  # closed already: nothing more to do


def test_close_names_the_acks_that_could_not_be_sent(tmp_path: Path) -> None:
    with server_process(tmp_path / "data") as running:
        client = logq.Client(running.native, retries=1)
        client.create_topic("t", partitions=1)
        client.publish("t", b"a")
        (msg,) = client.receive("t", "g", max=1)
        stop_process(running, kill=True)
        msg.ack()
        with pytest.raises(UnconfirmedError) as raised:
            client.close()
        (item,) = raised.value.unconfirmed
        assert item.startswith("ack of t/g partition:offsets 0:0 (")


UNCLOSED = """
import sys
import logq

client = logq.Client(sys.argv[1])
client.create_topic("jobs", partitions=2)
client.publish_many("jobs", [f"job {n}" for n in range(30)])
for msg in client.consume("jobs", "workers", limit=30):
    msg.ack()
"""


def test_a_client_never_closed_sends_its_acks_when_the_interpreter_exits(
    server: Running,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", UNCLOSED, server.native],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    described = group_of(server, "jobs", "workers")
    assert described["counts"]["acked"] == 30
    assert described["in_flight"] == 0
