"""`logq bench chaos`: kill the broker at random moments, many times, and prove
nothing acknowledged went wrong.

A real `logq serve` child runs on a data directory. Idempotent producers
publish numbered messages, some delayed and some marked for rejection, while
a consumer of a shared group receives them, acks them, and rejects the
marked ones into the DLQ. A driver SIGKILLs the server at a random moment,
then restarts it on the same directory and ports, for `cycles` rounds. The
clients ride through on their own reconnects and retries. Then the server
restarts once more, the consumer drains what is left, and the checker reads
everything back:

- `lost`: acknowledged publishes that are not stored where they were
  acknowledged;
- `duplicates`: messages stored more than once (the idempotent producer's
  retries after a crash must not store twice);
- `out_of_order`: one producer's messages to one partition not in the order
  it sent them;
- `redelivered_after_ack`: deliveries of a message after its ack was
  confirmed;
- `never_delivered`: stored messages the group never received;
- `unsettled`: messages the group still holds once drained;
- `delivered_early`: delayed messages delivered before their due time;
- `dlq_missing`, `dlq_duplicates`, `dlq_unexpected`: the dead letters are
  exactly the rejected messages, each once.

Each of these must be 0.

With `archive` (`logq bench chaos --archive [URL]`) the broker archives the
topic (a file:// store in the run's directory unless a URL is given: an
s3:// one with `archive_endpoint`), rolls segments of 16 KiB and keeps 32 KiB
of each partition on its disk, so the kills land inside uploads, manifest
records and local trims, and both the group and the final read from offset
0 reach most of the topic through the archive. The report then also says
how much of the topic was read from the store (`archive_remote_reads`) and
how far the disk was trimmed (`trimmed_offsets`); a run whose disk was never
trimmed proved nothing about the archive and counts `archive_unused`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from logq.client import AsyncClient, MessageData
from logq.client.connection import ConnectionLostError
from logq.errors import LogqError, TopicNotFoundError

TOPIC = "chaos"
GROUP = "workers"
READY = re.compile(r"logq ready: native ")
PAGE = 1000
CALL_TIMEOUT_S = 60.0  # a client call rides through any restart (backoff to 1 s)
_CLIENT_ERRORS = (LogqError, ConnectionLostError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    cycles: int = 20
    partitions: int = 3
    producers: int = 2
    batch: int = 20  # messages a producer queues before awaiting them
    up_s: tuple[float, float] = (0.3, 1.2)  # random time the server runs before a kill
    delayed_every: int = 25  # every n-th message of a producer is delayed...
    delay_ms: int = 800  # ...by this much
    reject_every: int = 31  # every n-th message is rejected by the consumer
    visibility_timeout_ms: int = 1500
    work_s: float = 0.05  # most time the consumer holds a batch before acking it
    backlog_max: int = 3000  # producers wait while this many are undelivered
    stall_s: float = 20.0  # the final drain gives up after this long without progress
    seed: int | None = None
    data_dir: Path | None = None
    archive: str | None = None  # "file": a directory store in the run's directory; or a URL
    archive_endpoint: str | None = None  # an S3-compatible server's address


ARCHIVE_SEGMENT_BYTES = 16 << 10
ARCHIVE_LOCAL_BYTES = 32 << 10


@dataclass(slots=True)
class ChaosReport:
    cycles: int = 0
    seconds: float = 0.0
    publishes_acknowledged: int = 0
    publishes_failed: int = 0  # not acknowledged: may or may not be stored
    stored: int = 0
    deliveries: int = 0
    redeliveries: int = 0  # deliveries after the first (leases lost to a kill, then expired)
    acks_confirmed: int = 0
    rejects_confirmed: int = 0
    delayed: int = 0
    dead_letters: int = 0
    lost: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    redelivered_after_ack: int = 0
    never_delivered: int = 0
    unsettled: int = 0
    delivered_early: int = 0
    dlq_missing: int = 0
    dlq_duplicates: int = 0
    dlq_unexpected: int = 0
    archive_remote_reads: int = 0
    trimmed_offsets: int = 0  # offsets of the topic no longer on the broker's disk
    archive_unused: int = 0  # 1: an archive run whose disk was never trimmed
    examples: list[str] = field(default_factory=list)

    VIOLATIONS = (
        "lost",
        "duplicates",
        "out_of_order",
        "redelivered_after_ack",
        "never_delivered",
        "unsettled",
        "delivered_early",
        "dlq_missing",
        "dlq_duplicates",
        "dlq_unexpected",
        "archive_unused",
    )

    @property
    def ok(self) -> bool:
        return all(getattr(self, name) == 0 for name in self.VIOLATIONS)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768 up), so that the
    servers and clients other programs start meanwhile cannot take it
    while the server is down between a kill and its restart."""
    for _ in range(1000):
        port = random.randint(20_000, 32_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000..32000")


class ServerProcess:
    """`logq serve` on fixed ports and a data directory, killed and restarted at will."""

    def __init__(self, data_dir: Path, log_path: Path, extra: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra = extra
        self.native_port = free_port()
        self.http_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.native_port}"

    def start(self, timeout_s: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            start = log.tell()
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "logq",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.native_port),
                    "--http-port",
                    str(self.http_port),
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as log:
                log.seek(start)
                if READY.search(log.read().decode(errors="replace")):
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"logq serve did not start; {self.log_path} ends with:\n{tail}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def pause(self, seconds: float) -> None:
        """SIGSTOP for `seconds`, then SIGCONT: a broker that hangs, connections open."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.asynccontextmanager
async def _client(address: str) -> AsyncIterator[AsyncClient]:
    """A client whose first connection also rides through a restart."""
    client = AsyncClient(address, request_timeout_s=CALL_TIMEOUT_S)
    try:
        await client.call("PING")
        yield client
    finally:
        await client.close()


def _value(producer: int, sequence: int, due_ms: int, reject: bool) -> bytes:
    return f"{producer}:{sequence}:{due_ms}:{'r' if reject else 'a'}".encode()


def _fields(value: bytes) -> tuple[int, int, int, bool]:
    producer, sequence, due, kind = value.decode().split(":")
    return int(producer), int(sequence), int(due), kind == "r"


@dataclass(slots=True)
class _State:
    acknowledged: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    acked: dict[bytes, int] = field(default_factory=dict)  # value -> delivery count at confirm
    rejected: set[bytes] = field(default_factory=set)
    delivered: Counter[bytes] = field(default_factory=Counter)
    producing: bool = True
    consuming: bool = True


class Chaos:
    def __init__(self, settings: ChaosSettings, progress: Callable[[str], None]) -> None:
        self.settings = settings
        self.progress = progress
        self.random = random.Random(settings.seed)
        self.state = _State()
        self.report = ChaosReport()

    async def run(self) -> ChaosReport:
        settings = self.settings
        directory = settings.data_dir or Path(tempfile.mkdtemp(prefix="logq-chaos-"))
        directory.mkdir(parents=True, exist_ok=True)
        server = ServerProcess(
            directory / "data", directory / "server.log", self._archive_arguments(directory)
        )
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        failed, progress = True, self.progress
        try:
            await loop.run_in_executor(None, server.start)
            async with _client(server.address) as admin:
                await admin.create_topic(
                    TOPIC,
                    partitions=settings.partitions,
                    archive=True if settings.archive else None,
                    local_retention_bytes=ARCHIVE_LOCAL_BYTES if settings.archive else None,
                )
                await admin.put_group(
                    TOPIC, GROUP, mode="shared", visibility_timeout=settings.visibility_timeout_ms
                )
            producers = [
                asyncio.create_task(self._produce(server.address, index))
                for index in range(settings.producers)
            ]
            consumer = asyncio.create_task(self._consume(server.address))
            for cycle in range(settings.cycles):
                await asyncio.sleep(self.random.uniform(*settings.up_s))
                await loop.run_in_executor(None, server.kill)
                await loop.run_in_executor(None, server.start)
                self.report.cycles = cycle + 1
                self.progress(
                    f"cycle {cycle + 1}/{settings.cycles}: "
                    f"{len(self.state.acknowledged)} publishes acknowledged"
                )
            self.state.producing = False
            await asyncio.gather(*producers)
            await loop.run_in_executor(None, server.stop)
            await loop.run_in_executor(None, server.start)  # a clean restart before the check
            async with _client(server.address) as admin:
                stored = await self._read_all(admin)
                await self._drain(admin, stored)
                self.state.consuming = False
                await consumer
                await self._check(admin, stored)
                if settings.archive:
                    await self._check_archive(admin)
            failed = not self.report.ok
        finally:
            server.stop()
            if settings.data_dir is None and not failed:
                shutil.rmtree(directory, ignore_errors=True)
            elif failed:
                progress(f"kept {directory} for a look")
        self.report.seconds = round(time.monotonic() - started, 2)
        return self.report

    def _archive_arguments(self, directory: Path) -> tuple[str, ...]:
        """`--config` of an archiving broker (nothing without `archive`)."""
        archive = self.settings.archive
        if archive is None:
            return ()
        url = f"file://{directory / 'archive'}" if archive == "file" else archive
        endpoint = self.settings.archive_endpoint
        config = directory / "logq.yaml"
        config.write_text(
            f"broker: {{segmentBytes: {ARCHIVE_SEGMENT_BYTES}}}\n"
            f"archive: {{url: '{url}', tickMs: 100"
            + (f", endpoint: '{endpoint}'" if endpoint else "")
            + "}\n"
        )
        return ("--config", str(config))

    async def _check_archive(self, client: AsyncClient) -> None:
        """How much of the topic the reads took from the store (the counters
        are the last start's: the final read from offset 0)."""
        status = await client.archive_status(TOPIC)
        self.report.trimmed_offsets = sum(int(p["local_from"]) for p in status["partitions"])
        self.report.archive_remote_reads = int(status.get("remote_reads", 0))
        if self.report.trimmed_offsets == 0:
            self.report.archive_unused = 1
            self._example("the broker's disk was never trimmed: nothing read from the archive")

    async def _produce(self, address: str, index: int) -> None:
        settings = self.settings
        async with _client(address) as client:
            producer = client.producer(linger_ms=2)
            sequence = 0
            while self.state.producing:
                while len(self.state.acknowledged) - len(self.state.delivered) > (
                    settings.backlog_max
                ):  # let the consumer keep up, so the drain stays short
                    await asyncio.sleep(0.01)
                    if not self.state.producing:
                        return
                sent: list[tuple[bytes, asyncio.Future[Any]]] = []
                for _ in range(settings.batch):
                    sequence += 1
                    delayed = sequence % settings.delayed_every == 0
                    due = int(time.time() * 1000) + settings.delay_ms if delayed else 0
                    value = _value(index, sequence, due, sequence % settings.reject_every == 0)
                    future = await producer.send(
                        TOPIC,
                        value,
                        partition=sequence % settings.partitions,
                        delay=settings.delay_ms if delayed else None,
                    )
                    sent.append((value, future))
                for value, future in sent:
                    try:
                        result = await future
                    except _CLIENT_ERRORS:
                        self.report.publishes_failed += 1
                    else:
                        self.state.acknowledged[value] = (result.partition, result.offset)

    async def _consume(self, address: str) -> None:
        state = self.state
        async with _client(address) as client:
            while state.consuming:
                try:
                    messages = await client.receive(TOPIC, GROUP, max=200, wait="200ms")
                except _CLIENT_ERRORS:
                    await asyncio.sleep(0.05)
                    continue
                now_ms = int(time.time() * 1000)
                accept: list[str] = []
                accepted: list[bytes] = []
                for message in messages:
                    value = message.value or b""
                    self.report.deliveries += 1
                    if value in state.acked:
                        self.report.redelivered_after_ack += 1
                        self._example(f"redelivered after its ack: {value!r}")
                    if state.delivered[value]:
                        self.report.redeliveries += 1
                    state.delivered[value] += 1
                    _, _, due, reject = _fields(value)
                    if due and now_ms < due:
                        self.report.delivered_early += 1
                        self._example(f"delivered {due - now_ms} ms early: {value!r}")
                    if reject:
                        try:
                            if await client.reject(TOPIC, GROUP, [message.id], reason="chaos"):
                                state.rejected.add(value)
                        except _CLIENT_ERRORS:
                            pass  # redelivered after its lease, then rejected again
                    else:
                        accept.append(message.id)
                        accepted.append(value)
                if not accept:
                    continue
                # "work" on them a little, so kills also land between a delivery and its ack
                await asyncio.sleep(self.random.uniform(0, self.settings.work_s))
                try:
                    settled = await client.ack(TOPIC, GROUP, accept)
                except _CLIENT_ERRORS:
                    continue
                if settled == len(accept):  # every one of them confirmed
                    for value in accepted:
                        state.acked[value] = state.delivered[value]

    async def _read_all(self, client: AsyncClient) -> dict[bytes, list[tuple[int, int]]]:
        """Every stored message: value -> where it is (more than one place is a duplicate)."""
        stored: dict[bytes, list[tuple[int, int]]] = {}
        for partition in range(self.settings.partitions):
            offset = 0
            while True:
                page = await client.peek(TOPIC, partition=partition, offset=offset, limit=PAGE)
                for message in page:
                    stored.setdefault(message.value or b"", []).append((partition, message.offset))
                if len(page) < PAGE:
                    break
                offset = page[-1].offset + 1
        return stored

    async def _drain(self, client: AsyncClient, stored: dict[bytes, list[tuple[int, int]]]) -> None:
        """Let the consumer settle everything stored (leases held at a kill
        come back after the visibility timeout, delayed ones when due), while
        it makes progress."""
        state = self.state
        progress, seen = time.monotonic(), -1
        while time.monotonic() - progress < self.settings.stall_s:
            delivered = all(state.delivered[value] for value in stored)
            if delivered and await self._pending(client) == 0:
                return
            if self.report.deliveries != seen:
                progress, seen = time.monotonic(), self.report.deliveries
            await asyncio.sleep(0.2)

    async def _pending(self, client: AsyncClient) -> int:
        """What the group has not settled (in flight included)."""
        described = await client.describe_group(TOPIC, GROUP)
        return int(described["lag"])

    async def _check(self, client: AsyncClient, stored: dict[bytes, list[tuple[int, int]]]) -> None:
        report, state = self.report, self.state
        report.publishes_acknowledged = len(state.acknowledged)
        report.stored = sum(len(places) for places in stored.values())
        report.acks_confirmed = len(state.acked)
        report.rejects_confirmed = len(state.rejected)
        report.delayed = sum(1 for value in stored if _fields(value)[2])
        for value, place in state.acknowledged.items():
            if place not in stored.get(value, []):
                report.lost += 1
                self._example(f"acknowledged at {place}, not stored there: {value!r}")
        for value, places in stored.items():
            if len(places) > 1:
                report.duplicates += len(places) - 1
                self._example(f"stored {len(places)} times at {places}: {value!r}")
            if not state.delivered[value]:
                report.never_delivered += 1
                self._example(f"never delivered: {value!r}")
        last: dict[tuple[int, int], tuple[int, int]] = {}  # (producer, partition) -> (seq, offset)
        for value, places in sorted(stored.items(), key=lambda item: _fields(item[0])[:2]):
            producer, sequence, _, _ = _fields(value)
            partition, offset = places[0]
            before = last.get((producer, partition))
            if before is not None and before[1] > offset:
                report.out_of_order += 1
                self._example(f"{value!r} at offset {offset} after sequence {before[0]}")
            last[(producer, partition)] = (sequence, offset)
        report.unsettled = await self._pending(client)
        letters = await self._all_dead_letters(client)
        report.dead_letters = len(letters)
        found = Counter(letter.value or b"" for letter in letters)
        expected = {value for value in stored if _fields(value)[3]}
        report.dlq_missing = len(expected - set(found))
        report.dlq_unexpected = len(set(found) - expected)
        report.dlq_duplicates = sum(count - 1 for count in found.values() if count > 1)

    @staticmethod
    async def _all_dead_letters(client: AsyncClient) -> list[MessageData]:
        """Every letter stored in the DLQ (nothing here redrives or purges),
        read from its one partition a page at a time: a long run has more
        than one listing returns."""
        letters: list[MessageData] = []
        try:
            while page := await client.peek(
                f"{TOPIC}.dlq",
                partition=0,
                offset=letters[-1].offset + 1 if letters else 0,
                limit=10_000,
            ):
                letters += page
        except TopicNotFoundError:
            pass  # nothing was ever dead-lettered
        return letters

    def _example(self, text: str) -> None:
        if len(self.report.examples) < 20:
            self.report.examples.append(text)


def run_chaos(
    settings: ChaosSettings, progress: Callable[[str], None] = lambda _: None
) -> ChaosReport:
    return asyncio.run(Chaos(settings, progress).run())
