"""`logq bench partitions`: what tens of thousands of partitions cost one broker.

A real `logq serve`, under `prlimit --nofile=N` (20,000 by default), gets
topics of 6 partitions in steps (`step` topics at a time, up to `topics`).
After each step the bench reports:

- the creation time of the step's topics, per 1,000 topics;
- the server's RSS and open descriptors (from /proc);
- `/metrics`: its size and the time of one scrape, with `metrics.aggregate`
  off and on (the server is restarted in each mode);
- publish throughput: one message to each partition of every topic (in
  calls of 6 messages, one per partition) against the same number of
  messages, in the same calls, to a single partition;
- the graceful stop (SIGTERM to exit), and the restart after it and after
  a `kill -9`: from the process's start to `/health` answering and a
  publish succeeding. Each also in CPU seconds of the server (user and
  system, from /proc and the exit's resource usage): on a machine shared
  with other work the wall-clock figures measure the others too.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from logq.bench.broker_bench import rss_bytes
from logq.bench.chaos import free_port
from logq.client import AsyncClient

PARTITIONS_PER_TOPIC = 6
CONCURRENT_CALLS = 100  # creates and publishes in flight at once
READY_TIMEOUT_S = 600.0
PROBE_TOPIC = "probe"  # the topic a restart publishes to, to call itself ready


@dataclass(frozen=True, slots=True)
class PartitionsBenchSettings:
    topics: int = 5_000
    step: int = 1_000
    open_files_max: int = 20_000  # the server's `ulimit -n`
    directory: Path | None = None


@dataclass(slots=True)
class Step:
    topics: int
    partitions: int
    create_s_per_1000_topics: float
    rss_mb: float
    open_fds: int
    metrics_bytes: int
    metrics_scrape_ms: float
    metrics_aggregated_bytes: int
    metrics_aggregated_scrape_ms: float
    publish_spread_per_s: float
    publish_one_partition_per_s: float
    stop_s: float
    restart_after_sigterm_s: float
    restart_after_kill_s: float
    stop_cpu_s: float
    restart_after_sigterm_cpu_s: float
    restart_after_kill_cpu_s: float
    rss_mb_after_restart: float
    open_fds_after_restart: int


@dataclass(slots=True)
class PartitionsBenchResult:
    settings: dict[str, Any]
    steps: list[Step] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "steps": [asdict(step) for step in self.steps]}


class Server:
    """`logq serve` on fixed ports under a descriptor limit, restarted at will."""

    def __init__(self, data_dir: Path, log_path: Path, open_files_max: int) -> None:
        self.data_dir, self.log_path, self.open_files_max = data_dir, log_path, open_files_max
        self.native_port, self.http_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_cpu_s = 0.0  # the CPU seconds the last start took to be ready

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.native_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, *, aggregate: bool, probe: bool = True) -> float:
        """Start and wait until /health answers and (`probe`) a publish
        succeeds; the seconds."""
        command = [
            *("prlimit", f"--nofile={self.open_files_max}:"),
            *(sys.executable, "-m", "logq", "serve", "--data-dir", str(self.data_dir)),
            *("--port", str(self.native_port), "--http-port", str(self.http_port)),
        ]
        environ = {**os.environ, "LOGQ_METRICS_AGGREGATE": "true" if aggregate else "false"}
        started = time.perf_counter()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environ
            )
        asyncio.run(self._wait_ready(probe))
        took = time.perf_counter() - started
        self.ready_cpu_s = self.cpu_s()
        return took

    async def _wait_ready(self, probe: bool) -> None:
        import httpx  # noqa: PLC0415  (a bench extra: the command loads without it)

        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.http, timeout=5) as http:
            while True:
                self._check_alive(deadline)
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.01)
        while probe:
            self._check_alive(deadline)
            try:
                async with AsyncClient(self.address) as client:
                    await client.publish(PROBE_TOPIC, b"ready?")
                return
            except (OSError, ConnectionError):
                await asyncio.sleep(0.01)

    def _check_alive(self, deadline: float) -> None:
        assert self.process is not None
        if self.process.poll() is not None or time.monotonic() > deadline:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"logq serve did not become ready; its log ends with:\n{tail}")

    def stop(self) -> tuple[float, float]:
        """SIGTERM; the seconds until the process exits, and its CPU seconds
        meanwhile (its whole CPU time, counted for the reaped child, less
        what it had used before the signal)."""
        assert self.process is not None
        before_cpu_s = self.cpu_s()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(600)
        took = time.perf_counter() - started
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        total_cpu_s = (reaped.ru_utime - children.ru_utime) + (reaped.ru_stime - children.ru_stime)
        return took, max(0.0, total_cpu_s - before_cpu_s)

    def cpu_s(self) -> float:
        """The server's CPU seconds so far (user and system)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
        return ticks / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(60)

    def open_fds(self) -> int:
        assert self.process is not None
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def rss_mb(self) -> float:
        assert self.process is not None
        return (rss_bytes(self.process.pid) or 0) / 1e6


