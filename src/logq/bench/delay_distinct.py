"""`logq bench delay --distinct`: a group passing many delayed messages, each
with its own due time, while plain messages flow through it.

For each size in `pendings`, a fresh broker on its own data directory:

1. a plain stream (`plain` messages) through a shared group of a topic with
   no delays: receive + ack throughput, the baseline (the second of two
   rounds: the first warms the broker up);
2. `pending` - `near` delayed messages published to one partition of
   another topic, each its own due time, spread from 10 s to 7 days ahead;
   the shared group receives until it has passed them all (held back,
   pending), or until `pass_s_max` has gone by; then `near` more, due 1 to
   10 s ahead, which the group passes too;
3. the near ones are received as they come due, a receive always waiting
   (acks go on a second connection): their lateness (arrival minus due
   time, on this machine's clock);
4. the same plain stream published behind them and received + acked through
   the same group: throughput with that many delays pending;
5. `kill -9`, then a restart on the same directory: seconds until the
   broker answers a receive of the group again, and what it holds pending.

The broker's resident memory is read before the delays, once the group
holds them, and after the restart. Beside each time on the clock the broker
process's CPU time is read too (Linux /proc): on a machine shared with
other work the clock counts the waits for a CPU, the CPU time does not.
The broker's data directory is made under `TMPDIR` (e.g. `/dev/shm`).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from logq.bench.broker_bench import rss_bytes
from logq.client import AsyncClient

READY = re.compile(rb"native (\S+):(\d+) http (\S+) ")
WEEK_MS = 7 * 86_400_000
NEAR_FROM_MS = 1_000
NEAR_TO_MS = 10_000
PUBLISH_BATCH = 1000
RECEIVE_MAX = 100


@dataclass(frozen=True, slots=True)
class DistinctSettings:
    pendings: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    plain: int = 2000
    near: int = 200
    message_bytes: int = 100
    pass_s_max: float = 900.0  # give up passing the delayed ones after this long


@dataclass(frozen=True, slots=True)
class DistinctResult:
    pending: int
    held_back: int  # what the group reported pending once it had passed them
    plain_msgs_per_s_no_delays: float
    plain_msgs_per_s: float
    pass_s: float  # how long the group took to pass the delayed ones
    rss_bytes_before: int | None
    rss_bytes_after: int | None
    restart_s: float
    held_back_after_restart: int
    rss_bytes_after_restart: int | None
    # the broker's CPU time: per plain message received and acked (without
    # and with the delays pending), and from its start until it answered
    plain_cpu_us_per_msg_no_delays: float | None
    plain_cpu_us_per_msg: float | None
    restart_cpu_s: float | None
    lateness_ms_p50: float
    lateness_ms_p99: float
    near_delivered: int
    early: int

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


class _Server:
    """A `logq serve` child on a data directory, started and killed here."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self) -> None:
        command = [sys.executable, "-m", "logq", "serve", "--data-dir", self.directory]
        command += ["--port", "0", "--http-port", "0"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ)
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            match = READY.search(line)
            if match:
                self.address = f"{match.group(1).decode()}:{int(match.group(2))}"
                return
        raise RuntimeError("logq serve did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


@contextmanager
def _server() -> Iterator[_Server]:
    directory = tempfile.mkdtemp(prefix="logq-bench-delay-")
    server = _Server(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a local process (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_us_per_msg(before: float | None, after: float | None, count: int) -> float | None:
    return None if before is None or after is None else (after - before) * 1e6 / count


def _now_ms() -> int:
    return int(time.time() * 1000)


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def _far_times(count: int, now_ms: int) -> list[int]:
    """`count` distinct due times, spread from 10 s to 7 days ahead."""
    span = WEEK_MS - NEAR_TO_MS
    return [now_ms + NEAR_TO_MS + 1 + i * span // max(count, 1) for i in range(count)]


def _near_times(count: int, now_ms: int) -> list[int]:
    """`count` distinct due times, spread from 1 to 10 s ahead."""
    step = (NEAR_TO_MS - NEAR_FROM_MS) // max(count, 1)
    return [now_ms + NEAR_FROM_MS + i * step for i in range(count)]


async def _publish_delayed(client: AsyncClient, value: bytes, times: list[int]) -> None:
    for start in range(0, len(times), 100 * PUBLISH_BATCH):
        await client.publish_many(
            "delayed",
            [
                {"value": value, "partition": 0, "deliver_at": due}
                for due in times[start : start + 100 * PUBLISH_BATCH]
            ],
        )


async def _pass(
    client: AsyncClient,
    total: int,
    settings: DistinctSettings,
    lateness: list[float],
    early: list[int],
) -> int:
    """Receive until the group has passed `total` delayed messages (holding
    them back, or delivering those due); returns how many it holds."""
    started = time.perf_counter()
    delivered = 0
    while True:  # each receive reaches further
        batch = await client.receive("delayed", "bench", max=RECEIVE_MAX, wait=0)
        _note_delayed(batch, lateness, early)
        delivered += len(batch)
        if batch:
            await client.ack("delayed", "bench", [m.id for m in batch])
        held = await _pending_of(client, "delayed")
        if held + delivered >= total or time.perf_counter() - started > settings.pass_s_max:
            return held


async def _plain_stream(
    client: AsyncClient,
    topic: str,
    settings: DistinctSettings,
    lateness: list[float],
    early: list[int],
) -> float:
    """Publish `plain` messages and receive + ack them through the group;
    messages/s of the receive + ack part (delayed ones that come due meanwhile
    are acked and timed too)."""
    value = b"p" * settings.message_bytes
    await client.publish_many(topic, [{"value": value, "partition": 0}] * settings.plain)
    got = 0
    started = time.perf_counter()
    while got < settings.plain:
        batch = await client.receive(topic, "bench", max=RECEIVE_MAX, wait=1000)
        _note_delayed(batch, lateness, early)
        got += sum(1 for message in batch if message.value == value)
        if batch:
            await client.ack(topic, "bench", [message.id for message in batch])
    return settings.plain / (time.perf_counter() - started)


def _note_delayed(batch: list, lateness: list[float], early: list[int]) -> None:  # type: ignore[type-arg]
    """Time the near delayed messages of `batch` (the far ones due meanwhile are not)."""
    arrived = time.time() * 1000
    for message in batch:
        if message.value[:1] == b"n":
            late = arrived - message.timestamp_ms
            early[0] += late < 0
            lateness.append(late)


async def _receive_due(
    client: AsyncClient,
    address: str,
    near: int,
    deadline_ms: float,
    lateness: list[float],
    early: list[int],
) -> None:
    """Receive the near ones as they come due, a receive always waiting:
    each batch is acked on a second connection meanwhile (as a consumer
    acks while it goes on receiving), so no due message waits for the
    bench's own ack (an fsync) to be answered."""
    async with AsyncClient(address) as acker:
        acks: list[asyncio.Task[int]] = []
        while len(lateness) < near and time.time() * 1000 < deadline_ms:
            wait = max(1, int(deadline_ms - time.time() * 1000))
            batch = await client.receive("delayed", "bench", max=RECEIVE_MAX, wait=wait)
            _note_delayed(batch, lateness, early)
            if batch:
                ids = [message.id for message in batch]
                acks.append(asyncio.create_task(acker.ack("delayed", "bench", ids)))
        await asyncio.gather(*acks)


async def _pending_of(client: AsyncClient, topic: str) -> int:
    group = await client.describe_group(topic, "bench")
    return int(sum(p["pending_redelivery"] for p in group["partitions"]))


async def _one_size(
    server: _Server, pending: int, settings: DistinctSettings, progress: Callable[[str], None]
) -> DistinctResult:
    lateness: list[float] = []
    early = [0]
    async with AsyncClient(server.address) as client:
        await client.create_topic("plain", partitions=1)
        await client.put_group("plain", "bench", mode="shared")
        await _plain_stream(client, "plain", settings, lateness, early)  # warm up
        cpu_before = cpu_seconds(server.pid)
        baseline = await _plain_stream(client, "plain", settings, lateness, early)
        cpu_baseline = _cpu_us_per_msg(cpu_before, cpu_seconds(server.pid), settings.plain)
        progress(f"no delays: {baseline:,.0f} plain msg/s")
        await client.create_topic("delayed", partitions=1, max_delay="8d")
        await client.put_group("delayed", "bench", mode="shared")
        rss_before = rss_bytes(server.pid)
        near = min(settings.near, pending)
        far = pending - near
        await _publish_delayed(client, b"f" * settings.message_bytes, _far_times(far, _now_ms()))
        progress(f"published {far:,} delayed messages due from 10 s to 7 days ahead")
        started = time.perf_counter()
        held = await _pass(client, far, settings, lateness, early)
        pass_s = time.perf_counter() - started
        progress(f"the group passed them in {pass_s:.1f} s; {held:,} pending")
        # then the near ones, due 1-10 s from now: their lateness once held back
        now_ms = _now_ms()
        await _publish_delayed(client, b"n" * settings.message_bytes, _near_times(near, now_ms))
        held = await _pass(client, held + near, settings, lateness, early)
        rss_after = rss_bytes(server.pid)
        deadline = now_ms + NEAR_TO_MS + 5000  # the near ones are all due by then
        await _receive_due(client, server.address, near, deadline, lateness, early)
        cpu_before = cpu_seconds(server.pid)
        throughput = await _plain_stream(client, "delayed", settings, lateness, early)
        cpu_pending = _cpu_us_per_msg(cpu_before, cpu_seconds(server.pid), settings.plain)
        progress(f"with {pending:,} pending: {throughput:,.0f} plain msg/s")
    server.kill()
    started = time.perf_counter()
    server.start()
    async with AsyncClient(server.address) as client:
        await client.receive("delayed", "bench", max=1, wait=0, timeout_s=600)
        restart_s = time.perf_counter() - started
        restart_cpu_s = cpu_seconds(server.pid)
        after = await _pending_of(client, "delayed")
        rss_restarted = rss_bytes(server.pid)
    progress(f"restart after kill -9: {restart_s:.2f} s, {after:,} pending")
    ordered = sorted(lateness)
    return DistinctResult(
        pending=pending,
        held_back=held,
        plain_msgs_per_s_no_delays=baseline,
        plain_msgs_per_s=throughput,
        pass_s=pass_s,
        rss_bytes_before=rss_before,
        rss_bytes_after=rss_after,
        restart_s=restart_s,
        held_back_after_restart=after,
        rss_bytes_after_restart=rss_restarted,
        plain_cpu_us_per_msg_no_delays=cpu_baseline,
        plain_cpu_us_per_msg=cpu_pending,
        restart_cpu_s=restart_cpu_s,
        lateness_ms_p50=percentile(ordered, 0.50),
        lateness_ms_p99=percentile(ordered, 0.99),
        near_delivered=len(lateness),
        early=early[0],
    )


def run_distinct_bench(
    settings: DistinctSettings, progress: Callable[[str], None]
) -> list[DistinctResult]:
    results = []
    for pending in settings.pendings:
        progress(f"distinct due times: {pending:,} pending")
        with _server() as server:
            results.append(asyncio.run(_one_size(server, pending, settings, progress)))
    return results
