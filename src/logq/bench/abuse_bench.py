"""`logq bench abuse`: hostile sockets against a broker with auth on, while
a signed-in client works.

A `logq serve` child with authentication on (a fresh admin token) and the
default limits is started, unless a server is given (then `--token` signs
the client in). `sockets` anonymous sockets, in a process of their own,
attack it for `seconds`; each, when the server closes it, waits a second
and comes back:

- a third trickle a native command one byte a second (a slow handshake);
- a third trickle an HTTP request header one byte a second;
- a third send an unfinished native `PING` whose argument says 60 MB, as
  fast as the server takes it.

Meanwhile the signed-in client publishes one message and receives and acks
it, in a loop; its round trips give the p50 and p99. The server's RSS is
read before the attack, at its peak (sampled every 100 ms), and after the
attackers have gone; the server's own counters say how many sockets it
closed and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing
import resource
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from logq.bench.broker_bench import rss_bytes, running_server
from logq.bench.delay_bench import percentile
from logq.client import AsyncClient

RECONNECT_WAIT_S = 1.0
LARGE_FRAME_BYTES = 60_000_000
CHUNK = b"x" * 65536


@dataclass(frozen=True, slots=True)
class AbuseBenchSettings:
    sockets: int = 1000
    seconds: float = 60.0
    server: str | None = None
    http: str | None = None  # host:port of the HTTP listener of a given server
    token: str | None = None  # signs the client in to a given server


@dataclass(frozen=True, slots=True)
class AbuseBenchResult:
    sockets: int
    seconds: float
    round_trips: int
    round_trip_ms_p50: float
    round_trip_ms_p99: float
    round_trip_ms_max: float
    rss_bytes_before: int | None
    rss_bytes_peak: int | None
    rss_bytes_after: int | None
    attacker_connects: int
    attacker_bytes_sent: int
    closed_handshake_timeout: int
    closed_idle_timeout: int
    closed_http_header_timeout: int
    closed_http_body_timeout: int
    closed_to_make_room: int
    closed_oversize: int
    refused: int
    server: str

    @property
    def rss_growth_bytes(self) -> int | None:
        if self.rss_bytes_before is None or self.rss_bytes_peak is None:
            return None
        return self.rss_bytes_peak - self.rss_bytes_before

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rss_growth_bytes": self.rss_growth_bytes}


def raise_open_files(wanted: int) -> None:
    """Raise this process's soft limit of open files toward `wanted` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# -- the attackers (a process of their own) --------------------------------------------------


async def _attacker(kind: str, host: str, port: int, deadline: float, totals: list[int]) -> None:
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(RECONNECT_WAIT_S)
            continue
        totals[0] += 1
        try:
            if kind == "large":
                writer.write(b"*2\r\n$4\r\nPING\r\n$%d\r\n" % LARGE_FRAME_BYTES)
                while time.monotonic() < deadline and not reader.at_eof():
                    writer.write(CHUNK)
                    totals[1] += len(CHUNK)
                    await asyncio.wait_for(writer.drain(), timeout=1)
            else:
                start = (
                    b"*2\r\n$4\r\nPING\r\n$100000\r\n"
                    if kind == "slow-native"
                    else b"GET /v1/topics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
                )
                writer.write(start)
                while time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(reader.read(4096), timeout=1) == b"":
                            break  # closed by the server
                    writer.write(b"x")
                    totals[1] += 1
                    await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()
        await asyncio.sleep(RECONNECT_WAIT_S)


def _attack(
    native: tuple[str, int], http: tuple[str, int], sockets: int, seconds: float, out: Any
) -> None:
    async def main() -> list[int]:
        totals = [0, 0]  # connects, bytes sent
        deadline = time.monotonic() + seconds
        kinds = ("slow-native", "slow-http", "large")
        tasks = []
        for index in range(sockets):
            kind = kinds[index % 3]
            host, port = http if kind == "slow-http" else native
            tasks.append(asyncio.create_task(_attacker(kind, host, port, deadline, totals)))
            if index % 100 == 99:
                await asyncio.sleep(0.05)  # open them over a moment, as a crowd would
        await asyncio.gather(*tasks, return_exceptions=True)
        return totals

    out.put(asyncio.run(main()))


