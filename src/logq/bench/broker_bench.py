"""`logq bench produce|consume|shared`: the broker through its native protocol.

Each scenario runs the real `AsyncClient` against a `logq serve` (started
here as a child process on free ports with `fsync: always`, in a temporary
data dir, unless a server address is given) and reports messages per second
for 100-byte messages in batches of 1000.

- produce: `publishers` tasks, each with its own idempotent producer, send
  one batch per partition per request (what a batching producer does under
  load); the figure counts messages acknowledged durable.
- consume: the topic is filled first (not timed), then one consumer of an
  ordered group takes every message by pushed deliveries in the plain
  `async for message in consumer: message.ack()` loop a user writes; with
  `sync`, the blocking `Client`'s `for message in client.consume(...)` loop
  instead (on a thread of its own, as a script runs it).
- shared: the same through a shared group: `consumers` competing workers
  (tasks of this one client) pull with `receive` and ack each message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from logq.client import AsyncClient, Client

READY = re.compile(rb"native (\S+):(\d+) http (\S+) ")
STALL_S = 30.0  # no message for this long: the scenario has stalled


@dataclass(frozen=True, slots=True)
class BrokerBenchSettings:
    messages: int = 1_000_000
    message_bytes: int = 100
    batch: int = 1000
    partitions: int = 6
    publishers: int = 8
    consumers: int = 8
    server: str | None = None
    trace: bool = True  # the topic records message lifecycles
    sync: bool = False  # consume: through the blocking Client


@dataclass(frozen=True, slots=True)
class BrokerBenchResult:
    scenario: str
    messages: int
    message_bytes: int
    batch: int
    partitions: int
    seconds: float
    msgs_per_s: float
    mb_per_s: float
    server: str
    trace: bool = True
    sync: bool = False

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BenchServer:
    address: str
    pid: int | None  # None: a server the bench did not start
    http: str | None = None  # the REST base URL, when the bench started the server


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a local process (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextmanager
def running_server(server: str | None, *extra: str) -> Iterator[BenchServer]:
    """The given server, or a `logq serve` child on free ports with `extra`
    arguments (stopped after)."""
    if server is not None:
        yield BenchServer(server, None)
        return
    directory = tempfile.mkdtemp(prefix="logq-bench-")
    command = [
        sys.executable,
        "-m",
        "logq",
        "serve",
        "--data-dir",
        directory,
        "--port",
        "0",
        "--http-port",
        "0",
        *extra,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ)
    )
    try:
        assert process.stdout is not None
        address = http = None
        for line in process.stdout:
            match = READY.search(line)
            if match:
                address = f"{match.group(1).decode()}:{int(match.group(2))}"
                http = match.group(3).decode()
                break
        if address is None:
            raise RuntimeError("logq serve did not start")
        yield BenchServer(address, process.pid, http)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(directory, ignore_errors=True)


def _value(size: int) -> bytes:
    return (b"x" * size)[:size]


async def _fill(client: AsyncClient, topic: str, settings: BrokerBenchSettings) -> float:
    """Publish `messages` to `topic`; returns the seconds it took."""
    value = _value(settings.message_bytes)
    per_publisher = -(
        -settings.messages // (settings.publishers * settings.batch * settings.partitions)
    )
    remaining = [settings.messages]

    async def publisher() -> None:
        producer = client.producer(linger_ms=0)
        for _ in range(per_publisher):
            futures = []
            for partition in range(settings.partitions):
                count = min(settings.batch, remaining[0])
                if count <= 0:
                    break
                remaining[0] -= count
                futures.append(await producer.send_batch(topic, partition, [value] * count))
            if not futures:
                break
            await asyncio.gather(*futures)

    started = time.perf_counter()
    await asyncio.gather(*(publisher() for _ in range(settings.publishers)))
    return time.perf_counter() - started


async def _produce(client: AsyncClient, topic: str, settings: BrokerBenchSettings) -> float:
    return await _fill(client, topic, settings)


async def _consume(client: AsyncClient, topic: str, settings: BrokerBenchSettings) -> float:
    await _fill(client, topic, settings)
    await client.put_group(topic, "bench", mode="ordered")
    if settings.sync:
        return await _watch_blocking(f"{client.host}:{client.port}", topic, settings)
    started = time.perf_counter()
    seen = 0

    async def take_all() -> None:
        nonlocal seen
        async with client.consume(topic, "bench", prefetch=10 * settings.batch) as consumer:
            async for message in consumer:
                message.ack()
                seen += 1
                if seen == settings.messages:
                    break
            await consumer.settler.flush()

    taking = asyncio.ensure_future(take_all())
    last = -1
    while not taking.done():  # a watch beside the loop, which has no time limit of its own
        await asyncio.wait({taking}, timeout=STALL_S)
        if not taking.done() and seen == last:
            taking.cancel()
            raise RuntimeError(f"consume stalled after {seen} messages")
        last = seen
    taking.result()
    return time.perf_counter() - started


class _BlockingRun:
    """What the blocking loop shares with the watch beside it."""

    def __init__(self, server: str) -> None:
        self.client = Client(server)
        self.seen = 0


async def _watch_blocking(server: str, topic: str, settings: BrokerBenchSettings) -> float:
    """Run the blocking loop on a thread, closing its client if it stalls."""
    run = _BlockingRun(server)
    taking = asyncio.ensure_future(asyncio.to_thread(_consume_blocking, run, topic, settings))
    last = -1
    while not taking.done():
        await asyncio.wait({taking}, timeout=STALL_S)
        if not taking.done() and run.seen == last:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(run.client.close, 1.0)  # ends the loop
        last = run.seen
    return taking.result()


def _consume_blocking(run: _BlockingRun, topic: str, settings: BrokerBenchSettings) -> float:
    """The plain blocking loop (the README's first sample), timed until the
    broker has confirmed every ack."""
    with run.client as client:
        started = time.perf_counter()
        options = {"prefetch": 10 * settings.batch, "limit": settings.messages}
        for message in client.consume(topic, "bench", **options):
            message.ack()
            run.seen += 1
        client.flush(STALL_S)
        if run.seen != settings.messages:
            raise RuntimeError(f"consume stalled after {run.seen} messages")
        return time.perf_counter() - started


async def _shared(client: AsyncClient, topic: str, settings: BrokerBenchSettings) -> float:
    await _fill(client, topic, settings)
    await client.put_group(topic, "bench", mode="shared")
    started = time.perf_counter()
    seen = 0
    while seen < settings.messages:
        messages = await client.receive(
            topic, "bench", consumer="bench-1", max=settings.batch, wait="5s"
        )
        if not messages:
            raise RuntimeError(f"receive stalled after {seen} messages")
        for message in messages:
            message.ack()
        seen += len(messages)
    await client.settler(topic, "bench").flush()
    return time.perf_counter() - started


SCENARIOS: dict[str, Callable[[AsyncClient, str, BrokerBenchSettings], object]] = {
    "produce": _produce,
    "consume": _consume,
    "shared": _shared,
}


def run_broker_bench(
    scenario: str, settings: BrokerBenchSettings, progress: Callable[[str], None]
) -> BrokerBenchResult:
    with running_server(settings.server) as running:
        server = running.address
        progress(f"{scenario}: {settings.messages:,} messages against {server}")

        async def main() -> float:
            async with AsyncClient(server) as client:
                topic = f"bench-{scenario}-{secrets.token_hex(3)}"
                await client.create_topic(
                    topic, partitions=settings.partitions, trace=settings.trace
                )
                try:
                    work = SCENARIOS[scenario](client, topic, settings)
                    assert asyncio.iscoroutine(work)
                    return float(await work)
                finally:
                    await client.delete_topic(topic)

        seconds = asyncio.run(main())
    return BrokerBenchResult(
        scenario=scenario,
        messages=settings.messages,
        message_bytes=settings.message_bytes,
        batch=settings.batch,
        partitions=settings.partitions,
        seconds=seconds,
        msgs_per_s=settings.messages / seconds,
        mb_per_s=settings.messages * settings.message_bytes / seconds / 1e6,
        server=server,
        trace=settings.trace,
        sync=settings.sync,
    )
