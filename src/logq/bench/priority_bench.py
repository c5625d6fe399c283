"""`logq bench priority`: how long a high message waits behind a low backlog.

A topic is filled with `backlog` low-priority messages. A consumer of a
shared group then works through them (taking `batch` at a time, acking
each), while `high` high-priority messages are published one by one, every
`interval_ms`. Each high message's wait is its arrival at the consumer
minus its publish time (both on this machine's clock).
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
    server: str | None = None


@dataclass(frozen=True, slots=True)
class PriorityBenchResult:
    low_backlog: int
    high_messages: int
    high_wait_ms_p50: float
    high_wait_ms_p99: float
    high_wait_ms_max: float
    low_delivered_meanwhile: int
    server: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


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
    low_seen = 0
    finished = asyncio.Event()

    async def consume() -> None:
        nonlocal low_seen
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
                        low_seen += 1
                    message.ack()
        finished.set()

    task = asyncio.create_task(consume())
    for _ in range(settings.high):
        await client.publish(topic, b"h" * 100, priority="high")
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
        low_delivered_meanwhile=low_seen,
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
