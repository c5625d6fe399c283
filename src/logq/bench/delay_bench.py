"""`logq bench delay`: many delayed messages, the broker's memory, and lateness.

A consumer of an ordered group subscribes first; then `messages` delayed
messages are published in batches, each batch due at its own time, the
times spread evenly over the next `spread_s` seconds. Once all are
published (and held back by the group, not yet due) the broker's resident
memory is read. Then every message is consumed as it comes due, and its
lateness (arrival at the consumer minus its due time, both on this
machine's clock) is recorded.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from logq.bench.broker_bench import rss_bytes, running_server
from logq.client import AsyncClient


@dataclass(frozen=True, slots=True)
class DelayBenchSettings:
    messages: int = 1_000_000
    message_bytes: int = 100
    batch: int = 1000
    partitions: int = 6
    spread_s: float = 60.0
    lead_s: float = 10.0  # the first messages are due this long after the start
    server: str | None = None


@dataclass(frozen=True, slots=True)
class DelayBenchResult:
    messages: int
    pending_delayed: int
    rss_bytes: int | None
    rss_bytes_before: int | None
    publish_s: float
    lateness_ms_p50: float
    lateness_ms_p99: float
    lateness_ms_max: float
    early: int
    server: str

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def _run(
    client: AsyncClient,
    settings: DelayBenchSettings,
    pid: int | None,
    progress: Callable[[str], None],
) -> DelayBenchResult:
    topic = f"bench-delay-{secrets.token_hex(3)}"
    await client.create_topic(topic, partitions=settings.partitions)
    await client.put_group(topic, "bench", mode="ordered")
    rss_before = rss_bytes(pid)
    lateness: list[float] = []
    early = 0
    done = asyncio.Event()

    async def consume() -> None:
        nonlocal early
        async with client.consume(topic, "bench", prefetch=10 * settings.batch) as consumer:
            while len(lateness) < settings.messages:
                batch = await consumer.next_batch(
                    settings.batch, settings.spread_s + settings.lead_s + 60
                )
                if not batch:
                    break
                arrived = time.time() * 1000
                for message in batch:
                    late = arrived - message.timestamp_ms
                    early += late < 0
                    lateness.append(late)
                    message.ack()
        done.set()

    consumer = asyncio.create_task(consume())
    value = b"d" * settings.message_bytes
    batches = -(-settings.messages // settings.batch)
    start_ms = int(time.time() * 1000 + settings.lead_s * 1000)
    step_ms = settings.spread_s * 1000 / max(batches, 1)
    producer = client.producer(linger_ms=0)
    started = time.perf_counter()
    futures = []
    for index in range(batches):
        count = min(settings.batch, settings.messages - index * settings.batch)
        due = int(start_ms + index * step_ms)
        futures.append(
            await producer.send_batch(
                topic, index % settings.partitions, [value] * count, deliver_at=due
            )
        )
        if len(futures) >= 64:
            await asyncio.gather(*futures)
            futures.clear()
    await asyncio.gather(*futures)
    publish_s = time.perf_counter() - started
    progress(f"published {settings.messages:,} delayed messages in {publish_s:.1f} s")
    # wait until the group holds them all back, then read the broker's memory
    pending = 0
    for _ in range(200):
        group = await client.describe_group(topic, "bench")
        pending = sum(p["pending_redelivery"] for p in group["partitions"])
        if pending + len(lateness) >= settings.messages:
            break
        await asyncio.sleep(0.05)
    rss = rss_bytes(pid)
    progress(f"{pending:,} held back; waiting for them to come due over {settings.spread_s:.0f} s")
    await done.wait()
    await consumer
    await client.delete_topic(topic)
    ordered = sorted(lateness)
    return DelayBenchResult(
        messages=settings.messages,
        pending_delayed=pending,
        rss_bytes=rss,
        rss_bytes_before=rss_before,
        publish_s=publish_s,
        lateness_ms_p50=percentile(ordered, 0.50),
        lateness_ms_p99=percentile(ordered, 0.99),
        lateness_ms_max=ordered[-1] if ordered else 0.0,
        early=early,
        server="",
    )


def run_delay_bench(
    settings: DelayBenchSettings, progress: Callable[[str], None]
) -> DelayBenchResult:
    with running_server(settings.server) as running:
        progress(
            f"delay: {settings.messages:,} messages over {settings.spread_s:.0f} s against {running.address}"
        )

        async def main() -> DelayBenchResult:
            async with AsyncClient(running.address) as client:
                return await _run(client, settings, running.pid, progress)

        result = asyncio.run(main())
    return DelayBenchResult(**{**asdict(result), "server": running.address})