# -- the signed-in client ------------------------------------------------------------------------


async def _work(client: AsyncClient, seconds: float) -> list[float]:
    topic = f"bench-abuse-{secrets.token_hex(3)}"
    await client.create_topic(topic, partitions=1)
    round_trips: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        await client.publish(topic, b"m" * 100)
        (message,) = await client.receive(topic, "bench", max=1, wait="5s")
        await message.ack()
        round_trips.append((time.perf_counter() - started) * 1000)
    await client.delete_topic(topic)
    return round_trips


def run_abuse_bench(
    settings: AbuseBenchSettings, progress: Callable[[str], None]
) -> AbuseBenchResult:
    raise_open_files(settings.sockets * 2 + 1024)
    with _server(settings) as (address, http, token, pid):
        native_host, native_port = address.rsplit(":", 1)
        http_host, http_port = http.rsplit(":", 1)

        async def main() -> AbuseBenchResult:
            async with AsyncClient(address, token=token) as client:
                await client.ping()
                before = rss_bytes(pid)
                peak = [before or 0]

                async def sample() -> None:
                    while True:
                        peak[0] = max(peak[0], rss_bytes(pid) or 0)
                        await asyncio.sleep(0.1)

                sampler = asyncio.create_task(sample())
                context = multiprocessing.get_context("spawn")
                results = context.Queue()
                attackers = context.Process(
                    target=_attack,
                    args=(
                        (native_host, int(native_port)),
                        (http_host, int(http_port)),
                        settings.sockets,
                        settings.seconds,
                        results,
                    ),
                )
                attackers.start()
                progress(f"{settings.sockets} hostile sockets for {settings.seconds:g} s")
                round_trips = await _work(client, settings.seconds)
                totals = await asyncio.get_running_loop().run_in_executor(None, results.get)
                attackers.join(30)
                await asyncio.sleep(1)  # the server notices the last closes
                sampler.cancel()
                after = rss_bytes(pid)
                stats = await client.stats()
            ordered = sorted(round_trips)
            return AbuseBenchResult(
                sockets=settings.sockets,
                seconds=settings.seconds,
                round_trips=len(ordered),
                round_trip_ms_p50=percentile(ordered, 0.50),
                round_trip_ms_p99=percentile(ordered, 0.99),
                round_trip_ms_max=ordered[-1] if ordered else 0.0,
                rss_bytes_before=before,
                rss_bytes_peak=peak[0] if pid is not None else None,
                rss_bytes_after=after,
                attacker_connects=totals[0],
                attacker_bytes_sent=totals[1],
                closed_handshake_timeout=int(stats.get("connections_timed_out_handshake", 0)),
                closed_idle_timeout=int(stats.get("connections_timed_out_idle", 0)),
                closed_http_header_timeout=int(stats.get("connections_timed_out_http_header", 0)),
                closed_http_body_timeout=int(stats.get("connections_timed_out_http_body", 0)),
                closed_to_make_room=int(stats.get("connections_evicted", 0)),
                closed_oversize=int(stats.get("connections_closed_oversize", 0)),
                refused=int(stats.get("connections_refused", 0)),
                server=address,
            )

        return asyncio.run(main())


@contextlib.contextmanager
def _server(settings: AbuseBenchSettings) -> Iterator[tuple[str, str, str | None, int | None]]:
    """(native address, HTTP host:port, token, pid) of the server to attack."""
    if settings.server is not None:
        http = settings.http or settings.server
        yield settings.server, http, settings.token, None
        return
    token = secrets.token_urlsafe(32)
    stored = "sha256$" + hashlib.sha256(token.encode()).hexdigest()
    with tempfile.TemporaryDirectory(prefix="logq-abuse-") as directory:
        config = Path(directory) / "logq.yaml"
        config.write_text(f'auth:\n  users:\n    bench: {{token: "{stored}", roles: [admin]}}\n')
        with running_server(None, "--config", str(config)) as running:
            assert running.http is not None
            http = running.http.split("://", 1)[-1].rstrip("/")
            yield running.address, http, token, running.pid
