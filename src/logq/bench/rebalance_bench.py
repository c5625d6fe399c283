"""`logq bench rebalance`: what consumers feel when an ordered group changes.

A topic of `partitions` partitions gets `rate` messages a second, spread in
small batches over every partition, for the whole run. `consumers` consumer
processes (real clients, each its own process and connection) take and ack
them as fast as they come. After a warm-up one more consumer joins; a phase
later the first consumer is killed with SIGKILL (no goodbye: the broker
sees its connection drop). Then the producer stops and the group drains.

Each consumer reports every batch it takes (partition, offsets, when it
started and finished) over a pipe *before* it acks, so anything acked is
accounted for, even from the killed process. From those reports, and the
rebalances the broker recorded (`describe_group`), the bench computes:

- `unmoved_gap_ms_max`: over the partitions that did not move, around each
  rebalance (from 0.5 s before to 1.5 s after), the longest their owner left
  messages waiting: between two deliveries of a partition, the time from the
  first one (or from when the second one's messages were acknowledged
  durable, if later) to the second one, so a pause of the producer or of
  the disk does not count as a pause of the consumer;
- `moved_resume_ms_max`: for the partitions that moved, the longest time
  from the rebalance (or from when the messages were durable, if later) to
  their first delivery to the new owner;
- `lost`: messages published but never processed;
- `processed_twice_concurrently`: messages being processed by two
  consumers at overlapping times;
- `baseline_gap_ms_max`: the same gap measure over a quiet stretch before
  the first rebalance (what the machine gives with no rebalance at all);
- `redelivered`: messages processed more than once (the killed consumer's
  unacked ones, once their lease ran out).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import multiprocessing
import os
import secrets
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing.connection import Connection, wait
from typing import Any

from logq.bench.broker_bench import running_server
from logq.bench.delay_bench import percentile
from logq.client import AsyncClient

WINDOW_BEFORE_MS = 500
WINDOW_AFTER_MS = 1500
TICK_S = 0.02  # the producer sends one batch per partition this often


@dataclass(frozen=True, slots=True)
class RebalanceBenchSettings:
    partitions: int = 12
    consumers: int = 3
    rate: int = 10_000  # messages per second, all partitions together
    warmup_s: float = 2.0
    phase_s: float = 3.0
    lease_s: float = 2.0
    prefetch: int = 500
    server: str | None = None


@dataclass(slots=True)
class RebalanceBenchResult:
    published: int
    processed: int
    lost: int
    processed_twice_concurrently: int
    redelivered: int
    unmoved_gap_ms_max: float
    baseline_gap_ms_max: float  # the same measure with no rebalance going on
    moved_resume_ms_max: float
    moved_partitions: int
    rebalances: list[dict[str, Any]] = field(default_factory=list)
    publish_ack_ms_p99: float = 0.0  # how far behind the producer ran (gaps follow from it)
    server: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the consumer processes -------------------------------------------------------------


def consumer_main(
    address: str, topic: str, group: str, name: str, prefetch: int, pipe: Connection
) -> None:
    """A consumer process: take, report, ack, until told to stop (or killed)."""
    asyncio.run(_consume(address, topic, group, name, prefetch, pipe))


async def _consume(
    address: str, topic: str, group: str, name: str, prefetch: int, pipe: Connection
) -> None:
    if pipe.recv() != "go":  # started early, so Python's start-up is not part of the join
        return
    async with (
        AsyncClient(address) as client,
        client.consume(topic, group, consumer=name, prefetch=prefetch) as consumer,
    ):
        await consumer.next_batch(1, 0)  # subscribes (joins the group)
        pipe.send(("ready", name))
        while not pipe.poll():
            batch = await consumer.next_batch(prefetch, 0.1)
            if not batch:
                continue
            started = time.time() * 1000
            runs: list[tuple[int, int, int]] = []
            for message in batch:
                partition, offset = message.partition, message.offset
                if runs and runs[-1][0] == partition and runs[-1][2] == offset:
                    runs[-1] = (partition, runs[-1][1], offset + 1)
                else:
                    runs.append((partition, offset, offset + 1))
            pipe.send(("took", name, runs, started, time.time() * 1000))
            for message in batch:
                message.ack()
    pipe.send(("stopped", name))


# -- the run ------------------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    consumer: str
    partition: int
    start: int
    end: int
    started_ms: float
    finished_ms: float


class Consumers:
    """The consumer processes and what they report (read by a thread)."""

    def __init__(self, address: str, topic: str, group: str, prefetch: int) -> None:
        self.address, self.topic, self.group, self.prefetch = address, topic, group, prefetch
        self.context = multiprocessing.get_context("spawn")
        self.processes: dict[str, multiprocessing.process.BaseProcess] = {}
        self.pipes: dict[str, Connection] = {}
        self.reports: list[Report] = []
        self.ready: set[str] = set()
        self.lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._done = False

    def go(self, name: str) -> None:
        """Let a started consumer join the group."""
        self.pipes[name].send("go")

    def start(self, name: str) -> None:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=consumer_main,
            args=(self.address, self.topic, self.group, name, self.prefetch, theirs),
            daemon=True,
        )
        process.start()
        theirs.close()
        with self.lock:
            self.processes[name] = process
            self.pipes[name] = ours
        if self._reader is None:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _read(self) -> None:
        while not self._done:
            with self.lock:
                pipes = {pipe: name for name, pipe in self.pipes.items()}
            for pipe in wait(list(pipes), timeout=0.05):
                assert isinstance(pipe, Connection)
                try:
                    message = pipe.recv()
                except (EOFError, OSError):
                    with self.lock:
                        self.pipes.pop(pipes[pipe], None)
                    continue
                self._note(message)

    def _note(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            if message[0] == "ready":
                self.ready.add(message[1])
            elif message[0] == "took":
                _, name, runs, started, finished = message
                for partition, start, end in runs:
                    self.reports.append(Report(name, partition, start, end, started, finished))

    def kill(self, name: str) -> None:
        process = self.processes[name]
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.join(5)

    def stop(self) -> None:
        with self.lock:
            pipes = list(self.pipes.values())
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for process in self.processes.values():
            process.join(15)
            if process.is_alive():
                process.kill()
        self._done = True
        if self._reader is not None:
            self._reader.join(5)

    def processed(self) -> dict[int, set[int]]:
        with self.lock:
            reports = list(self.reports)
        seen: defaultdict[int, set[int]] = defaultdict(set)
        for report in reports:
            seen[report.partition].update(range(report.start, report.end))
        return seen


async def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _run(
    client: AsyncClient,
    address: str,
    settings: RebalanceBenchSettings,
    progress: Callable[[str], None],
) -> RebalanceBenchResult:
    topic, group = f"bench-rebalance-{secrets.token_hex(3)}", "bench"
    await client.create_topic(topic, partitions=settings.partitions)
    await client.put_group(
        topic, group, mode="ordered", visibility_timeout=f"{int(settings.lease_s * 1000)}ms"
    )
    producer = client.producer(linger_ms=0)
    published = [0] * settings.partitions
    latencies: list[float] = []  # publish to durable ack, ms
    acks: list[list[tuple[int, float]]] = [[] for _ in range(settings.partitions)]
    producing = True

    async def produce() -> None:
        started = time.monotonic()
        sent = 0
        value = b"r" * 100
        pending: list[asyncio.Future[Any]] = []
        while producing:
            due = int((time.monotonic() - started) * settings.rate)
            counts = [0] * settings.partitions
            for index in range(sent, due):
                counts[index % settings.partitions] += 1
            for partition, count in enumerate(counts):
                if count:
                    future = await producer.send_batch(topic, partition, [value] * count)
                    future.add_done_callback(
                        partial(_note_ack, acks[partition], latencies, time.perf_counter())
                    )
                    pending.append(future)
                    published[partition] += count
            sent = max(sent, due)
            if len(pending) > 1000:  # keep publishing: only drop what is acknowledged
                for future in pending:
                    if future.done():
                        future.result()
                pending = [future for future in pending if not future.done()]
            await asyncio.sleep(TICK_S)
        await asyncio.gather(*pending)
        await producer.flush()

    consumers = Consumers(address, topic, group, settings.prefetch)
    names = [f"consumer-{index}" for index in range(settings.consumers + 1)]
    for name in names:
        consumers.start(name)
    for name in names[:-1]:
        consumers.go(name)
    await _wait_for(lambda: len(consumers.ready) == settings.consumers, 60, "consumers")
    producer_task = asyncio.create_task(produce())
    try:
        progress(f"{settings.consumers} consumers on {settings.partitions} partitions")
        await asyncio.sleep(settings.warmup_s)
        consumers.go(names[-1])
        await _wait_for(lambda: names[-1] in consumers.ready, 60, "the new consumer")
        progress(f"{names[-1]} joined")
        await asyncio.sleep(settings.phase_s)
        consumers.kill(names[0])
        progress(f"{names[0]} killed")
        await asyncio.sleep(settings.phase_s)
    finally:
        producing = False
        await producer_task
    total = sum(published)
    progress(f"{total:,} published; draining")

    def drained() -> bool:
        seen = consumers.processed()
        return all(len(seen.get(p, ())) >= count for p, count in enumerate(published))

    try:
        await _wait_for(drained, settings.lease_s + 30, "every message to be processed")
    except RuntimeError:
        progress("some messages were never processed")
    info = await client.describe_group(topic, group)
    consumers.stop()
    await client.delete_topic(topic)
    caused = {f"{names[-1]} joined", f"{names[0]} left"}
    result = _measure(consumers.reports, published, acks, info["rebalances"], caused)
    latencies.sort()
    result.publish_ack_ms_p99 = round(percentile(latencies, 0.99), 1)
    return result


def _measure(
    reports: list[Report],
    published: list[int],
    acks: list[list[tuple[int, float]]],
    rebalances: list[dict[str, Any]],
    caused: set[str],
) -> RebalanceBenchResult:
    """The figures, from the consumers' reports, when each batch was
    acknowledged durable (`acks`: per partition, base offset and time), and
    the broker's rebalance history (`caused`: the reasons of the rebalances
    the run provoked)."""
    by_offset: defaultdict[tuple[int, int], list[Report]] = defaultdict(list)
    taken: defaultdict[tuple[str, int], list[tuple[float, int]]] = defaultdict(list)
    for report in reports:
        taken[(report.consumer, report.partition)].append((report.started_ms, report.start))
        for offset in range(report.start, report.end):
            by_offset[(report.partition, offset)].append(report)
    processed = sum(
        1 for p, count in enumerate(published) for o in range(count) if (p, o) in by_offset
    )
    lost = sum(published) - processed
    concurrent = 0
    redelivered = 0
    for seen in by_offset.values():
        if len(seen) < 2:
            continue
        redelivered += 1
        if any(
            a.consumer != b.consumer
            and a.started_ms < b.finished_ms
            and b.started_ms < a.finished_ms
            for i, a in enumerate(seen)
            for b in seen[i + 1 :]
        ):
            concurrent += 1
    for times in taken.values():
        times.sort()
    available = Availability(acks)
    owners: dict[int, str] = {}
    gap_max = 0.0
    baseline_max = 0.0
    resume_max = 0.0
    moved_count = 0
    events: list[dict[str, Any]] = []
    for record in rebalances:
        moves = {move["partition"]: move for move in record["moves"]}
        at = float(record["at_ms"])
        if record["reason"] in caused:
            stayed = [
                (owner, partition)
                for partition, owner in owners.items()
                if partition not in moves and owner in record["members"]
            ]
            if not events:  # the same measure over a quiet stretch before, for comparison
                quiet = at - WINDOW_BEFORE_MS - WINDOW_AFTER_MS - 500
                baseline_max = _gap(
                    taken, available, stayed, quiet - WINDOW_BEFORE_MS, quiet + WINDOW_AFTER_MS
                )
            events.append(record)
            window = (at - WINDOW_BEFORE_MS, at + WINDOW_AFTER_MS)
            gap_max = max(gap_max, _gap(taken, available, stayed, *window))
            for partition, move in moves.items():
                moved_count += 1
                first = next((d for d in taken[(move["to"], partition)] if d[0] >= at), None)
                if first is None:
                    resume_max = float("inf")
                    continue
                since = max(at, available(partition, first[1]))
                resume_max = max(resume_max, first[0] - since)
        for partition, move in moves.items():
            owners[partition] = move["to"]
    return RebalanceBenchResult(
        published=sum(published),
        processed=processed,
        lost=lost,
        processed_twice_concurrently=concurrent,
        redelivered=redelivered,
        unmoved_gap_ms_max=round(gap_max, 1),
        baseline_gap_ms_max=round(baseline_max, 1),
        moved_resume_ms_max=round(resume_max, 1),
        moved_partitions=moved_count,
        rebalances=[
            {
                "reason": r["reason"],
                "moves": len(r["moves"]),
                "duration_ms": r["duration_ms"],
            }
            for r in events
        ],
    )


def _note_ack(
    into: list[tuple[int, float]], latencies: list[float], sent: float, future: Any
) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    into.append((future.result().offset, time.time() * 1000))
    latencies.append((time.perf_counter() - sent) * 1000)


class Availability:
    """When an offset could first be delivered: when its batch was acknowledged
    durable (the broker delivers durable messages only)."""

    def __init__(self, acks: list[list[tuple[int, float]]]) -> None:
        self._bases = [sorted(found) for found in acks]
        self._offsets = [[base for base, _ in found] for found in self._bases]

    def __call__(self, partition: int, offset: int) -> float:
        index = bisect.bisect_right(self._offsets[partition], offset) - 1
        return self._bases[partition][index][1] if index >= 0 else 0.0


def _gap(
    taken: dict[tuple[str, int], list[tuple[float, int]]],
    available: Callable[[int, int], float],
    pairs: list[tuple[str, int]],
    low: float,
    high: float,
) -> float:
    """The longest a partition's owner left available messages undelivered
    within [low, high]: between two deliveries, the time from the later of
    the first delivery and the moment the second's messages were durable.
    (A pause of the producer or of the disk is not a pause of the consumer.)"""
    longest = 0.0
    for pair in pairs:
        deliveries = [d for d in taken.get(pair, ()) if low <= d[0] <= high]
        for (before, _), (after, offset) in itertools.pairwise(deliveries):
            longest = max(longest, after - max(before, available(pair[1], offset)))
    return longest


def run_rebalance_bench(
    settings: RebalanceBenchSettings, progress: Callable[[str], None]
) -> RebalanceBenchResult:
    with running_server(settings.server) as running:

        async def main() -> RebalanceBenchResult:
            async with AsyncClient(running.address) as client:
                return await _run(client, running.address, settings, progress)

        result = asyncio.run(main())
    result.server = running.address
    return result
