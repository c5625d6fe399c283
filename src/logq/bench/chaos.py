"""`logq bench chaos`: kill the broker at random moments, many times, and prove
nothing acknowledged went wrong.

A real `logq serve` child runs on a data directory. Idempotent producers
publish numbered messages, some delayed and some marked for rejection, while
a consumer of a shared group receives them, acks them, and rejects the
marked ones into the DLQ. A driver SIGKILLs the server at a random moment,
then restarts it on the same directory and ports, for `cycles` rounds. The
clients ride through on their own reconnects and retries. Then the server
restarts once more, the consumer drains what is left, and the checker
(chaos_check.py) reads everything back. Three modes add to the run:

- `redrive`: a redriver hands rejected messages' letters back to the group
  while the run goes on, and the server kills itself (LOGQ_FAULT_CRASH)
  between the steps of some redrives, on top of the driver's kills; the
  consumer rejects a marked message the first time it sees it and acks it
  when it comes back;
- `dedup`: every message carries a dedup id; a batch's messages go to
  distinct keys; what a kill failed is sent again through a fresh producer
  (a new producer id: only the dedup id can tell) until acknowledged, and
  every few batches a whole acknowledged batch is sent again on purpose;
- `delays`: a share of the messages are due at times of their own, a few
  seconds ahead, and a share carry a TTL of their own; the topic
  dead-letters what expires.

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
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from logq.bench.chaos_check import (
    GROUP,
    TOPIC,
    ChaosReport,
    ChaosState,
    Fields,
    check,
    fields_of,
    value_of,
)
from logq.bench.chaos_server import ServerProcess, free_port
from logq.client import AsyncClient, AsyncProducer, MessageData, PublishResult
from logq.client.connection import ConnectionLostError
from logq.errors import LogqError, TopicNotFoundError

PAGE = 1000
CALL_TIMEOUT_S = 60.0  # a client call rides through any restart (backoff to 1 s)
HEADER_EXPIRES_AT = "logq-expires-at"
_CLIENT_ERRORS = (LogqError, ConnectionLostError, OSError, TimeoutError)

__all__ = ["ChaosReport", "ChaosSettings", "ServerProcess", "free_port", "run_chaos"]


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
    # redrive mode
    redrive: bool = False
    redrive_every_s: tuple[float, float] = (0.1, 0.6)  # between two redrive calls
    crash_chance: float = 0.1  # of the server killing itself at each step of a redrive
    crash_delay_ms: int = 300  # most time it runs on before (clients act meanwhile)
    crash_points: str = ""  # LOGQ_FAULT_CRASH as given (empty: both steps at crash_chance)
    # dedup mode
    dedup: bool = False
    resend_every: int = 5  # every n-th batch is sent again, whole, on purpose
    send_timeout_s: float = 3.0  # a send fails after this (a kill): sent again, same id
    resend_for_s: float = 300.0  # a message is sent again until acknowledged, this long
    # delays mode
    delays: bool = False
    due_every: int = 5  # every n-th message is due...
    due_s: tuple[float, float] = (1.0, 4.0)  # ...this far ahead, each at its own time
    ttl_every: int = 7  # every n-th message (not due later) expires...
    ttl_ms: tuple[int, int] = (300, 2500)  # ...this long after its publish
    # archive mode
    archive: str | None = None  # "file": a directory store in the run's directory; or a URL
    archive_endpoint: str | None = None  # an S3-compatible server's address


ARCHIVE_SEGMENT_BYTES = 16 << 10
ARCHIVE_LOCAL_BYTES = 32 << 10


@dataclass(frozen=True, slots=True)
class _Outgoing:
    value: bytes
    key: str | None
    partition: int | None
    due_ms: int
    ttl_ms: int
    dedup_id: str | None


@contextlib.asynccontextmanager
async def _client(address: str) -> AsyncIterator[AsyncClient]:
    """A client whose first connection also rides through a restart."""
    client = AsyncClient(address, request_timeout_s=CALL_TIMEOUT_S)
    try:
        await client.call("PING")
        yield client
    finally:
        await client.close()


class Chaos:
    def __init__(self, settings: ChaosSettings, progress: Callable[[str], None]) -> None:
        self.settings = settings
        self.progress = progress
        self.random = random.Random(settings.seed)
        self.state = ChaosState()
        self.send_error = ""  # the last send that failed, for the report's examples
        self.report = ChaosReport(
            mode=",".join(
                name
                for name in ("redrive", "dedup", "delays", "archive")
                if getattr(settings, name)
            )
            or "base"
        )

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
            self.report.example(
                "the broker's disk was never trimmed: nothing read from the archive"
            )

    def _environment(self) -> dict[str, str]:
        if not self.settings.redrive:
            return {}
        chance = self.settings.crash_chance
        return {
            "LOGQ_FAULT_CRASH": self.settings.crash_points
            or f"redrive.held={chance},redrive.handed_back={chance}",
            "LOGQ_FAULT_CRASH_DELAY_MS": str(self.settings.crash_delay_ms),
        }

    async def run(self) -> ChaosReport:
        settings = self.settings
        directory = settings.data_dir or Path(tempfile.mkdtemp(prefix="logq-chaos-"))
        directory.mkdir(parents=True, exist_ok=True)
        server = ServerProcess(
            directory / "data",
            directory / "server.log",
            self._environment(),
            self._archive_arguments(directory),
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
                    ttl_dead_letter=True if settings.delays else None,
                    dedup_window="1d" if settings.dedup else None,
                    archive=True if settings.archive else None,
                    local_retention_bytes=ARCHIVE_LOCAL_BYTES if settings.archive else None,
                )
                await admin.put_group(
                    TOPIC, GROUP, mode="shared", visibility_timeout=settings.visibility_timeout_ms
                )
            workers = [
                asyncio.create_task(self._produce(server.address, index))
                for index in range(settings.producers)
            ]
            if settings.redrive:
                workers.append(asyncio.create_task(self._redrive(server.address)))
            consumer = asyncio.create_task(self._consume(server.address))
            for cycle in range(settings.cycles):
                up_s = self.random.uniform(*settings.up_s)
                if await loop.run_in_executor(None, server.wait_exit, up_s):
                    self.report.fault_kills += 1  # it killed itself inside a redrive
                else:
                    await loop.run_in_executor(None, server.kill)
                await loop.run_in_executor(None, server.start)
                self.report.cycles = cycle + 1
                self.progress(
                    f"cycle {cycle + 1}/{settings.cycles}: "
                    f"{len(self.state.acknowledged)} publishes acknowledged"
                )
            self.state.producing = False
            finishing = asyncio.gather(*workers)
            while not (await asyncio.wait({finishing}, timeout=0.2))[0]:
                if server.process is not None and server.process.poll() is not None:
                    self.report.fault_kills += 1  # inside a redrive the workers still await
                    await loop.run_in_executor(None, server.start)
            await finishing
            await loop.run_in_executor(None, server.stop)
            await loop.run_in_executor(None, server.start)  # a clean restart before the check
            async with _client(server.address) as admin:
                stored = await self._read_all(admin)
                await self._drain(admin, stored)
                self.state.consuming = False
                await consumer
                letters = await self._all_dead_letters(admin)
                listed = await admin.dlq(TOPIC, limit=10_000) if letters else []
                pending = await self._pending(admin)
                check(
                    self.report,
                    self.state,
                    stored,
                    letters,
                    listed,
                    pending,
                    keys=settings.batch if settings.dedup else None,
                    redrive=settings.redrive,
                )
                if settings.archive:
                    await self._check_archive(admin)
            self.report.fault_kills += server.died_starting
            failed = not self.report.ok
        finally:
            server.stop()
            if settings.data_dir is None and not failed:
                shutil.rmtree(directory, ignore_errors=True)
            elif failed:
                progress(f"kept {directory} for a look")
        self.report.seconds = round(time.monotonic() - started, 2)
        return self.report

    # -- producers ------------------------------------------------------------------

    def _message(self, producer: int, sequence: int) -> _Outgoing:
        settings = self.settings
        now_ms = int(time.time() * 1000)
        due_ms = ttl_ms = 0
        reject = sequence % settings.reject_every == 0
        if settings.delays:
            if sequence % settings.due_every == 1:
                due_ms = now_ms + int(self.random.uniform(*settings.due_s) * 1000)
            elif sequence % settings.ttl_every == 3 and not reject:
                ttl_ms = self.random.randint(*settings.ttl_ms)
        elif sequence % settings.delayed_every == 0:
            due_ms = now_ms + settings.delay_ms
        kind = "r" if reject else "t" if ttl_ms else "a"
        value = value_of(Fields(producer, sequence, due_ms, kind, ttl_ms, now_ms))
        if settings.dedup:  # one key per slot of a batch: one message of a key in flight
            key = f"k{(sequence - 1) % settings.batch}"
            return _Outgoing(value, key, None, due_ms, ttl_ms, f"{producer}:{sequence}")
        return _Outgoing(value, None, sequence % settings.partitions, due_ms, ttl_ms, None)

    async def _produce(self, address: str, index: int) -> None:
        settings = self.settings
        async with _client(address) as client:
            producer = self._producer(client)
            sequence = batches = 0
            while self.state.producing:
                while len(self.state.acknowledged) - len(self.state.delivered) > (
                    settings.backlog_max
                ):  # let the consumer keep up, so the drain stays short
                    await asyncio.sleep(0.01)
                    if not self.state.producing:
                        return
                batch = []
                for _ in range(settings.batch):
                    sequence += 1
                    batch.append(self._message(index, sequence))
                failed = await self._send(producer, batch)
                attempts, first_failed = 1, time.monotonic()
                while failed and settings.dedup:  # again, as a producer the app started anew
                    if time.monotonic() - first_failed > settings.resend_for_s:
                        self.report.dedup_unacknowledged += len(failed)
                        self.report.example(
                            f"{len(failed)} sent {attempts} times, none acknowledged;"
                            f" the last error: {self.send_error}"
                        )
                        break
                    attempts += 1
                    self.report.dedup_retries += len(failed)
                    producer = await self._fresh(client, producer)
                    failed = await self._send(producer, failed, again=True)
                batches += 1
                if settings.dedup and batches % settings.resend_every == 0:
                    producer = await self._fresh(client, producer)
                    self.report.dedup_resent += len(batch)
                    await self._send(producer, batch, again=True)
            await self._fresh(client, producer)

    def _producer(self, client: AsyncClient) -> AsyncProducer:
        if self.settings.dedup:  # sends fail within an outage, to be sent again
            return client.producer(linger_ms=2, delivery_timeout_s=self.settings.send_timeout_s)
        return client.producer(linger_ms=2)

    async def _fresh(self, client: AsyncClient, producer: AsyncProducer) -> AsyncProducer:
        """Close `producer` (what it still holds fails or lands) and make a new one."""
        with contextlib.suppress(*_CLIENT_ERRORS):
            await producer.close()
        return self._producer(client)

    async def _send(
        self, producer: AsyncProducer, batch: list[_Outgoing], *, again: bool = False
    ) -> list[_Outgoing]:
        """Send `batch` and await it; the messages that failed."""
        sent: list[tuple[_Outgoing, asyncio.Future[PublishResult]]] = []
        for message in batch:
            future = await producer.send(
                TOPIC,
                message.value,
                key=message.key,
                partition=message.partition,
                deliver_at=message.due_ms or None,
                ttl=message.ttl_ms or None,
                dedup_id=message.dedup_id,
            )
            sent.append((message, future))
        failed: list[_Outgoing] = []
        for message, future in sent:
            try:
                result = await future
            except _CLIENT_ERRORS as error:
                if not again:
                    self.report.publishes_failed += 1
                self.send_error = f"{type(error).__name__}: {error}"
                failed.append(message)
                continue
            place = (result.partition, result.offset)
            first = self.state.acknowledged.setdefault(message.value, place)
            if first != place:
                self.report.dedup_answer_differs += 1
                self.report.example(f"acknowledged at {first}, then at {place}: {message.value!r}")
        return failed

    # -- the consumer and the redriver ----------------------------------------------

    async def _consume(self, address: str) -> None:
        state = self.state
        async with _client(address) as client:
            while state.consuming:
                asked_ms = int(time.time() * 1000)
                try:
                    messages = await client.receive(TOPIC, GROUP, max=200, wait="200ms")
                except _CLIENT_ERRORS:
                    await asyncio.sleep(0.05)
                    continue
                now_ms = int(time.time() * 1000)
                accepted: dict[str, bytes] = {}
                for message in messages:
                    value = message.value or b""
                    found = fields_of(value)
                    first = self._delivered(message, found, asked_ms, now_ms)
                    # receipts (id@lease): a settlement the client sends again after
                    # a kill must not act on a later delivery (a redriven one, say)
                    if found.kind == "r" and (first or not self.settings.redrive):
                        await self._reject(client, message.receipt, value)
                    else:
                        accepted[message.receipt] = value
                if not accepted:
                    continue
                # "work" on them a little, so kills also land between a delivery and its ack
                await asyncio.sleep(self.random.uniform(0, self.settings.work_s))
                state.ack_attempted.update(accepted.values())
                try:
                    settled = await client.ack(TOPIC, GROUP, list(accepted))
                except _CLIENT_ERRORS:
                    continue
                if settled == len(accepted):  # every one of them confirmed
                    for value in accepted.values():
                        state.acked[value] = state.delivered[value]

    def _delivered(self, message: MessageData, found: Fields, asked_ms: int, now_ms: int) -> bool:
        """Note one delivery; whether it is the first the consumer saw."""
        report, state = self.report, self.state
        value = message.value or b""
        report.deliveries += 1
        if value in state.acked:
            report.redelivered_after_ack += 1
            report.example(f"redelivered after its ack: {value!r}")
        first = not state.delivered[value]
        if not first:
            report.redeliveries += 1
        state.delivered[value] += 1
        if found.due_ms and now_ms < found.due_ms:
            report.delivered_early += 1
            report.example(f"delivered {found.due_ms - now_ms} ms early: {value!r}")
        expires = message.headers.get(HEADER_EXPIRES_AT, "")
        if found.ttl_ms and (not expires.isdecimal() or asked_ms >= int(expires)):
            # asked for after it expired: the broker handed it out after that
            report.delivered_after_expiry += 1
            report.example(f"delivered after it expired at {expires or '?'}: {value!r}")
        return first

    async def _reject(self, client: AsyncClient, message_id: str, value: bytes) -> None:
        self.state.reject_calls[value] += 1
        try:
            if await client.reject(TOPIC, GROUP, [message_id], reason="chaos"):
                self.state.rejected.add(value)
        except _CLIENT_ERRORS:
            pass  # redelivered after its lease unless it moved, then seen again

    async def _redrive(self, address: str) -> None:
        """Hand a random share of the rejected messages' letters back, again
        and again, while the producers run."""
        async with _client(address) as client:
            while self.state.producing:
                await asyncio.sleep(self.random.uniform(*self.settings.redrive_every_s))
                try:
                    letters = await client.dlq(TOPIC, limit=PAGE)
                    ids = [
                        letter.id
                        for letter in letters
                        if fields_of(letter.value or b"").kind == "r" and self.random.random() < 0.7
                    ]
                    if not ids:
                        continue
                    self.report.redrive_calls += 1
                    self.report.redriven_confirmed += await client.redrive(TOPIC, ids)
                except _CLIENT_ERRORS:
                    self.report.redrive_calls_failed += 1

    # -- reading back -----------------------------------------------------------------

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
        it makes progress. A message past its TTL need not come."""
        state = self.state
        progress, seen = time.monotonic(), -1
        while time.monotonic() - progress < self.settings.stall_s:
            now_ms = int(time.time() * 1000)
            delivered = all(
                state.delivered[value] or _expired(fields_of(value), now_ms) for value in stored
            )
            if delivered and await self._pending(client) == 0:
                return
            if self.report.deliveries != seen:
                progress, seen = time.monotonic(), self.report.deliveries
            await asyncio.sleep(0.2)

    async def _pending(self, client: AsyncClient) -> int:
        """What the group has not settled (in flight included)."""
        described = await client.describe_group(TOPIC, GROUP)
        return int(described["lag"])

    @staticmethod
    async def _all_dead_letters(client: AsyncClient) -> list[MessageData]:
        """Every letter stored in the DLQ (redriven ones too), read from its
        one partition a page at a time: a long run has more than one listing
        returns."""
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


def _expired(found: Fields, now_ms: int) -> bool:
    """Past its TTL for sure (the publish came before the producer read the clock)."""
    return bool(found.ttl_ms) and now_ms > found.sent_ms + found.ttl_ms


def run_chaos(
    settings: ChaosSettings, progress: Callable[[str], None] = lambda _: None
) -> ChaosReport:
    return asyncio.run(Chaos(settings, progress).run())
