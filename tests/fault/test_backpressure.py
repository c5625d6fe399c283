"""Clients that stop reading, and many connections: the broker's memory stays
bounded (backpressure) and everyone else keeps being served.

A real `logq serve` child; its memory is read from /proc (VmRSS)."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logq.client import Client
from logq.protocol.encoder import encode_command
from tests.harness import Running, server_process

MIB = 1 << 20
TOPIC = "big"


def rss_bytes(running: Running) -> int:
    assert running.process is not None
    for line in Path(f"/proc/{running.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def raw(running: Running) -> socket.socket:
    host, port = running.native.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def command(*args: str | int) -> bytes:
    return encode_command(list(args))


@pytest.fixture
def loaded(tmp_path: Path) -> Iterator[Running]:
    """A server holding 200 messages of 100 KB (20 MB) in one partition."""
    with server_process(tmp_path / "data") as running:
        with Client(running.native) as client:
            client.create_topic(TOPIC, partitions=1)
            client.publish_many(TOPIC, [b"x" * 100_000] * 200)
        yield running


def still_serving(running: Running) -> list[float]:
    """Another client's publishes go through; their round trips in ms (printed, not judged)."""
    took: list[float] = []
    with Client(running.native) as client:
        for i in range(20):
            started = time.perf_counter()
            assert client.publish("small", f"m{i}".encode()).offset == i
            took.append((time.perf_counter() - started) * 1000)
        assert len(client.peek("small", limit=100)) == 20
    took.sort()
    print(f"other client: publish p50 {took[10]:.2f} ms, max {took[-1]:.2f} ms")
    return took


def test_a_client_that_stops_reading_holds_no_unbounded_memory(loaded: Running) -> None:
    with Client(loaded.native) as client:
        client.create_topic("small", partitions=1)
    before = rss_bytes(loaded)
    stuck = [raw(loaded) for _ in range(3)]
    # 1: pipelines reads of the whole 20 MB topic, 500 times over (10 GB of replies).
    stuck[0].sendall(command("PEEK", TOPIC, "LIMIT", 200) * 500)
    # 2: a pushed consumer with all the credit it may have.
    stuck[1].sendall(command("HELLO", 3) + command("CONSUME", TOPIC, "g", "c", "CREDIT", 1_000_000))
    # 3: a long-polling receive loop it never reads the answers of.
    stuck[2].sendall(command("FETCH", TOPIC, "h", "c", "COUNT", 200) * 200)
    deadline = time.monotonic() + 5
    peak = before
    while time.monotonic() < deadline:  # the broker works on what it was sent, then waits
        peak = max(peak, rss_bytes(loaded))
        time.sleep(0.1)
    still_serving(loaded)
    peak = max(peak, rss_bytes(loaded))
    print(f"RSS before {before / MIB:.1f} MiB, peak with 3 stuck readers {peak / MIB:.1f} MiB")
    assert peak - before < 200 * MIB  # a few replies in flight per stuck client, not 10 GB
    for sock in stuck:
        sock.close()
    still_serving_after = rss_bytes(loaded)
    assert still_serving_after < before + 200 * MIB


def test_ten_thousand_connections_are_held_and_the_next_one_is_refused(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 11_000:
        pytest.skip(
            f"the open-file hard limit is {hard}; 10,000 connections need 11,000 in each process"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server child inherits it
    try:
        config = tmp_path / "config.yaml"
        # all from one loopback address: the per-address cap goes up with the total
        config.write_text("limits: {connections: 10000, connectionsPerAddress: 10000}\n")
        with server_process(tmp_path / "data", "--config", str(config)) as running:
            before = rss_bytes(running)
            held = []
            try:
                for _ in range(9_990):
                    held.append(raw(running))
                with Client(running.native) as client:  # one of the last ten
                    client.create_topic("small", partitions=1)
                    still_serving(running)
                    extra = [raw(running) for _ in range(20)]
                    answers = []
                    for sock in extra:
                        sock.sendall(command("PING"))
                        answers.append(sock.recv(200))
                    refused = [a for a in answers if a.startswith(b"-LIMIT")]
                    assert refused and b"the limit is 10000" in refused[0]
                    held.extend(extra)
                    peak = rss_bytes(running)
                    print(
                        f"{len(held)} connections open; RSS {before / MIB:.1f} -> "
                        f"{peak / MIB:.1f} MiB ({(peak - before) / 10_000:.0f} bytes each)"
                    )
                    assert peak - before < 10_000 * 64 * 1024  # well under 64 KiB per connection
                    assert client.publish("small", b"still").offset == 20
            finally:
                for sock in held:
                    sock.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
