"""`logq bench priority`: how long a high message waits behind a low backlog.

A topic is filled with `backlog` low-priority messages. A consumer of a
shared group then works through them (taking `batch` at a time, acking
each), while `high` high-priority messages are published `high_batch` at a
time, every `interval_ms`. Each high message's wait is its arrival at the
consumer minus its publish time (both on this machine's clock).

With `receive_max` the consumer calls receive for that many messages at a
time (a worker taking one message at a time: 1) instead of having them
pushed. It then also counts the low messages served while a high one
waited: a low message in the reply to a receive sent after some high
message's publish was acknowledged, when that high message was neither
received before nor in the same reply. The starvation guard allows one
only after round(1 / starvation_share) high messages went out since the
last low one; `high_run_before_low_min` is the fewest seen.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from logq.bench.broker_bench import running_server
from logq.bench.delay_bench import percentile
from logq.client import AsyncClient


@dataclass(frozen=True, slots=True)
class PriorityBenchSettings:
    backlog: int = 200_000
    high: int = 200
    interval_ms: float = 10.0
    batch: int = 100
    high_batch: int = 1
    receive_max: int | None = None  # None: messages pushed, `batch` at a time
    server: str | None = None


@dataclass(frozen=True, slots=True)
class PriorityBenchResult:
    low_backlog: int
    high_messages: int
    high_wait_ms_p50: float
    high_wait_ms_p99: float
    high_wait_ms_max: float
    low_delivered_meanwhile: int
    receive_max: int | None
    low_served_while_high_waited: int | None  # counted with receive_max only
    high_run_before_low_min: int | None  # None: no such low message
    server: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass(slots=True)
class _Tally:
    published_high: int = 0
    low_seen: int = 0
    high_run: int = 0  # high messages received since the last low one
    inverted: int = 0  # low messages served while a high one waited
    run_min: int | None = None  # fewest high messages before such a low one

    def low(self, *, inverted: bool) -> None:
        self.low_seen += 1
        if inverted:
            self.inverted += 1
            self.run_min = (
                self.high_run if self.run_min is None else min(self.run_min, self.high_run)
            )
        self.high_run = 0


async def _run(
    client: AsyncClient, settings: PriorityBenchSettings, progress: Callable[[str], None]
) -> PriorityBenchResult:
    topic = f"bench-priority-{secrets.token_hex(3)}"
    await client.create_topic(topic, partitions=1)
    await client.put_group(topic, "bench", mode="shared")
    producer = client.producer(linger_ms=0)
    value = b"l" * 100
    futures = []
    for start in range(0, settings.backlog, 1000):
        count = min(1000, settings.backlog - start)
        futures.append(await producer.send_batch(topic, 0, [value] * count, priority="low"))
    await asyncio.gather(*futures)
    progress(f"{settings.backlog:,} low messages waiting; now {settings.high} high ones")
    waits: list[float] = []
    tally = _Tally()
    finished = asyncio.Event()

    async def consume() -> None:
        async with client.consume(topic, "bench", prefetch=settings.batch) as consumer:
            while len(waits) < settings.high:
                batch = await consumer.next_batch(settings.batch, 30)
                if not batch:
                    break
                arrived = time.time() * 1000
                for message in batch:
                    if message.priority == "high":
                        waits.append(arrived - message.timestamp_ms)
                    else:
                        tally.low_seen += 1
                    message.ack()
        finished.set()

    async def receive(count: int) -> None:
        idle = 0
        while len(waits) < settings.high and idle < 30:
            waiting = tally.published_high - len(waits)  # all stored before this receive
            batch = await client.receive(topic, "bench", max=count, wait="1s")
            arrived = time.time() * 1000
            idle = 0 if batch else idle + 1
            high_in_reply = sum(1 for message in batch if message.priority == "high")
            for message in batch:
                if message.priority == "high":
                    waits.append(arrived - message.timestamp_ms)
                    tally.high_run += 1
                else:
                    tally.low(inverted=waiting > high_in_reply)
            if batch:
                await client.ack(topic, "bench", [message.id for message in batch])
        finished.set()

    receive_max = settings.receive_max
    task = asyncio.create_task(consume() if receive_max is None else receive(receive_max))
    for start in range(0, settings.high, settings.high_batch):
        size = min(settings.high_batch, settings.high - start)
        sent = await producer.send_batch(topic, 0, [b"h" * 100] * size, priority="high")
        await sent
        tally.published_high += size
        await asyncio.sleep(settings.interval_ms / 1000)
    await finished.wait()
    await task
    await client.delete_topic(topic)
    ordered = sorted(waits)
    return PriorityBenchResult(
        low_backlog=settings.backlog,
        high_messages=len(waits),
        high_wait_ms_p50=percentile(ordered, 0.50),
        high_wait_ms_p99=percentile(ordered, 0.99),
        high_wait_ms_max=ordered[-1] if ordered else 0.0,
        low_delivered_meanwhile=tally.low_seen,
        receive_max=receive_max,
        low_served_while_high_waited=None if receive_max is None else tally.inverted,
        high_run_before_low_min=tally.run_min,
        server="",
    )


def run_priority_bench(
    settings: PriorityBenchSettings, progress: Callable[[str], None]
) -> PriorityBenchResult:
    with running_server(settings.server) as running:

        async def main() -> PriorityBenchResult:
            async with AsyncClient(running.address) as client:
                return await _run(client, settings, progress)

        result = asyncio.run(main())
    return PriorityBenchResult(**{**asdict(result), "server": running.address})
