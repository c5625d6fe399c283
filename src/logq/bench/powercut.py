"""`logq bench powercut`: power cuts at random points of a recorded run.

A run of the workload (powercut_workload.py) is recorded once by a
`DiskRecorder` (crash_disk.py); then, for each of many random cut points,
the disk a power cut there could leave is written into a fresh directory,
an embedded broker is opened on it (its clock at the run's time of the
cut), and the broker is checked against every acknowledgement given
before the cut:

- every acknowledged publish is there, byte for byte, at its offset;
- nothing read or delivered is anything but a message the run published
  at that place (a torn or stale batch is never served), and no message of
  a topic deleted before the cut comes back;
- no message acknowledged by a group is delivered to it again;
- nothing is delivered before its time: a delayed publish before its
  deliver-at, a nacked message before the end of its acknowledged delay;
- each acknowledged dead-letter move left exactly one letter in the DLQ,
  and the group does not get the message again;
- after the drain (each delivery is acked at once), no message was
  delivered twice to one group.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from logq.bench.crash_disk import DiskRecorder
from logq.bench.powercut_workload import (
    TOPICS,
    Published,
    Run,
    Settlement,
    Workload,
    broker_config,
    group_name,
)
from logq.broker import Broker, FakeClock
from logq.broker.dead_letters import HEADER_GROUP, HEADER_ORIGIN_ID
from logq.broker.messages import Message
from logq.errors import LogqError

READ_PAGE = 1_000
DRAIN_PAGE = 500
# After the first drain at the cut's time, the clock jumps this far (past
# every lease, delay and dead-letter hold of the workload) and drains again.
LATER_MS = 2 * 3_600_000
FAILURES_KEPT = 5  # of each kind, described in the report; the rest only counted


@dataclass(frozen=True, slots=True)
class PowercutSettings:
    cuts: int = 500
    seed: int = 1
    runs: int = 1  # recorded workload runs (seeds seed, seed + 1, ...); cuts shared out
    rounds: int = 160  # workload steps per run
    directory: Path | None = None  # scratch space (default: a temporary directory)


@dataclass(slots=True)
class PowercutReport:
    runs: int = 0
    ops_recorded: int = 0
    acknowledged: int = 0  # publishes, settlements and steps acknowledged in the runs
    cuts: int = 0
    failed_open: int = 0
    lost_publishes: int = 0
    lost_acks: int = 0  # acked messages delivered again
    lost_dead_letters: int = 0  # acknowledged moves missing from the DLQ, or delivered again
    served_twice: int = 0
    served_early: int = 0
    torn_reads: int = 0  # served bytes that are no message published there
    read_errors: int = 0  # reads or receives that failed after recovery
    seconds: float = 0.0
    recovery_ms_max: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return (
            self.failed_open
            + self.lost_publishes
            + self.lost_acks
            + self.lost_dead_letters
            + self.served_twice
            + self.served_early
            + self.torn_reads
            + self.read_errors
        )

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "failed": self.failed}


@dataclass(slots=True)
class Recording:
    seed: int
    recorder: DiskRecorder
    run: Run
    by_value: dict[tuple[str, bytes], list[Published]]


def record(seed: int, rounds: int, directory: Path) -> Recording:
    """Run the workload once on `directory`, recording every file operation."""
    root = directory / "data"
    root.mkdir(parents=True)
    recorder = DiskRecorder(root)

    async def main() -> Run:
        clock = FakeClock()
        with recorder.recording():
            broker = await Broker.open(broker_config(root), clock=clock)
            workload = Workload(broker, clock, recorder, seed)
            try:
                await workload.setup()
                await workload.rounds(rounds)
            finally:
                await broker.close()
        return workload.run

    run = asyncio.run(main())
    by_value: dict[tuple[str, bytes], list[Published]] = {}
    for published in run.published:
        by_value.setdefault((published.topic, published.value), []).append(published)
    return Recording(seed, recorder, run, by_value)


@dataclass(slots=True)
class _Cut:
    """One check's view of the run: what was acknowledged before the cut."""

    recording: Recording
    cut: int
    now_ms: int
    report: PowercutReport

    def fail(self, counter: str, text: str) -> None:
        count = getattr(self.report, counter) + 1
        setattr(self.report, counter, count)
        if count <= FAILURES_KEPT:
            self.report.failures.append(
                f"seed {self.recording.seed}, cut after op {self.cut} of "
                f"{self.recording.recorder.count}: {counter}: {text}"
            )

    def done(self, count: int) -> bool:
        return count <= self.cut

    def deleted(self, topic: str, generation: int) -> bool:
        return any(
            s.kind == "delete"
            and s.topic == topic
            and s.generation == generation
            and self.done(s.done)
            for s in self.recording.run.steps
        )

    def stable_generation(self, topic: str) -> int | None:
        """The generation of `topic` that must exist after the cut, if one must."""
        stable = None
        for step in self.recording.run.steps:
            if step.topic != topic or step.kind == "redrive":
                continue
            if step.start >= self.cut:
                break  # not begun before the cut
            if step.kind == "create":
                stable = step.generation if self.done(step.done) else None
            else:
                stable = None  # deleted, or being deleted
        return stable


