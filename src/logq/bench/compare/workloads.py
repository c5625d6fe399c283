"""The workloads of `logq bench compare`, written once against `System`.

Each takes a fresh queue, measures, and drops the queue. Throughput phases
run for `seconds` (a fill stops at `max_messages` too); latencies are
measured per request (publish workloads) or per message from the moment it
was made to its delivery (the paced publish → deliver workloads).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from logq.bench.compare.system import Conn, Queue, System, stamp_of, stamped

RATES = {"latency-1k": 1_000, "latency-10k": 10_000, "latency-50k": 50_000}
PUBLISH_BATCHES = {"publish-1": 1, "publish-10": 10, "publish-100": 100, "publish-1000": 1000}


@dataclass(frozen=True, slots=True)
class CompareSettings:
    seconds: float = 5.0  # each timed phase
    max_messages: int = 1_000_000  # a fill stops here
    message_bytes: int = 100
    partitions: int = 6
    publishers: int = 8  # concurrent publishers, each its own connection
    workers: int = 4  # competing consumers of the shared workload
    many_partitions: int = 1000
    idle_connections: int = 1000
    busy_connections: int = 10
    busy_batch: int = 100  # batch of the many-partitions and busy-connection publishers


@dataclass(slots=True)
class Result:
    system: str
    workload: str
    msgs_per_s: float | None
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    messages: int = 0
    seconds: float = 0.0
    settings: str = ""
    note: str = ""


@dataclass(slots=True)
class Latencies:
    samples_ns: list[int] = field(default_factory=list)

    def add(self, nanoseconds: int) -> None:
        self.samples_ns.append(nanoseconds)

    def quantile_ms(self, q: float) -> float | None:
        if not self.samples_ns:
            return None
        ordered = sorted(self.samples_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def _result(
    system: System, workload: str, messages: int, seconds: float, latencies: Latencies | None
) -> Result:
    found = latencies or Latencies()
    return Result(
        system=system.name,
        workload=workload,
        msgs_per_s=messages / seconds if seconds > 0 else None,
        p50_ms=found.quantile_ms(0.50),
        p99_ms=found.quantile_ms(0.99),
        p999_ms=found.quantile_ms(0.999),
        messages=messages,
        seconds=seconds,
        settings=system.settings,
    )


class Scratch:
    """A fresh queue for one workload, dropped after."""

    def __init__(self, system: System, workload: str, partitions: int) -> None:
        self.system = system
        self.queue = Queue(f"cmp_{workload.replace('-', '_')}_{secrets.token_hex(3)}", partitions)

    async def __aenter__(self) -> Queue:
        await self.system.create(self.queue)
        return self.queue

    async def __aexit__(self, *exc: object) -> None:
        await self.system.drop(self.queue)


async def _connections(system: System, count: int) -> list[Conn]:
    """`count` new connections, opened 50 at a time."""
    opened: list[Conn] = []
    for start in range(0, count, 50):
        opened += await asyncio.gather(*(system.connect() for _ in range(min(50, count - start))))
    return opened


async def _close(connections: Sequence[Conn]) -> None:
    await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)


async def _publish_for(
    connections: Sequence[Conn],
    queue: Queue,
    batch: int,
    seconds: float,
    message_bytes: int,
    cap: int | None = None,
) -> tuple[int, float, Latencies]:
    """Each connection publishes `batch`-message batches, partitions in turn,
    for `seconds` (or until `cap` messages in all); each batch's round trip
    is one latency sample. Returns (messages acked, seconds, latencies)."""
    values = [b"x" * message_bytes] * batch
    latencies = Latencies()
    counted = [0]
    started = time.perf_counter()
    deadline = started + seconds

    async def publisher(index: int, connection: Conn) -> None:
        partition = index % queue.partitions
        while time.perf_counter() < deadline and (cap is None or counted[0] < cap):
            counted[0] += batch
            sent = time.perf_counter_ns()
            await connection.publish(queue, partition, values)
            latencies.add(time.perf_counter_ns() - sent)
            partition = (partition + 1) % queue.partitions

    await asyncio.gather(*(publisher(i, c) for i, c in enumerate(connections)))
    return counted[0], time.perf_counter() - started, latencies


async def publish(system: System, settings: CompareSettings, workload: str) -> list[Result]:
    batch = PUBLISH_BATCHES[workload]
    async with Scratch(system, workload, settings.partitions) as queue:
        connections = await _connections(system, settings.publishers)
        try:
            count, seconds, latencies = await _publish_for(
                connections, queue, batch, settings.seconds, settings.message_bytes
            )
        finally:
            await _close(connections)
    return [_result(system, workload, count, seconds, latencies)]


async def _fill(system: System, queue: Queue, settings: CompareSettings) -> int:
    connections = await _connections(system, settings.publishers)
    try:
        count, _, _ = await _publish_for(
            connections,
            queue,
            1000,
            settings.seconds,
            settings.message_bytes,
            cap=settings.max_messages,
        )
    finally:
        await _close(connections)
    return count


async def consume(system: System, settings: CompareSettings, workload: str) -> list[Result]:
    ordered = workload == "consume"
    async with Scratch(system, workload, settings.partitions) as queue:
        count = await _fill(system, queue, settings)
        started = time.perf_counter()
        await system.consume(queue, count, ordered=ordered, workers=settings.workers, on_batch=None)
        seconds = time.perf_counter() - started
    return [_result(system, workload, count, seconds, None)]


async def rest_publish(system: System, settings: CompareSettings, workload: str) -> list[Result]:
    """Batches of 1000 JSON messages posted by `publishers` concurrent requests."""
    if system.rest_url is None:
        return [
            Result(system.name, workload, None, settings=system.settings, note="no REST publish")
        ]
    import httpx  # noqa: PLC0415

    text = "x" * (settings.message_bytes - 2)  # stored as a JSON string: quotes included
    body = msgspec.json.encode({"messages": [{"value": text}] * 1000})
    latencies = Latencies()
    counted = [0]
    async with Scratch(system, workload, settings.partitions) as queue:
        url = f"{system.rest_url}/v1/topics/{queue.name}/messages"
        headers = {"content-type": "application/json"}
        async with httpx.AsyncClient(timeout=60) as client:
            # timed from here: making the client (its TLS context) is not publishing
            started = time.perf_counter()
            deadline = started + settings.seconds

            async def poster() -> None:
                while True:  # one post at least, however late this poster starts
                    sent = time.perf_counter_ns()
                    response = await client.post(url, content=body, headers=headers)
                    response.raise_for_status()
                    latencies.add(time.perf_counter_ns() - sent)
                    counted[0] += 1000
                    if time.perf_counter() >= deadline:
                        return

            await asyncio.gather(*(poster() for _ in range(settings.publishers)))
        seconds = time.perf_counter() - started
    return [_result(system, workload, counted[0], seconds, latencies)]


async def single_publish(system: System, settings: CompareSettings, workload: str) -> list[Result]:
    """One connection, one message at a time, each waited for (durable)."""
    async with Scratch(system, workload, 1) as queue:
        connections = await _connections(system, 1)
        try:
            count, seconds, latencies = await _publish_for(
                connections, queue, 1, settings.seconds, settings.message_bytes
            )
        finally:
            await _close(connections)
    return [_result(system, workload, count, seconds, latencies)]


async def publish_to_deliver(
    system: System, settings: CompareSettings, workload: str
) -> list[Result]:
    """Messages made at a fixed rate (stamped with the time they were made),
    sent each millisecond as one batch by `publishers` senders; the latency is
    from making to delivery at an ordered consumer."""
    rate = RATES[workload]
    total = max(1, int(rate * settings.seconds))
    latencies = Latencies()
    waiting = [0]  # made, not yet sent

    def delivered(values: Sequence[bytes]) -> None:
        now = time.perf_counter_ns()
        for value in values:
            latencies.add(now - stamp_of(value))

    async with Scratch(system, workload, settings.partitions) as queue:
        connections = await _connections(system, settings.publishers)
        batches: asyncio.Queue[list[bytes] | None] = asyncio.Queue()
        taking = asyncio.create_task(
            system.consume(queue, total, ordered=True, workers=1, on_batch=delivered)
        )
        try:

            async def sender(index: int, connection: Conn) -> None:
                partition = index % queue.partitions
                while (values := await batches.get()) is not None:
                    waiting[0] -= len(values)
                    await connection.publish(queue, partition, values)
                    partition = (partition + 1) % queue.partitions

            senders = [asyncio.create_task(sender(i, c)) for i, c in enumerate(connections)]
            started = time.perf_counter()
            made = 0
            while made < total and waiting[0] <= rate:  # stop if over a second behind
                due = min(total, int(rate * (time.perf_counter() - started)) + 1)
                if due > made:
                    batches.put_nowait([stamped(settings.message_bytes) for _ in range(due - made)])
                    waiting[0] += due - made
                    made = due
                await asyncio.sleep(0.001)
            for _ in senders:
                batches.put_nowait(None)
            await asyncio.gather(*senders)
            if made < total:  # the consumer waits for `total`: stop it at what was made
                await _until(lambda: len(latencies.samples_ns) >= made, settings.seconds + 60)
            else:
                await asyncio.wait_for(taking, settings.seconds + 60)
            seconds = time.perf_counter() - started
        finally:
            taking.cancel()
            await _close(connections)
    result = _result(system, workload, made, seconds, latencies)
    if made < total:
        result.note = f"fell over a second behind {rate:,} msg/s; stopped after {made:,}"
    return [result]


async def _until(done: Callable[[], bool], timeout_s: float) -> None:
    """Wait (polling every 10 ms: a bench runs in real time) until `done()`."""
    deadline = time.perf_counter() + timeout_s
    while not done():
        if time.perf_counter() > deadline:
            raise TimeoutError("the messages sent were not all delivered in time")
        await asyncio.sleep(0.01)


async def many_partitions(system: System, settings: CompareSettings, workload: str) -> list[Result]:
    """Publish batches across `many_partitions` partitions, then consume them all."""
    async with Scratch(system, workload, settings.many_partitions) as queue:
        connections = await _connections(system, settings.publishers)
        try:
            count, seconds, latencies = await _publish_for(
                connections,
                queue,
                settings.busy_batch,
                settings.seconds,
                settings.message_bytes,
                cap=settings.max_messages,
            )
        finally:
            await _close(connections)
        started = time.perf_counter()
        await system.consume(queue, count, ordered=True, workers=1, on_batch=None)
        consumed = time.perf_counter() - started
    return [
        _result(system, f"{workload}-publish", count, seconds, latencies),
        _result(system, f"{workload}-consume", count, consumed, None),
    ]


async def many_connections(
    system: System, settings: CompareSettings, workload: str
) -> list[Result]:
    """`idle_connections` open and silent while `busy_connections` publish."""
    async with Scratch(system, workload, settings.partitions) as queue:
        opening = time.perf_counter()
        idle = await _connections(system, settings.idle_connections)
        opened_s = time.perf_counter() - opening
        busy = await _connections(system, settings.busy_connections)
        try:
            count, seconds, latencies = await _publish_for(
                busy, queue, settings.busy_batch, settings.seconds, settings.message_bytes
            )
        finally:
            await _close(busy)
            await _close(idle)
    result = _result(system, workload, count, seconds, latencies)
    result.note = f"{len(idle)} idle connections opened in {opened_s:.1f} s"
    return [result]


Workload = Callable[[System, CompareSettings, str], Awaitable[list[Result]]]

WORKLOADS: dict[str, Workload] = {
    **dict.fromkeys(PUBLISH_BATCHES, publish),
    "consume": consume,
    "shared": consume,
    "rest-publish": rest_publish,
    "single-publish": single_publish,
    **dict.fromkeys(RATES, publish_to_deliver),
    "partitions-1000": many_partitions,
    "connections-1000": many_connections,
}
# throughput workloads rank by msg/s; the others by latency (p99)
LATENCY_WORKLOADS = {"single-publish", *RATES}