async def _in_waves(calls: list[Callable[[], Any]]) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(calls), CONCURRENT_CALLS):
        wave = calls[start : start + CONCURRENT_CALLS]
        results.extend(await asyncio.gather(*(call() for call in wave)))
    return results


async def _create(address: str, names: list[str], partitions: int = PARTITIONS_PER_TOPIC) -> float:
    async with AsyncClient(address) as client:
        started = time.perf_counter()
        await _in_waves(
            [lambda n=n: client.create_topic(n, partitions=partitions) for n in names]  # type: ignore[misc]
        )
        return time.perf_counter() - started


def _messages(topic: str, spread: bool) -> list[dict[str, Any]]:
    return [
        {"value": f"{topic}/{p}".encode(), "partition": p if spread else 0}
        for p in range(PARTITIONS_PER_TOPIC)
    ]


async def _publish(address: str, names: list[str]) -> tuple[float, float]:
    """(messages/s spread over every partition, messages/s to one partition)."""
    async with AsyncClient(address) as client:
        started = time.perf_counter()
        await _in_waves([lambda n=n: client.publish_many(n, _messages(n, True)) for n in names])  # type: ignore[misc]
        spread = len(names) * PARTITIONS_PER_TOPIC / (time.perf_counter() - started)
        one = names[0]
        started = time.perf_counter()
        await _in_waves([lambda: client.publish_many(one, _messages(one, False)) for _ in names])
        single = len(names) * PARTITIONS_PER_TOPIC / (time.perf_counter() - started)
        return spread, single


def _scrape(http: str) -> tuple[int, float]:
    import httpx  # noqa: PLC0415

    with httpx.Client(base_url=http, timeout=120) as client:
        client.get("/metrics")  # the first scrape may open what the later ones reuse
        started = time.perf_counter()
        body = client.get("/metrics").content
        return len(body), (time.perf_counter() - started) * 1000


def run_partitions_bench(
    settings: PartitionsBenchSettings, progress: Callable[[str], None]
) -> PartitionsBenchResult:
    if shutil.which("prlimit") is None:
        raise RuntimeError("prlimit (util-linux) is needed to set the server's descriptor limit")
    result = PartitionsBenchResult({**asdict(settings), "directory": str(settings.directory or "")})
    root = Path(tempfile.mkdtemp(prefix="logq-bench-partitions-", dir=settings.directory))
    server = Server(root / "data", root / "server.log", settings.open_files_max)
    try:
        server.start(aggregate=False, probe=False)
        asyncio.run(_create(server.address, [PROBE_TOPIC], partitions=1))
        made = 0
        while made < settings.topics:
            step = min(settings.step, settings.topics - made)
            names = [f"t{n}" for n in range(made, made + step)]
            progress(f"creating topics {made}..{made + step - 1}")
            create_s = asyncio.run(_create(server.address, names))
            made += step
            result.steps.append(_measure(server, made, step, create_s, progress))
            progress(str(asdict(result.steps[-1])))
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)
    return result


def _measure(
    server: Server, made: int, step: int, create_s: float, progress: Callable[[str], None]
) -> Step:
    rss, fds = server.rss_mb(), server.open_fds()
    metrics_bytes, metrics_ms = _scrape(server.http)
    progress("publishing")
    spread, single = asyncio.run(_publish(server.address, [f"t{n}" for n in range(made)]))
    progress("stopping (SIGTERM) and restarting with metrics.aggregate on")
    stop_s, stop_cpu_s = server.stop()
    after_term = server.start(aggregate=True)
    after_term_cpu_s = server.ready_cpu_s
    aggregated_bytes, aggregated_ms = _scrape(server.http)
    progress("kill -9 and restarting")
    server.kill()
    after_kill = server.start(aggregate=False)
    return Step(
        topics=made,
        partitions=made * PARTITIONS_PER_TOPIC,
        create_s_per_1000_topics=create_s * 1000 / step,
        rss_mb=rss,
        open_fds=fds,
        metrics_bytes=metrics_bytes,
        metrics_scrape_ms=metrics_ms,
        metrics_aggregated_bytes=aggregated_bytes,
        metrics_aggregated_scrape_ms=aggregated_ms,
        publish_spread_per_s=spread,
        publish_one_partition_per_s=single,
        stop_s=stop_s,
        restart_after_sigterm_s=after_term,
        restart_after_kill_s=after_kill,
        stop_cpu_s=stop_cpu_s,
        restart_after_sigterm_cpu_s=after_term_cpu_s,
        restart_after_kill_cpu_s=server.ready_cpu_s,
        rss_mb_after_restart=server.rss_mb(),
        open_fds_after_restart=server.open_fds(),
    )
