"""The traffic `logq bench corrupt` runs on a real broker before it damages the directory.

A `logq serve` child with small storage thresholds (segments of 4 KiB,
dense indexes, frequent checkpoints, state snapshots and commit journal
flushes: every kind of file of docs/format.md exists after a short run)
takes, in two runs on the same directory:

1. topics with an ordered group, a shared group and a delayed topic;
   publishes in batches, receives and acks; a graceful stop, after which
   the directory is copied whole (the stale copies a trial may put back);
2. a group setting changed (its metadata record moves to its other slot),
   more publishes (some delayed by a moment, some by an hour), receives
   with acks, nacks and leases left open; then a stop, by SIGKILL or
   SIGTERM as the seed says.

Every value carries its topic, its number and a CRC32 of both, so a reader
can tell a served value from damaged bytes without any other record; the
run also notes each acknowledged publish by id, and per group the ids
delivered and the ids acked.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from logq.client import Client

READY = re.compile(r"logq ready: native (\S+):(\d+) http (\S+) ")
# (topic, partitions, group, mode)
TOPICS: tuple[tuple[str, int, str, str], ...] = (
    ("ord", 2, "o", "ordered"),
    ("shr", 2, "s", "shared"),
    ("dly", 1, "d", "shared"),
)
CONSUMER = "bench"
LEASE = "120s"  # no lease of the run expires while a trial checks
LONG_DELAY = "1h"  # a trial must not deliver these
SHORT_DELAY = "200ms"  # due before any trial starts
VALUE_FILLER = 40
CONFIG = """\
broker:
  fsync: always
  segmentBytes: 4096
  indexIntervalBytes: 256
  checkpointIntervalBytes: 2048
  snapshotBytes: 3072
  commitFlushBytes: 12288
  scrubBytesPerSecond: 67108864
limits:
  diskFreeMinBytes: 0
"""


def make_value(topic: str, number: int) -> bytes:
    body = f"{topic}|{number}|{'x' * VALUE_FILLER}"
    return f"{body}|{zlib.crc32(body.encode()):08x}".encode()


def value_intact(value: bytes | None) -> bool:
    """Whether `value` is one `make_value` made, checked by its own CRC32."""
    if value is None:
        return False
    body, _, crc = value.rpartition(b"|")
    return len(crc) == 8 and crc == f"{zlib.crc32(body):08x}".encode()


class Server:
    """`logq serve` on a data directory, on free loopback ports (port 0)."""

    def __init__(self, data_dir: Path, config: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.config = config
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.native = ""
        self.http = ""
        self._log_start = 0

    def start(self, timeout_s: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self._log_start = log.tell()
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "logq",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--config",
                    str(self.config),
                    "--port",
                    "0",
                    "--http-port",
                    "0",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = READY.search(self.output())
            if found:
                self.native = f"{found.group(1)}:{found.group(2)}"
                self.http = found.group(3)
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"logq serve did not start:\n{self.output()[-3000:]}")

    def output(self) -> str:
        """What the server wrote since its start."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass(slots=True)
class Prepared:
    """A stopped broker's directory and what its run acknowledged."""

    seed: int
    data_dir: Path
    stale_dir: Path  # the directory as the first run's graceful stop left it
    config: Path
    killed: bool
    published: dict[str, bytes] = field(default_factory=dict)  # acknowledged, by id
    long_delayed: set[str] = field(default_factory=set)
    delivered: dict[str, set[str]] = field(default_factory=dict)  # by "topic/group"
    acked: dict[str, set[str]] = field(default_factory=dict)


class _Traffic:
    def __init__(self, client: Client, prepared: Prepared, rng: random.Random) -> None:
        self.client = client
        self.prepared = prepared
        self.rng = rng
        self.numbers = dict.fromkeys((t for t, *_ in TOPICS), 0)

    def publish(self, topic: str, count: int, delay: str | None = None) -> None:
        messages = []
        for _ in range(count):
            messages.append({"value": make_value(topic, self.numbers[topic]), "delay": delay})
            self.numbers[topic] += 1
        for message, result in zip(
            messages, self.client.publish_many(topic, messages), strict=True
        ):
            self.prepared.published[result.id] = message["value"]  # type: ignore[assignment]
            if delay == LONG_DELAY:
                self.prepared.long_delayed.add(result.id)

    def consume(self, topic: str, group: str, count: int, settle: bool) -> None:
        key = f"{topic}/{group}"
        messages = self.client.receive(topic, group, consumer=CONSUMER, max=count)
        self.prepared.delivered.setdefault(key, set()).update(m.id for m in messages)
        if not settle or not messages:
            return
        acked = [m.id for m in messages if self.rng.random() < 0.8]
        nacked = [m.id for m in messages if m.id not in acked]
        if acked:
            self.client.ack(topic, group, acked)
            self.prepared.acked.setdefault(key, set()).update(acked)
        if nacked:
            self.client.nack(topic, group, nacked, delay="100ms")

    def round(self, rounds: int) -> None:
        for _ in range(rounds):
            for topic, _, group, _ in TOPICS:
                self.publish(topic, self.rng.randint(5, 25))
                self.consume(topic, group, self.rng.randint(5, 30), settle=True)


def prepare(seed: int, directory: Path) -> Prepared:
    """Run the two runs of the module doc on `directory/data` (the stale copy beside it)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.yaml"
    config.write_text(CONFIG)
    prepared = Prepared(
        seed, directory / "data", directory / "stale", config, killed=rng.random() < 0.5
    )
    server = Server(prepared.data_dir, config, directory / "prepare.log")
    server.start()
    try:
        with Client(server.native) as client:
            traffic = _Traffic(client, prepared, rng)
            for topic, partitions, group, mode in TOPICS:
                client.create_topic(topic, partitions=partitions)
                client.put_group(topic, group, mode=mode, visibility_timeout=LEASE)
            traffic.round(rng.randint(4, 7))
    finally:
        server.stop()
    shutil.copytree(prepared.data_dir, prepared.stale_dir)
    server.start()
    try:
        with Client(server.native) as client:
            traffic = _Traffic(client, prepared, rng)
            traffic.numbers = {
                topic: sum(
                    1 for v in prepared.published.values() if v.startswith(f"{topic}|".encode())
                )
                for topic in traffic.numbers
            }
            client.put_group("shr", "s", mode="shared", visibility_timeout="90s")
            traffic.round(rng.randint(3, 6))
            traffic.publish("dly", rng.randint(3, 10), delay=SHORT_DELAY)
            traffic.publish("dly", rng.randint(3, 10), delay=LONG_DELAY)
            for topic, _, group, _ in TOPICS:  # leases left open at the stop
                traffic.consume(topic, group, rng.randint(1, 10), settle=False)
    finally:
        if prepared.killed:
            server.kill()
        else:
            server.stop()
    return prepared
