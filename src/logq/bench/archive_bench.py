"""`logq bench archive`: what tiered storage costs and gives, in one run.

Real `logq serve` children on fresh data directories, against moto's S3
server started here (or a store given with `--store URL`):

- `publish_ratio`: publish throughput (batches of 1000) of a broker that
  archives the topic, divided by that of one without an archive, the two
  alternated `rounds` times on the same machine (medians compared);
- `upload_mb_per_s`: bytes uploaded divided by the time from the first
  publish of the last archived round to the moment nothing waits for
  upload (the archive keeping up with the publishes, then catching up);
- `cold_replay_ratio`: the throughput of a replay from offset 0 (`READ`,
  stored batches, as a group catching up reads them) of a partition whose
  disk was trimmed to `local_bytes`, after a restart (the read cache starts
  empty), divided by that of the same replay from a broker whose disk
  holds everything (1.0: the archive reads as fast as the disk);
- `first_read_ms`: the first message of that cold replay, round trip;
- `cache_hit_rate`: chunk reads served by the cache in a second pass;
- `lost`: acknowledged messages a replay did not return (must be 0).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from logq.bench.chaos_server import ServerProcess, free_port
from logq.client import Client
from logq.log import decode_batch
from logq.log.batch import iter_headers

TOPIC = "bench"
BATCH = 1000
READ_BYTES = 1 << 20
SEGMENT_BYTES = 1 << 20
BUCKET = "logq-bench"


@dataclass(frozen=True, slots=True)
class ArchiveBenchSettings:
    messages: int = 200_000
    message_bytes: int = 100
    rounds: int = 3  # alternations of archiving on and off
    local_bytes: int = 1 << 20  # what the archived partition keeps on disk
    segment_bytes: int = SEGMENT_BYTES
    store: str | None = None  # None: moto's S3 server, started here
    endpoint: str | None = None  # --store s3://...: an S3-compatible server's address
    directory: Path | None = None


@dataclass(slots=True)
class ArchiveBenchResult:
    store: str
    messages: int
    message_bytes: int
    rounds: int
    publish_on_per_s: float
    publish_off_per_s: float
    publish_ratio: float
    upload_mb_per_s: float
    uploaded_bytes: int
    local_replay_s: float
    cold_replay_s: float
    cold_replay_ratio: float
    first_read_ms: float
    cache_hit_rate: float
    remote_reads: int
    trimmed_offsets: int
    lost: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with a bucket: its address."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
                urllib.request.urlopen(request, timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


def _values(settings: ArchiveBenchSettings) -> Iterator[list[bytes]]:
    """The messages in batches: each starts with its number, padded to size."""
    for first in range(0, settings.messages, BATCH):
        count = min(BATCH, settings.messages - first)
        yield [
            f"{n:012d}".encode().ljust(settings.message_bytes, b".")
            for n in range(first, first + count)
        ]


class ArchiveBench:
    def __init__(self, settings: ArchiveBenchSettings, progress: Callable[[str], None]) -> None:
        self.settings = settings
        self.progress = progress
        self._endpoint_key = ""

    def run(self) -> ArchiveBenchResult:
        settings = self.settings
        directory = settings.directory or Path(tempfile.mkdtemp(prefix="logq-bench-archive-"))
        directory.mkdir(parents=True, exist_ok=True)
        try:
            if settings.store is not None:
                return self._run(directory, settings.store, settings.endpoint)
            for name, value in {
                "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_REGION": "us-east-1",
            }.items():
                os.environ.setdefault(name, value)
            with moto_server() as endpoint:
                return self._run(directory, f"s3://{BUCKET}/{directory.name}", endpoint)
        finally:
            if settings.directory is None:
                shutil.rmtree(directory, ignore_errors=True)

    def _server(self, directory: Path, name: str, archive: str | None) -> ServerProcess:
        config = directory / f"{name}.yaml"
        text = f"broker: {{segmentBytes: {self.settings.segment_bytes}}}\n"
        if archive is not None:
            text += f"archive: {{url: '{archive}', tickMs: 100{self._endpoint_key}}}\n"
        config.write_text(text)
        return ServerProcess(
            directory / name, directory / f"{name}.log", extra=("--config", str(config))
        )

    def _run(self, directory: Path, store: str, endpoint: str | None) -> ArchiveBenchResult:
        settings = self.settings
        self._endpoint_key = f", endpoint: '{endpoint}'" if endpoint else ""
        on_rates: list[float] = []
        off_rates: list[float] = []
        upload = (0.0, 0)
        last_on = last_off = None
        for round_number in range(settings.rounds):
            order = (True, False) if round_number % 2 == 0 else (False, True)
            for archived in order:
                name = f"{'on' if archived else 'off'}-{round_number}"
                server = self._server(directory, name, store if archived else None)
                server.start()
                try:
                    rate, seconds, uploaded = self._publish(server, archived)
                finally:
                    server.stop()
                (on_rates if archived else off_rates).append(rate)
                if archived:
                    upload, last_on = (seconds, uploaded), server
                else:
                    last_off = server
                self.progress(f"round {round_number + 1}, {name}: {rate:,.0f} msg/s")
        assert last_on is not None and last_off is not None
        local_s, local_lost = self._replay_local(last_off)
        cold = self._replay_cold(last_on)
        on, off = statistics.median(on_rates), statistics.median(off_rates)
        seconds, uploaded = upload
        return ArchiveBenchResult(
            store=store,
            messages=settings.messages,
            message_bytes=settings.message_bytes,
            rounds=settings.rounds,
            publish_on_per_s=round(on),
            publish_off_per_s=round(off),
            publish_ratio=round(on / off, 3) if off else 0.0,
            upload_mb_per_s=round(uploaded / seconds / 1e6, 2) if seconds else 0.0,
            uploaded_bytes=uploaded,
            local_replay_s=round(local_s, 3),
            cold_replay_s=round(cold["seconds"], 3),
            # the same messages both ways: throughput ratio = inverse time ratio
            cold_replay_ratio=round(local_s / cold["seconds"], 3) if cold["seconds"] else 0.0,
            first_read_ms=round(cold["first_ms"], 2),
            cache_hit_rate=round(cold["hit_rate"], 3),
            remote_reads=int(cold["remote_reads"]),
            trimmed_offsets=int(cold["trimmed"]),
            lost=max(local_lost, int(cold["lost"])),
        )

    def _publish(self, server: ServerProcess, archived: bool) -> tuple[float, float, int]:
        """Publish everything: (msg/s, seconds until uploads caught up, bytes uploaded)."""
        with Client(server.address) as client:
            options: dict[str, Any] = (
                {"archive": True, "local_retention_bytes": self.settings.local_bytes}
                if archived
                else {}
            )
            client.create_topic(TOPIC, partitions=1, **options)
            batches = list(_values(self.settings))
            started = time.perf_counter()
            for batch in batches:
                client.publish_many(TOPIC, batch)
            rate = self.settings.messages / (time.perf_counter() - started)
            if not archived:
                return rate, 0.0, 0
            status = self._caught_up(client)
            return rate, time.perf_counter() - started, int(status["uploaded_bytes"])

    @staticmethod
    def _caught_up(client: Client, timeout_s: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            status = client.archive_status(TOPIC)
            part = status["partitions"][0]
            if part["upload_lag_bytes"] == 0 and part["local_from"] > 0:
                return status
            if time.monotonic() > deadline:
                raise RuntimeError(f"the archive did not catch up: {part}")
            time.sleep(0.05)

    def _replay(self, client: Client) -> tuple[float, int]:
        """Read everything from offset 0 as stored batches (`READ`, as a group
        catching up reads), checking each message: (seconds, acknowledged
        messages not returned)."""
        started = time.perf_counter()
        expected = 0
        lost = 0
        while expected < self.settings.messages:
            data = client.call("READ", TOPIC, 0, expected, "MAXBYTES", READ_BYTES)
            if not isinstance(data, bytes) or not data:
                break
            for position, _ in iter_headers(data):
                for record in decode_batch(data, position).records():
                    if record.offset < expected:
                        continue
                    if record.offset != expected or (record.value or b"")[:12] != (
                        f"{expected:012d}".encode()
                    ):
                        lost += 1
                    expected = record.offset + 1
        lost += max(0, self.settings.messages - expected)
        return time.perf_counter() - started, lost

    def _replay_local(self, server: ServerProcess) -> tuple[float, int]:
        server.start()
        try:
            with Client(server.address) as client:
                self._replay(client)  # the page cache warmed as for the archive's first pass
                return self._replay(client)
        finally:
            server.stop()

    def _replay_cold(self, server: ServerProcess) -> dict[str, float]:
        server.start()  # a restart: the read cache starts empty
        try:
            with Client(server.address) as client:
                trimmed = client.archive_status(TOPIC)["partitions"][0]["local_from"]
                started = time.perf_counter()
                client.call("READ", TOPIC, 0, 0, "MAXBYTES", 1)
                first_ms = (time.perf_counter() - started) * 1000
                seconds, lost = self._replay(client)
                before = client.archive_status(TOPIC)
                _, lost_again = self._replay(client)
                after = client.archive_status(TOPIC)
        finally:
            server.stop()
        hits = after["cache_hits"] - before["cache_hits"]
        misses = after["cache_misses"] - before["cache_misses"]
        return {
            "seconds": seconds,
            "first_ms": first_ms,
            "lost": max(lost, lost_again),
            "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
            "remote_reads": before["remote_reads"],
            "trimmed": trimmed,
        }


def run_archive_bench(
    settings: ArchiveBenchSettings, progress: Callable[[str], None] = lambda _: None
) -> ArchiveBenchResult:
    return ArchiveBench(settings, progress).run()