async def _check(broker: Broker, view: _Cut) -> None:
    groups = [
        (topic, name)
        for topic, _, names in TOPICS
        for group, _ in names
        for name in {group_name(group, 0), group_name(group, 1)}
        if topic in broker.topics and f"{topic}/{name}" in broker.groups
    ]
    for topic, _, _ in TOPICS:
        await _check_stored(broker, view, topic)
    delivered: dict[tuple[str, str], Counter[tuple[int, int]]] = {key: Counter() for key in groups}
    for topic, group in groups:  # at the cut's time: nothing before it is due
        now = await _drain(broker, view, topic, group, delivered[(topic, group)])
        _check_due(view, topic, group, now)
    for _ in range(2):  # then past every lease, delay and hold
        broker.clock.advance(LATER_MS)  # type: ignore[attr-defined]
        try:
            await broker.tick()
        except LogqError as error:
            view.fail("read_errors", f"timer after the cut: {error}")
        for topic, group in groups:
            for message in await _drain(broker, view, topic, group, delivered[(topic, group)]):
                _matches(view, message, f"{topic}/{group}")
    for (topic, group), counts in delivered.items():
        _check_settled(view, topic, group, counts)
    for topic in ("orders", "events"):
        await _check_dead_letters(broker, view, topic)


def _matches(view: _Cut, message: Message, where: str) -> Published | None:
    """The publish `message` is, or None after reporting it as torn."""
    candidates = view.recording.by_value.get((message.topic, message.value or b""), [])
    for published in candidates:  # a dedup retry after the topic was made again: two places
        if (
            (published.partition, published.offset) == (message.partition, message.offset)
            and published.key == message.key
            and all(message.headers.get(k) == v for k, v in published.headers.items())
        ):
            break
    else:
        view.fail(
            "torn_reads", f"{where}: {message.id} holds {message.value!r:.60} (no such publish)"
        )
        return None
    if view.deleted(published.topic, published.generation):
        view.fail(
            "torn_reads", f"{where}: {message.id} of a topic deleted before the cut came back"
        )
        return None
    return published


async def _check_stored(broker: Broker, view: _Cut, topic: str) -> None:
    stable = view.stable_generation(topic)
    if topic not in broker.topics:
        if stable is not None:
            view.fail("lost_publishes", f"topic {topic} (generation {stable}) is gone")
        return
    stored: dict[tuple[int, int], Message] = {}
    for partition in range(len(broker.topics[topic].partitions)):
        offset = 0
        while True:
            try:
                page = await broker.read_messages(topic, partition, offset=offset, limit=READ_PAGE)
            except LogqError as error:
                view.fail("read_errors", f"read {topic}:{partition}:{offset}: {error}")
                break
            for message in page:
                if _matches(view, message, "read") is not None:
                    stored[(partition, message.offset)] = message
            if len(page) < READ_PAGE:
                break
            offset = page[-1].offset + 1
    for published in view.recording.run.published:
        if (
            published.topic == topic
            and published.generation == stable
            and view.done(published.done)
            and (published.partition, published.offset) not in stored
        ):
            view.fail(
                "lost_publishes",
                f"{topic}:{published.partition}:{published.offset} acknowledged at op "
                f"{published.done} is missing",
            )


async def _drain(
    broker: Broker, view: _Cut, topic: str, group: str, delivered: Counter[tuple[int, int]]
) -> list[Message]:
    got: list[Message] = []
    while True:
        try:
            page = await broker.receive(topic, group, "after", max_messages=DRAIN_PAGE)
            if page:
                await broker.ack(topic, group, [m.receipt for m in page])
        except LogqError as error:
            view.fail("read_errors", f"receive {topic}/{group}: {error}")
            return got
        if not page:
            return got
        for message in page:
            delivered[(message.partition, message.offset)] += 1
        got.extend(page)


def _settled(view: _Cut, topic: str, group: str) -> list[Settlement]:
    generation = view.stable_generation(topic)
    return [
        s
        for s in view.recording.run.settlements
        if s.topic == topic
        and s.group == group
        and s.generation == generation
        and view.done(s.done)
    ]


