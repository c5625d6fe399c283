"""`logq bench chaos --client`: the client library through broker restarts
and hangs, checked message by message.

A real `logq serve` child runs on a data directory. A sync producer (a
`Client` in a thread) and an async producer (an `AsyncClient` task) publish
numbered messages under a few keys at a steady rate, and a sync consumer
loop (`for msg in client.consume(...)`, in a thread) acks what it gets. A
driver SIGKILLs the broker `kills` times, each time down for a different
while (spread evenly over `down_s`, in random order), and SIGSTOPs it
`stops` times for `stop_s`, with the broker up for a random while between.
The clients are left to their defaults (delivery timeout, call timeouts,
resubscription). Then production stops, every future is awaited, the
consumer drains, and the checker reads the log back:

- `sync_futures_failed`, `async_futures_failed`: futures that failed within
  the delivery timeout;
- `lost`: futures that succeeded for a message not stored where they said;
- `stored_twice`: messages stored more than once;
- `out_of_order`: one producer's messages of one key not stored in the order
  it sent them;
- `consumer_errors`: errors that ended (or escaped) the consumer's loop;
- `never_consumed`: stored messages the consumer never received.

Each must be 0.
"""

from __future__ import annotations

import asyncio
import functools
import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from logq.bench.chaos import ServerProcess
from logq.client import AsyncClient, Client, PublishResult

TOPIC = "client-chaos"
GROUP = "loop"
PAGE = 1000


@dataclass(frozen=True, slots=True)
class ClientChaosSettings:
    kills: int = 10
    down_s: tuple[float, float] = (1.0, 10.0)  # the kills' outages, spread evenly over this
    stops: int = 2
    stop_s: float = 3.0  # how long each SIGSTOP lasts
    up_s: tuple[float, float] = (1.0, 3.0)  # random time the broker runs between events
    partitions: int = 3
    keys: int = 12
    rate_per_s: float = 300.0  # messages each producer sends per second
    visibility_timeout_ms: int = 5000
    stall_s: float = 30.0  # the final drain gives up after this long without progress
    seed: int | None = None
    data_dir: Path | None = None


@dataclass(slots=True)
class ClientChaosReport:
    kills: int = 0
    stops: int = 0
    seconds: float = 0.0
    sent: int = 0
    acknowledged: int = 0
    stored: int = 0
    consumed: int = 0
    consumer_outages: int = 0
    sync_futures_failed: int = 0
    async_futures_failed: int = 0
    lost: int = 0
    stored_twice: int = 0
    out_of_order: int = 0
    consumer_errors: int = 0
    never_consumed: int = 0
    examples: list[str] = field(default_factory=list)

    VIOLATIONS = (
        "sync_futures_failed",
        "async_futures_failed",
        "lost",
        "stored_twice",
        "out_of_order",
        "consumer_errors",
        "never_consumed",
    )

    @property
    def ok(self) -> bool:
        return all(getattr(self, name) == 0 for name in self.VIOLATIONS)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def example(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)


def _value(producer: str, key: int, sequence: int) -> bytes:
    return f"{producer}:{key}:{sequence}".encode()


def _fields(value: bytes) -> tuple[str, int, int]:
    producer, key, sequence = value.decode().split(":")
    return producer, int(key), int(sequence)


class _Outcomes:
    """What each producer's futures said: value -> where it was stored, or the error."""

    def __init__(self, report: ClientChaosReport) -> None:
        self.report = report
        self.lock = threading.Lock()
        self.stored: dict[bytes, tuple[int, int]] = {}
        self.failed: dict[bytes, BaseException] = {}

    def settled(
        self, value: bytes, done: Future[PublishResult] | asyncio.Future[PublishResult]
    ) -> None:
        error = done.exception()
        result = None if error is not None else done.result()
        with self.lock:
            if error is not None:
                self.failed[value] = error
                self.report.example(f"future of {value!r} failed: {error!r}")
            else:
                assert result is not None
                self.stored[value] = (result.partition, result.offset)


