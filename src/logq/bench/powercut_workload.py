"""The workload a power-cut run records, and what it notes of each acknowledgement.

An embedded broker on a fake clock, with small segments, a small commit
journal flush threshold and a small state snapshot threshold (so rolls,
checkpoints, journal rotations and state generations all happen in a short
run), takes publishes (single and batches, keys, dedup ids, delays,
priorities), receives by a shared and an ordered group, acks, nacks with a
delay, rejects, leases left to expire while the clock moves, a redrive, and
a topic deleted and made again. Every call that returns notes the recorder's
operation count when it was made (`start`) and when it returned (`done`):
a power cut after operation `k` must keep everything with `done <= k`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from logq.bench.crash_disk import DiskRecorder
from logq.broker import Broker, BrokerConfig, FakeClock
from logq.broker.messages import Message, OutgoingMessage
from logq.errors import LogqError
from logq.log import FsyncPolicy, LogConfig

PRIORITIES = ("high", "normal", "low")
# (topic, partitions, groups as (name, mode))
TOPICS: tuple[tuple[str, int, tuple[tuple[str, str], ...]], ...] = (
    ("orders", 3, (("shared", "shared"), ("ordered", "ordered"))),
    ("events", 2, (("shared", "shared"),)),
    ("scratch", 1, (("shared", "shared"),)),  # deleted and made again mid-run
)
LEASE_MS = 20_000
DELAY_MS_MAX = 30_000
MAX_DELIVERIES = 6
# Small thresholds, so that a short run rolls segments, rotates the commit
# journal and starts state generations.
SEGMENT_BYTES = 48 * 1024
COMMIT_FLUSH_BYTES = 24 * 1024
SNAPSHOT_BYTES = 12 * 1024


def group_name(group: str, generation: int) -> str:
    """A topic made again gets its groups under their old names: they must
    start afresh (their state went with the topic's state logs)."""
    return group


def broker_config(data_dir: Path) -> BrokerConfig:
    return BrokerConfig(
        data_dir=data_dir,
        log=LogConfig(
            fsync=FsyncPolicy.ALWAYS,
            segment_bytes=SEGMENT_BYTES,
            index_interval_bytes=1024,
            checkpoint_interval_bytes=8 * 1024,
        ),
        snapshot_bytes=SNAPSHOT_BYTES,
        storage_threads=2,
        # rotate the commit journal often, so cuts fall in its flushes
        commit_flush_bytes=COMMIT_FLUSH_BYTES,
    )


@dataclass(frozen=True, slots=True)
class Published:
    topic: str
    generation: int  # of the topic: 1 after it was deleted and made again
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    deliver_at_ms: int | None
    start: int
    done: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """An ack, a nack with a delay, or a reject (a dead-letter move) of one message."""

    kind: str  # "ack", "nack", "reject"
    topic: str
    generation: int
    group: str
    partition: int
    offset: int
    due_ms: int  # nack: not deliverable before then
    start: int
    done: int


@dataclass(frozen=True, slots=True)
class Step:
    """A call with no per-message outcome: topic deletes, creates, redrives."""

    kind: str  # "delete", "create", "redrive"
    topic: str
    generation: int  # create: the generation made; delete: the one removed
    start: int
    done: int


@dataclass(slots=True)
class Run:
    """Everything the workload was told, by operation count."""

    published: list[Published] = field(default_factory=list)
    settlements: list[Settlement] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    clock: list[tuple[int, int]] = field(default_factory=list)  # (op count, now_ms) from then on
    errors: list[str] = field(default_factory=list)  # calls that failed in the recorded run

    def now_at(self, cut: int) -> int:
        """The clock's latest reading that a cut after operation `cut` may have seen."""
        now = self.clock[0][1]
        for count, now_ms in self.clock:
            if count > cut:
                break
            now = now_ms
        return now


class Workload:
    def __init__(self, broker: Broker, clock: FakeClock, recorder: DiskRecorder, seed: int) -> None:
        self.broker = broker
        self.clock = clock
        self.recorder = recorder
        self.rng = random.Random(seed)
        self.run = Run(clock=[(0, clock.now_ms())])
        self.generation = dict.fromkeys((name for name, _, _ in TOPICS), 0)
        self.sequence = 0
        self.dedup_sent: list[tuple[str, OutgoingMessage]] = []

    def _advance(self, milliseconds: int) -> None:
        self.clock.advance(milliseconds)
        self.run.clock.append((self.recorder.count, self.clock.now_ms()))

    async def setup(self) -> None:
        for name, partitions, groups in TOPICS:
            await self._create(name, partitions, groups)

    async def _create(
        self, name: str, partitions: int, groups: tuple[tuple[str, str], ...]
    ) -> None:
        start = self.recorder.count
        await self.broker.create_topic(name, {"partitions": partitions})
        for group, mode in groups:
            await self.broker.put_group(
                name,
                group_name(group, self.generation[name]),
                {"mode": mode, "visibility_timeout": LEASE_MS, "max_deliveries": MAX_DELIVERIES},
            )
        self.run.steps.append(
            Step("create", name, self.generation[name], start, self.recorder.count)
        )

    async def rounds(self, count: int) -> None:
        for number in range(count):
            choice = self.rng.random()
            try:
                if choice < 0.45:
                    await self.publish()
                elif choice < 0.85:
                    await self.receive_and_settle()
                elif choice < 0.95:
                    self._advance(self.rng.choice((5, 500, 3_000, LEASE_MS + 1_000)))
                    await self.broker.tick()
                else:
                    await self.redrive()
            except LogqError as error:
                self.run.errors.append(f"round {number}: {error}")
            if number == count // 2:
                await self.delete_and_recreate("scratch")

    def _message(self, topic: str) -> OutgoingMessage:
        self.sequence += 1
        padding = self.rng.randbytes(self.rng.randint(8, 400)).hex().encode()
        value = f"{topic}/{self.generation[topic]}/{self.sequence}/".encode() + padding
        rng = self.rng
        return OutgoingMessage(
            value=value,
            key=rng.choice((None, b"k1", b"k2", b"k3", rng.randbytes(6))),
            headers={"n": str(self.sequence)} if rng.random() < 0.5 else {},
            priority=rng.choice(PRIORITIES),
            deliver_at_ms=(
                self.clock.now_ms() + rng.randint(1, DELAY_MS_MAX) if rng.random() < 0.15 else None
            ),
        )

    async def publish(self) -> None:
        topic = self.rng.choice([name for name, _, _ in TOPICS])
        if self.dedup_sent and self.rng.random() < 0.1:
            topic, message = self.rng.choice(self.dedup_sent)  # a retry: stored once
            messages = [message]
        elif self.rng.random() < 0.4:
            messages = [self._message(topic)]
            if self.rng.random() < 0.4:
                messages[0].dedup_id = f"d{self.sequence}"
                self.dedup_sent.append((topic, messages[0]))
        else:
            messages = [self._message(topic) for _ in range(self.rng.randint(2, 25))]
        start = self.recorder.count
        results = await self.broker.publish(topic, messages)
        done = self.recorder.count
        for message, result in zip(messages, results, strict=True):
            assert message.value is not None
            self.run.published.append(
                Published(
                    topic,
                    self.generation[topic],
                    result.partition,
                    result.offset,
                    message.key,
                    message.value,
                    dict(message.headers),
                    message.deliver_at_ms,
                    start,
                    done,
                )
            )

    async def receive_and_settle(self) -> None:
        topic, _, groups = self.rng.choice(TOPICS)
        group = group_name(self.rng.choice(groups)[0], self.generation[topic])
        received = await self.broker.receive(
            topic, group, f"c{self.rng.randint(1, 2)}", max_messages=self.rng.randint(1, 40)
        )
        acks: list[Message] = []
        nacks: list[Message] = []
        rejects: list[Message] = []
        for message in received:
            roll = self.rng.random()
            if roll < 0.6:
                acks.append(message)
            elif roll < 0.72:
                nacks.append(message)
            elif roll < 0.77:
                rejects.append(message)
        if acks:
            await self._settle("ack", topic, group, acks, 0)
        if nacks:
            await self._settle("nack", topic, group, nacks, self.rng.randint(1, DELAY_MS_MAX))
        if rejects:
            await self._settle("reject", topic, group, rejects, 0)

    async def _settle(
        self, kind: str, topic: str, group: str, messages: list[Message], delay_ms: int
    ) -> None:
        receipts = [message.receipt for message in messages]
        start = self.recorder.count
        now_ms = self.clock.now_ms()
        if kind == "ack":
            await self.broker.ack(topic, group, receipts)
        elif kind == "nack":
            await self.broker.nack(topic, group, receipts, delay_ms=delay_ms)
        else:
            await self.broker.reject(topic, group, receipts, reason="powercut")
        done = self.recorder.count
        for message in messages:
            if kind == "nack" and message.attempt >= MAX_DELIVERIES:
                continue  # the nack dead-letters it: not a delay
            self.run.settlements.append(
                Settlement(
                    kind,
                    topic,
                    self.generation[topic],
                    group,
                    message.partition,
                    message.offset,
                    now_ms + delay_ms,
                    start,
                    done,
                )
            )

    async def redrive(self) -> None:
        topic = self.rng.choice(("orders", "events"))
        start = self.recorder.count
        await self.broker.redrive(topic)
        self.run.steps.append(
            Step("redrive", topic, self.generation[topic], start, self.recorder.count)
        )

    async def delete_and_recreate(self, name: str) -> None:
        start = self.recorder.count
        await self.broker.delete_topic(name)
        self.run.steps.append(
            Step("delete", name, self.generation[name], start, self.recorder.count)
        )
        self.generation[name] += 1
        for topic, partitions, groups in TOPICS:
            if topic == name:
                await self._create(name, partitions, groups)
