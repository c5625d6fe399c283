"""`logq bench dedup-restart`: from a restart to the first acknowledged dedup
publish, with many dedup ids inside the topic's window.

A data directory takes `messages` publishes, each with its own dedup id,
into a topic whose dedup window covers them all: most through a broker
embedded in the bench (quicker to set up, closed gracefully), the last
`tail` through a real `logq serve` started on it. Then that server is
stopped, by `kill -9` and by SIGTERM in turn, and started again. From the
start of each server process (the first, and each restart) the bench
measures:

- `ready_s`: `/health` answers;
- `plain_publish_s`: a publish without a dedup id (to another topic) is
  acknowledged: the log's own recovery;
- `dedup_publish_s`: a publish with a new dedup id is acknowledged;
- `resend_s`: a resend of the first id published is answered with the
  first message's position, having stored nothing (checked).

The two publishes start together once `/health` answers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from logq.bench.chaos import free_port
from logq.broker import Broker, BrokerConfig, OutgoingMessage
from logq.client import AsyncClient
from logq.log.config import FsyncPolicy, LogConfig

TOPIC = "dedup"
PROBE_TOPIC = "probe"
READY_TIMEOUT_S = 900.0
PUBLISH_CHUNK = 5_000  # messages handed to the client per call
PUBLISHERS = 4  # clients publishing at once
# the embedded setup: calls at once, each of this many messages (each with
# a dedup id travels alone in its batch: many calls share each commit)
EMBEDDED_CALLS = 64
EMBEDDED_CHUNK = 200
VALUE = b"v" * 100


@dataclass(frozen=True)
class DedupRestartSettings:
    messages: int = 1_000_000
    partitions: int = 6
    window: str = "1h"
    directory: Path | None = None  # where the data directory goes (a temporary one)
    # of them, published to the server just before the kill -9 (the rest
    # go in through a broker embedded in the bench, which is quicker)
    tail: int = 20_000

    @property
    def served(self) -> int:
        """The ids published to the server (at least one goes in embedded)."""
        return max(0, min(self.tail, self.messages - 1))


@dataclass
class RestartFigures:
    mode: str  # "closed" (the first start, on the embedded broker's data), "kill -9", "SIGTERM"
    stop_s: float
    ready_s: float
    plain_publish_s: float
    dedup_publish_s: float
    resend_s: float


@dataclass
class DedupRestartResult:
    settings: dict[str, Any]
    publish_s: float = 0.0
    restarts: list[RestartFigures] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "publish_s": self.publish_s,
            "restarts": [asdict(r) for r in self.restarts],
        }


class _Server:
    """`logq serve` on a data directory and fixed ports, restarted at will."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir, self.log_path = data_dir, log_path
        self.native_port, self.http_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.native_port}"

    def start(self) -> None:
        command = [
            *(sys.executable, "-m", "logq", "serve", "--data-dir", str(self.data_dir)),
            *("--port", str(self.native_port), "--http-port", str(self.http_port)),
        ]
        self.started = time.perf_counter()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
            )

    async def wait_health(self) -> float:
        """Seconds from the start until /health answers."""
        import httpx  # noqa: PLC0415  (a bench extra: the command loads without it)

        deadline = time.monotonic() + READY_TIMEOUT_S
        base = f"http://127.0.0.1:{self.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            while True:
                self.check_alive(deadline)
                try:
                    if (await http.get("/health")).status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.005)

    def check_alive(self, deadline: float) -> None:
        assert self.process is not None
        if self.process.poll() is not None or time.monotonic() > deadline:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"logq serve did not become ready; its log ends with:\n{tail}")

    def stop(self, sig: signal.Signals) -> float:
        assert self.process is not None
        started = time.perf_counter()
        self.process.send_signal(sig)
        self.process.wait(900)
        return time.perf_counter() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(60)


def _patient_client(address: str) -> AsyncClient:
    """A client that waits as long as a server may take to answer after a
    start (a publish may wait for the dedup ids to be read), sending once."""
    return AsyncClient(
        address, request_timeout_s=READY_TIMEOUT_S, delivery_timeout_s=READY_TIMEOUT_S
    )