def _check_due(view: _Cut, topic: str, group: str, delivered: list[Message]) -> None:
    due = {
        (s.partition, s.offset): s.due_ms for s in _settled(view, topic, group) if s.kind == "nack"
    }
    for message in delivered:
        published = _matches(view, message, f"{topic}/{group}")
        if published is None:
            continue
        at = published.deliver_at_ms
        nack_due = due.get((message.partition, message.offset), 0)
        if (at is not None and at > view.now_ms) or nack_due > view.now_ms:
            view.fail(
                "served_early",
                f"{message.id} delivered to {group} at {view.now_ms}, due at {max(at or 0, nack_due)}",
            )


def _check_settled(view: _Cut, topic: str, group: str, delivered: Counter[tuple[int, int]]) -> None:
    for (partition, offset), count in delivered.items():
        if count > 1:
            view.fail(
                "served_twice", f"{topic}:{partition}:{offset} delivered {count} times to {group}"
            )
    for s in _settled(view, topic, group):
        if (
            s.kind in ("ack", "reject")
            and (s.partition, s.offset) in delivered
            and not _redriven(view, s)
        ):
            counter = "lost_acks" if s.kind == "ack" else "lost_dead_letters"
            view.fail(
                counter,
                f"{topic}:{s.partition}:{s.offset} {s.kind}ed by {group} at op {s.done} was delivered again",
            )


def _redriven(view: _Cut, settlement: Settlement) -> bool:
    """Whether a redrive of the topic began after `settlement` and before the cut."""
    if settlement.kind != "reject":
        return False
    return any(
        s.kind == "redrive"
        and s.topic == settlement.topic
        and s.start >= settlement.done
        and s.start < view.cut
        for s in view.recording.run.steps
    )


async def _check_dead_letters(broker: Broker, view: _Cut, topic: str) -> None:
    if topic not in broker.topics:
        return  # reported as lost publishes when it must exist
    try:
        letters = await broker.dlq_messages(topic, limit=10_000)
    except LogqError as error:
        view.fail("read_errors", f"dlq of {topic}: {error}")
        return
    held = Counter((m.headers.get(HEADER_ORIGIN_ID), m.headers.get(HEADER_GROUP)) for m in letters)
    for s in view.recording.run.settlements:
        if s.kind != "reject" or s.topic != topic or not view.done(s.done) or _redriven(view, s):
            continue
        count = held[(f"{topic}:{s.partition}:{s.offset}", s.group)]
        if count != 1:
            view.fail(
                "lost_dead_letters",
                f"{topic}:{s.partition}:{s.offset} rejected by {s.group} at op {s.done}: "
                f"{count} letters in the DLQ",
            )


def check_cut(
    recording: Recording, cut: int, rng: random.Random, scratch: Path, report: PowercutReport
) -> None:
    """Materialise one power cut after op `cut` and check the broker that opens on it."""
    target = scratch / "cut"
    if target.exists():
        shutil.rmtree(target)
    recording.recorder.materialise(cut, rng, target)
    view = _Cut(recording, cut, recording.run.now_at(cut), report)
    report.cuts += 1

    async def main() -> None:
        started = time.perf_counter()
        try:
            broker = await Broker.open(broker_config(target), clock=FakeClock(view.now_ms))
        except Exception as error:
            view.fail("failed_open", f"{type(error).__name__}: {error}")
            return
        report.recovery_ms_max = max(report.recovery_ms_max, (time.perf_counter() - started) * 1000)
        try:
            await _check(broker, view)
        finally:
            await broker.close()

    asyncio.run(main())


def run_powercut(
    settings: PowercutSettings, progress: Callable[[str], None] | None = None
) -> PowercutReport:
    report = PowercutReport()
    started = time.perf_counter()
    logq_logger = logging.getLogger("logq")
    level = logq_logger.level
    with tempfile.TemporaryDirectory(
        prefix="logq-powercut-", dir=settings.directory
    ) as scratch_name:
        scratch = Path(scratch_name)
        for number in range(settings.runs):
            seed = settings.seed + number
            recording = record(seed, settings.rounds, scratch / f"run-{number}")
            report.runs += 1
            report.ops_recorded += recording.recorder.count
            run = recording.run
            report.acknowledged += len(run.published) + len(run.settlements) + len(run.steps)
            if progress is not None:
                progress(
                    f"run {number + 1}: seed {seed}, {recording.recorder.count:,} operations recorded"
                )
            cuts = settings.cuts // settings.runs + (number < settings.cuts % settings.runs)
            rng = random.Random(seed)
            logq_logger.setLevel(logging.CRITICAL)  # recoveries report what they cut: expected here
            try:
                for done in range(cuts):
                    check_cut(
                        recording, rng.randint(0, recording.recorder.count), rng, scratch, report
                    )
                    if progress is not None and (done + 1) % 500 == 0:
                        progress(f"run {number + 1}: {done + 1:,} cuts, {report.failed} failures")
            finally:
                logq_logger.setLevel(level)
            shutil.rmtree(scratch / f"run-{number}")
    report.seconds = time.perf_counter() - started
    return report