class ClientChaos:
    def __init__(self, settings: ClientChaosSettings, progress: Callable[[str], None]) -> None:
        self.settings = settings
        self.progress = progress
        self.random = random.Random(settings.seed)
        self.report = ClientChaosReport()
        self.outcomes = _Outcomes(self.report)
        self.producing = threading.Event()
        self.consuming = threading.Event()
        self.consumed: Counter[bytes] = Counter()
        self.sync_futures: list[tuple[bytes, Future[PublishResult]]] = []
        self.sync_sent = self.async_sent = 0

    def run(self) -> ClientChaosReport:
        settings = self.settings
        directory = settings.data_dir or Path(tempfile.mkdtemp(prefix="logq-client-chaos-"))
        directory.mkdir(parents=True, exist_ok=True)
        server = ServerProcess(directory / "data", directory / "server.log")
        started = time.monotonic()
        failed = True
        try:
            server.start()
            with Client(server.address) as admin:
                admin.create_topic(TOPIC, partitions=settings.partitions)
                admin.put_group(TOPIC, GROUP, visibility_timeout=settings.visibility_timeout_ms)
            self.producing.set()
            self.consuming.set()
            workers = [
                threading.Thread(target=self._sync_produce, args=(server.address,)),
                threading.Thread(target=lambda: asyncio.run(self._async_produce(server.address))),
                threading.Thread(target=self._consume, args=(server.address,)),
            ]
            for worker in workers:
                worker.start()
            self._disturb(server)
            self.producing.clear()
            workers[0].join()
            workers[1].join()
            self._drain()
            self.consuming.clear()
            workers[2].join()
            with Client(server.address) as admin:
                self._check(self._read_all(admin))
            failed = not self.report.ok
        finally:
            self.producing.clear()
            self.consuming.clear()
            server.stop()
            if settings.data_dir is None and not failed:
                shutil.rmtree(directory, ignore_errors=True)
            elif failed:
                self.progress(f"kept {directory} for a look")
        self.report.seconds = round(time.monotonic() - started, 2)
        return self.report

    def _disturb(self, server: ServerProcess) -> None:
        """The kills (each outage a different length) and stops, in random order."""
        settings = self.settings
        low, high = settings.down_s
        step = (high - low) / max(settings.kills - 1, 1)
        events = [("kill", low + step * index) for index in range(settings.kills)]
        events += [("stop", settings.stop_s)] * settings.stops
        self.random.shuffle(events)
        for number, (kind, seconds) in enumerate(events, 1):
            time.sleep(self.random.uniform(*settings.up_s))
            if kind == "kill":
                server.kill()
                time.sleep(seconds)
                server.start()
                self.report.kills += 1
            else:
                server.pause(seconds)
                self.report.stops += 1
            self.progress(
                f"{number}/{len(events)}: {kind} for {seconds:.1f} s; "
                f"{len(self.outcomes.stored)} acknowledged, {sum(self.consumed.values())} consumed"
            )

    def _sync_produce(self, address: str) -> None:
        settings = self.settings
        with Client(address) as client, client.producer(linger_ms=2) as producer:
            sequence = 0
            pause_s = 10 / settings.rate_per_s
            while self.producing.is_set():
                for _ in range(10):
                    sequence += 1
                    key = sequence % settings.keys
                    value = _value("s", key, sequence)
                    future = producer.send(TOPIC, value, key=f"k{key}")
                    future.add_done_callback(functools.partial(self.outcomes.settled, value))
                    self.sync_futures.append((value, future))
                time.sleep(pause_s)
            producer.flush()
        for _, future in self.sync_futures:
            future.exception()  # wait: each is settled by the callback
        self.sync_sent = len(self.sync_futures)

    async def _async_produce(self, address: str) -> None:
        settings = self.settings
        async with AsyncClient(address) as client:
            producer = client.producer(linger_ms=2)
            pending: list[asyncio.Future[PublishResult]] = []
            sequence = 0
            pause_s = 10 / settings.rate_per_s
            while self.producing.is_set():
                for _ in range(10):
                    sequence += 1
                    key = sequence % settings.keys
                    value = _value("a", key, sequence)
                    future = await producer.send(TOPIC, value, key=f"k{key}")
                    future.add_done_callback(functools.partial(self.outcomes.settled, value))
                    pending.append(future)
                await asyncio.sleep(pause_s)
            await producer.flush()
            await asyncio.gather(*pending, return_exceptions=True)
            self.async_sent = len(pending)

    def _consume(self, address: str) -> None:
        def outage(_: BaseException) -> None:
            self.report.consumer_outages += 1

        with Client(address) as client:
            try:
                with client.consume(TOPIC, GROUP, prefetch=500, on_outage=outage) as consumer:
                    while self.consuming.is_set():
                        message = consumer.next(0.5)
                        if message is None:
                            continue
                        self.consumed[message.value or b""] += 1
                        message.ack()
            except Exception as error:  # the loop ended: what this run checks for
                self.report.consumer_errors += 1
                self.report.example(f"the consumer loop ended: {error!r}")

    def _drain(self) -> None:
        """Wait until the consumer has had every acknowledged message, while it progresses."""
        progress, seen = time.monotonic(), -1
        while time.monotonic() - progress < self.settings.stall_s:
            if all(self.consumed[value] for value in self.outcomes.stored):
                return
            count = sum(self.consumed.values())
            if count != seen:
                progress, seen = time.monotonic(), count
            time.sleep(0.2)

    def _read_all(self, client: Client) -> dict[tuple[int, int], bytes]:
        """Every stored message: (partition, offset) -> value."""
        stored: dict[tuple[int, int], bytes] = {}
        for partition in range(self.settings.partitions):
            offset = 0
            while page := client.peek(TOPIC, partition=partition, offset=offset, limit=PAGE):
                for message in page:
                    stored[(partition, message.offset)] = message.value or b""
                offset = page[-1].offset + 1
        return stored

    def _check(self, stored: dict[tuple[int, int], bytes]) -> None:
        report, outcomes = self.report, self.outcomes
        report.sent = self.sync_sent + self.async_sent
        report.acknowledged = len(outcomes.stored)
        report.stored = len(stored)
        report.consumed = sum(self.consumed.values())
        for value in outcomes.failed:
            if _fields(value)[0] == "s":
                report.sync_futures_failed += 1
            else:
                report.async_futures_failed += 1
        for value, place in outcomes.stored.items():
            if stored.get(place) != value:
                report.lost += 1
                report.example(f"acknowledged at {place}, not stored there: {value!r}")
        copies = Counter(stored.values())
        for value, count in copies.items():
            if count > 1:
                report.stored_twice += 1
                report.example(f"stored {count} times: {value!r}")
            if not self.consumed[value]:
                report.never_consumed += 1
                report.example(f"never consumed: {value!r}")
        last: dict[tuple[str, int], int] = {}  # (producer, key) -> last sequence seen
        for place in sorted(stored):
            producer, key, sequence = _fields(stored[place])
            before = last.get((producer, key), 0)
            if sequence <= before:
                report.out_of_order += 1
                report.example(f"{stored[place]!r} at {place} after sequence {before}")
            last[(producer, key)] = max(before, sequence)


def run_client_chaos(
    settings: ClientChaosSettings, progress: Callable[[str], None] = lambda _: None
) -> ClientChaosReport:
    return ClientChaos(settings, progress).run()