async def _fill_embedded(data_dir: Path, settings: DedupRestartSettings) -> tuple[int, float]:
    """Create the topics and publish the first dedup ids through a broker
    embedded in this process (far quicker to set up than over a socket);
    (where the first id went, seconds)."""
    # without an fsync per commit: the setup is not what is measured (the
    # broker's close makes it all durable before the server starts)
    config = BrokerConfig(data_dir=data_dir, log=LogConfig(fsync=FsyncPolicy.NEVER))
    broker = await Broker.open(config)
    try:
        await broker.create_topic(
            TOPIC, {"partitions": settings.partitions, "dedup_window": settings.window}
        )
        await broker.create_topic(PROBE_TOPIC, {"partitions": 1})
        started = time.perf_counter()
        embedded = settings.messages - settings.served
        (first,) = await broker.publish(TOPIC, [OutgoingMessage(VALUE, dedup_id="id-0")])

        async def publish(start: int) -> None:
            end = min(start + EMBEDDED_CHUNK, embedded)
            await broker.publish(
                TOPIC, [OutgoingMessage(VALUE, dedup_id=f"id-{n}") for n in range(start, end)]
            )

        starts = range(1, embedded, EMBEDDED_CHUNK)
        for wave in range(0, len(starts), EMBEDDED_CALLS):
            await asyncio.gather(*(publish(s) for s in starts[wave : wave + EMBEDDED_CALLS]))
        return first.partition * (1 << 40) + first.offset, time.perf_counter() - started
    finally:
        await broker.close()


async def _fill_served(address: str, settings: DedupRestartSettings) -> float:
    """Publish the last `served` dedup ids to the running server, from a few
    clients at once; seconds."""
    started = time.perf_counter()
    first = settings.messages - settings.served
    chunks = list(range(first, settings.messages, PUBLISH_CHUNK))

    async def publisher(number: int) -> None:
        async with _patient_client(address) as client:
            for start in chunks[number::PUBLISHERS]:
                end = min(start + PUBLISH_CHUNK, settings.messages)
                batch = [{"value": VALUE, "dedup_id": f"id-{n}"} for n in range(start, end)]
                await client.publish_many(TOPIC, batch)

    await asyncio.gather(*(publisher(n) for n in range(PUBLISHERS)))
    return time.perf_counter() - started


async def _after_start(server: _Server, first: int, fresh_id: str) -> tuple[float, ...]:
    """(ready, plain publish, dedup publish, resend) seconds from the start."""
    ready = await server.wait_health()
    deadline = time.monotonic() + READY_TIMEOUT_S

    async def timed_publish(topic: str, dedup_id: str | None) -> tuple[float, int]:
        while True:
            server.check_alive(deadline)
            try:
                async with _patient_client(server.address) as client:
                    result = await client.publish(topic, b"after", dedup_id=dedup_id)
                    done = time.perf_counter() - server.started
                    return done, result.partition * (1 << 40) + result.offset
            except (OSError, ConnectionError):
                await asyncio.sleep(0.005)

    (plain, _), (dedup, _) = await asyncio.gather(
        timed_publish(PROBE_TOPIC, None), timed_publish(TOPIC, fresh_id)
    )
    resend, where = await timed_publish(TOPIC, "id-0")
    if where != first:
        raise RuntimeError("the resent dedup id was not answered with its first position")
    return ready, plain, dedup, resend


def run_dedup_restart_bench(
    settings: DedupRestartSettings, progress: Any = lambda text: None
) -> DedupRestartResult:
    root = Path(tempfile.mkdtemp(prefix="logq-dedup-restart-", dir=settings.directory))
    server = _Server(root / "data", root / "server.log")
    result = DedupRestartResult(
        {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
    )
    try:
        progress(f"publishing {settings.messages:,} messages, each with its own dedup id")
        first, result.publish_s = asyncio.run(_fill_embedded(server.data_dir, settings))
        progress("starting the server on it (the embedded broker was closed)")
        server.start()
        figures = asyncio.run(_after_start(server, first, "fresh-0"))
        result.restarts.append(RestartFigures("closed", 0.0, *figures))
        progress(f"publishing the last {settings.served:,} to the server")
        result.publish_s += asyncio.run(_fill_served(server.address, settings))
        for number, (mode, sig) in enumerate(
            (("kill -9", signal.SIGKILL), ("SIGTERM", signal.SIGTERM)), 1
        ):
            progress(f"{mode} and restart")
            stop_s = server.stop(sig)
            server.start()
            figures = asyncio.run(_after_start(server, first, f"fresh-{number}"))
            result.restarts.append(RestartFigures(mode, stop_s, *figures))
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)
    return result
