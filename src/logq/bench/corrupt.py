"""`logq bench corrupt`: one random damage per trial to a stopped broker's files.

A few directories are prepared by real runs (corrupt_workload.py); each
trial copies one afresh, damages one file (corrupt_damage.py), starts
`logq serve` on it and checks:

- it starts;
- no damaged byte is served: every value read (peek of every partition
  from offset 0) and delivered (a drain of every group) verifies its own
  CRC32 and is the value the run published at that id;
- nothing acknowledged is lost: every published id reads back unless its
  offset lies in a range the broker reports as damaged (`damaged` of the
  topic); a CORRUPT read outside every reported range is a violation;
- nothing is settled that was not delivered: after the drain, every stored
  message of a group's topic was delivered to it (before the stop, or in
  the drain), unless it waits out a long delay; none of those is delivered
  early; a message acked before the stop is delivered again only when the
  damage hit delivery state (a state log or the commit journal) and was
  reported;
- the damage is reported (after the scrubber's first pass, so damage in
  data no check reads is found as in production): the server logged a
  warning or error naming the
  damaged file (or the log directory it belongs to) and a damage figure of
  /metrics rose (`REPORT_METRICS`), unless the harness can show the damaged
  bytes unused (`_exemption`): an index that is still a correct sparse
  index of its segment (checked entry by entry against the batches), an
  offset index entry nobody used (every use is checked against the batch it
  points at and a mismatch reported, so with no report none was used), a
  state log's time index (state logs are never looked up by time), a
  commit journal file that held no record, an index of a segment holding
  no batch yet, or an older checkpoint (one the
  broker wrote itself: a durable point further back, after which recovery
  verifies every batch).
"""

from __future__ import annotations

import random
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from logq.bench.corrupt_damage import INDEX_KINDS, Damage, apply, index_still_correct
from logq.bench.corrupt_workload import (
    CONSUMER,
    TOPICS,
    Prepared,
    Server,
    make_value,
    prepare,
    value_intact,
)
from logq.client import Client
from logq.errors import LogqError

if TYPE_CHECKING:
    import httpx

PEEK_PAGE = 200
TIME_LOOKUPS = 8  # per partition
JOURNAL_HEADER_BYTES = 8  # a commit journal file's magic and version
SCRUB_WAIT_S = 10.0  # a pass over a trial's few hundred KiB takes milliseconds
AFTER_RESTART = 1_000_000  # numbers of the values published in a trial
DRAIN_PAGE = 200
# Figures of /metrics that count damage found on disk (summed over labels).
REPORT_METRICS = (
    "logq_damage_found_total",
    "logq_recovery_cut_bytes",
    "logq_metadata_slots_damaged_total",
    "logq_metadata_records_damaged",
    "logq_files_repaired_total",
    "logq_commit_journal_damaged_total",
    "logq_commit_journal_cut_bytes",
)
STATE_FILE_KINDS = frozenset({"state-segment", "commit-journal"})
FAILURES_KEPT = 20
WITHHELD = re.compile(r"metadata record '([^']+)' is damaged")
LOG_LINE = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) (.*)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class CorruptSettings:
    trials: int = 1000
    seed: int = 1
    prepared: int = 4  # directories prepared by real runs (seeds seed, seed + 1, ...)
    jobs: int = 1  # trials run at once
    directory: Path | None = None  # scratch space (default: a temporary directory)
    only_trial: int | None = None  # run this trial alone (to reproduce one)


@dataclass(slots=True)
class CorruptReport:
    trials: int = 0
    seconds: float = 0.0
    by_damage: Counter[str] = field(default_factory=Counter)
    by_file: Counter[str] = field(default_factory=Counter)
    reported: int = 0
    exempt: Counter[str] = field(default_factory=Counter)  # not reported, and needing no report
    violations: Counter[str] = field(default_factory=Counter)
    by_violation_file: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(self.violations.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "trials": self.trials,
            "seconds": round(self.seconds, 1),
            "by_damage": dict(self.by_damage),
            "by_file": dict(self.by_file),
            "reported": self.reported,
            "exempt": dict(self.exempt),
            "violations": dict(self.violations),
            "violations_by_file": dict(self.by_violation_file),
            "failed": self.failed,
            "failures": self.failures,
        }


@dataclass(slots=True)
class _Trial:
    number: int
    seed: int
    prepared: Prepared
    damage: Damage
    violations: list[tuple[str, str]] = field(default_factory=list)
    reported: bool = False
    exempt: str = ""  # why the damage needs no report, when it needs none
    # topics and groups whose metadata record the broker reported damaged: it
    # serves without them (docs/operations.md) and must keep their files
    withheld: set[str] = field(default_factory=set)
    published: dict[str, bytes] = field(default_factory=dict)  # after the restart

    def fail(self, kind: str, text: str) -> None:
        self.violations.append((kind, text))


def _damaged_ranges(http: httpx.Client) -> dict[tuple[str, int], list[tuple[int, int]]]:
    found: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for topic, *_ in TOPICS:
        described = http.get(f"/v1/topics/{topic}").json()
        for damaged in described.get("damaged", []):
            key = (topic, int(damaged["partition"]))
            found.setdefault(key, []).append((int(damaged["start"]), int(damaged["end"])))
    return found


def _covering(ranges: list[tuple[int, int]], offset: int) -> tuple[int, int] | None:
    return next(((s, e) for s, e in ranges if s <= offset < e), None)


def _offset(message_id: str) -> tuple[str, int, int]:
    topic, partition, offset = message_id.rsplit(":", 2)
    return topic, int(partition), int(offset)


def _check_value(trial: _Trial, message_id: str, value: bytes | None, where: str) -> None:
    expected = trial.prepared.published.get(message_id, trial.published.get(message_id))
    if not value_intact(value) or value != expected:
        trial.fail("served-damaged", f"{where} {message_id}: {value!r} (published {expected!r})")


def _withheld(output: str) -> set[str]:
    """Keys (`topic/<t>`, `group/<t>/<g>`) of the records the server logged as damaged."""
    return set(WITHHELD.findall(output))


def _read_all(trial: _Trial, client: Client, http: httpx.Client) -> set[str]:
    """Peek every partition whole; the ids read."""
    read: set[str] = set()
    for topic, partitions, *_ in TOPICS:
        if f"topic/{topic}" in trial.withheld:
            continue
        for partition in range(partitions):
            offset = 0
            limit = PEEK_PAGE
            stamps: list[tuple[int, int]] = []
            while True:
                try:
                    page = client.peek(topic, partition=partition, offset=offset, limit=limit)
                except LogqError as error:
                    if error.code != "CORRUPT":
                        trial.fail("read-error", f"peek {topic}:{partition}@{offset}: {error}")
                        break
                    ranges = _damaged_ranges(http).get((topic, partition), [])
                    covered = _covering(ranges, offset)
                    if covered is not None:
                        offset, limit = covered[1], PEEK_PAGE
                    elif limit > 1:
                        limit = 1  # the damage lies further on: read up to it one by one
                    else:
                        trial.fail("unreported-corrupt", f"{topic}:{partition}@{offset}: {error}")
                        offset += 1
                    continue
                if not page:
                    break
                for message in page:
                    _check_value(trial, message.id, message.value, "read")
                    read.add(message.id)
                    stamps.append((message.offset, message.timestamp_ms))
                offset = page[-1].offset + 1
            _check_time_lookups(trial, client, topic, partition, stamps)
    return read


def _check_time_lookups(
    trial: _Trial, client: Client, topic: str, partition: int, stamps: list[tuple[int, int]]
) -> None:
    """A peek from a time starts at the first message read at or after it
    (the time index may only make it scan more, never skip)."""
    for _, stamp in stamps[:: max(1, len(stamps) // TIME_LOOKUPS)]:
        first = min(o for o, t in stamps if t >= stamp)
        try:
            found = client.peek(topic, partition=partition, from_time=stamp, limit=1)
        except LogqError as error:
            if error.code != "CORRUPT":
                trial.fail("read-error", f"peek {topic}:{partition} from {stamp}: {error}")
            continue
        if not found or found[0].offset > first:
            got = found[0].offset if found else None
            trial.fail("time-lookup", f"{topic}:{partition} from {stamp}: {got}, expected {first}")


def _drain(trial: _Trial, client: Client, topic: str, group: str) -> list[str]:
    got: list[str] = []
    while True:
        try:
            messages = client.receive(topic, group, consumer=CONSUMER, max=DRAIN_PAGE)
        except LogqError as error:
            trial.fail("read-error", f"receive {topic}/{group}: {error}")
            return got
        if not messages:
            break
        for message in messages:
            _check_value(trial, message.id, message.value, f"delivered to {group}")
        got += [m.id for m in messages]
        client.ack(topic, group, [m.id for m in messages])
    return got


def _publish_more(trial: _Trial, client: Client) -> set[str]:
    """Publish a message to every partition after the restart: its offset
    must be new (an offset given again would inherit the old one's
    settlement) and every group must get it."""
    fresh: set[str] = set()
    for topic, partitions, *_ in TOPICS:
        if f"topic/{topic}" in trial.withheld:
            continue
        for partition in range(partitions):
            value = make_value(topic, AFTER_RESTART + partition)
            try:
                result = client.publish(topic, value, partition=partition)
            except LogqError as error:
                trial.fail("publish-error", f"{topic}:{partition}: {error}")
                continue
            if result.id in trial.prepared.published:
                trial.fail("offset-reused", f"{result.id} given again after the restart")
                continue
            trial.published[result.id] = value
            fresh.add(result.id)
    return fresh


def _check_groups(
    trial: _Trial,
    client: Client,
    read: set[str],
    damaged: dict[tuple[str, int], list[tuple[int, int]]],
) -> None:
    prepared = trial.prepared
    fresh = _publish_more(trial, client)
    state_damage = trial.damage.file_kind in STATE_FILE_KINDS and trial.reported
    for topic, _, group, _ in TOPICS:
        key = f"{topic}/{group}"
        if {f"topic/{topic}", f"group/{key}"} & trial.withheld:
            continue
        drained = _drain(trial, client, topic, group)
        delivered = prepared.delivered.get(key, set())
        acked = prepared.acked.get(key, set())
        for message_id in sorted(set(drained) & prepared.long_delayed):
            trial.fail("served-early", f"{key}: {message_id} delivered before its delay")
        again = sorted(set(drained) & acked)
        if again and not state_damage:
            trial.fail("acked-redelivered", f"{key}: {len(again)} acked before, e.g. {again[0]}")
        for message_id, _ in sorted(prepared.published.items()):
            if not message_id.startswith(f"{topic}:") or message_id in prepared.long_delayed:
                continue
            if message_id in delivered or message_id in drained or message_id not in read:
                continue
            _, partition, offset = _offset(message_id)
            if _covering(damaged.get((topic, partition), []), offset):
                continue
            trial.fail("settled-undelivered", f"{key}: {message_id} never delivered")
        for message_id in sorted(fresh - set(drained)):
            if message_id.startswith(f"{topic}:"):
                trial.fail("settled-undelivered", f"{key}: {message_id} (after the restart)")


def _check_stored(
    trial: _Trial, read: set[str], damaged: dict[tuple[str, int], list[tuple[int, int]]]
) -> None:
    for message_id in sorted(trial.prepared.published):
        if message_id in read:
            continue
        topic, partition, offset = _offset(message_id)
        if f"topic/{topic}" in trial.withheld:
            continue
        if not _covering(damaged.get((topic, partition), []), offset):
            trial.fail("lost-publish", f"{message_id} acknowledged, not read, not reported lost")


def _metric_total(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in {"{", " "}:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait_for_a_scrub_pass(http: httpx.Client) -> None:
    """Until the scrubber has verified every sealed segment once (bounded)."""
    deadline = time.monotonic() + SCRUB_WAIT_S
    while time.monotonic() < deadline:
        if _metric_total(http.get("/metrics").text, "logq_scrub_passes_total") >= 1:
            return
        time.sleep(0.05)


def _check_reported(trial: _Trial, http: httpx.Client, output: str) -> None:
    metrics = http.get("/metrics").text
    counted = {name: _metric_total(metrics, name) for name in REPORT_METRICS}
    damage = trial.damage
    names = {damage.path.name, str(damage.path.parent)}
    logged = [text for _, text in LOG_LINE.findall(output) if any(name in text for name in names)]
    trial.reported = bool(logged) and any(counted.values())
    if not trial.reported and not trial.exempt:
        figures = ", ".join(f"{n}={v:g}" for n, v in counted.items() if v) or "none"
        first = logged[0] if logged else "nothing logged naming it"
        trial.fail("unreported", f"metrics: {figures}; log: {first}")


def _check_kept(trial: _Trial, data: Path) -> None:
    """The segments of a topic served without (its record damaged) are kept as they were."""
    for key in sorted(trial.withheld):
        kind, _, topic = key.partition("/")
        if kind != "topic":
            continue  # a group's delivery state lives in its topic's state logs, still in use
        for segment in sorted((trial.prepared.data_dir / "topics" / topic).rglob("*.log")):
            kept = data / segment.relative_to(trial.prepared.data_dir)
            if kept == data / trial.damage.path:
                continue
            if not kept.is_file() or kept.read_bytes() != segment.read_bytes():
                trial.fail("withheld-not-kept", f"{key}: {kept} changed or gone")


def _exemption(data: Path, damage: Damage) -> str:
    """Why this damage needs no report, or "" when it needs one."""
    if damage.file_kind.endswith("index") and index_still_correct(data, damage):
        return "index still correct"
    if damage.file_kind == "state-timeindex":
        return "state logs are never looked up by time"
    if (
        damage.file_kind in {"index", "state-index", "trace-index"}
        and damage.kind != "delete-index"
    ):
        # Every entry a read uses is checked against the batch header it
        # points at, and a mismatch is reported (the segment verified whole):
        # with nothing reported, no damaged entry was used.
        return "offset index entries are checked at use"
    if damage.file_kind == "commit-journal" and damage.size_before <= JOURNAL_HEADER_BYTES:
        return "the journal file held no record"
    segment = data / damage.path.with_suffix(".log")
    if damage.file_kind in INDEX_KINDS and segment.is_file() and segment.stat().st_size == 0:
        # a segment just rolled to (a state log's, after a snapshot): its
        # indexes hold nothing, and the broker makes them afresh as it opens it
        return "its segment held no batch"
    if damage.kind == "stale" and damage.file_kind == "checkpoint":
        # An older checkpoint is one the broker wrote: a durable point further
        # back. Recovery verifies every batch after it, so it only scans more.
        return "older checkpoint"
    return ""


def run_trial(number: int, seed: int, prepared: Prepared, scratch: Path) -> _Trial:
    """Damage a fresh copy of `prepared`, start a broker on it and check it."""
    rng = random.Random(f"{seed}:{number}")
    directory = scratch / f"trial-{number}"
    data = directory / "data"
    shutil.copytree(prepared.data_dir, data)
    trial = _Trial(number, seed, prepared, apply(rng, data, prepared.stale_dir))
    trial.exempt = _exemption(data, trial.damage)
    server = Server(data, prepared.config, directory / "server.log")
    try:
        try:
            server.start()
        except RuntimeError as error:
            trial.fail("start", str(error)[-1500:])
            return trial
        import httpx  # noqa: PLC0415  (a bench extra: the command loads without it)

        with (
            Client(server.native) as client,
            httpx.Client(base_url=server.http, timeout=30) as http,
        ):
            _check_reported(trial, http, server.output())
            trial.withheld = _withheld(server.output())
            read = _read_all(trial, client, http)
            _check_stored(trial, read, _damaged_ranges(http))
            _check_groups(trial, client, read, _damaged_ranges(http))
            if not trial.reported:  # damage met by the reads or the scrubber: reported now?
                _wait_for_a_scrub_pass(http)
                trial.violations = [v for v in trial.violations if v[0] != "unreported"]
                _check_reported(trial, http, server.output())
    finally:
        server.kill()  # the copy is thrown away: no need to wait for a graceful stop
        _check_kept(trial, data)
        if not trial.violations:
            shutil.rmtree(directory, ignore_errors=True)
    return trial


def run_corrupt(settings: CorruptSettings, progress: Callable[[str], None]) -> CorruptReport:
    report = CorruptReport()
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="logq-corrupt-", dir=settings.directory))
    keep = False
    try:
        prepared = []
        for index in range(settings.prepared):
            progress(f"preparing directory {index + 1} of {settings.prepared}")
            prepared.append(prepare(settings.seed + index, scratch / f"prepared-{index}"))
        numbers = (
            [settings.only_trial] if settings.only_trial is not None else range(settings.trials)
        )
        lock = threading.Lock()

        def one(number: int) -> None:
            trial = run_trial(
                number, settings.seed, prepared[number % len(prepared)], scratch / "trials"
            )
            with lock:
                _count(report, trial, settings)
                if report.trials % 50 == 0:
                    progress(f"{report.trials} trials, {report.failed} violations")

        with ThreadPoolExecutor(max_workers=settings.jobs) as pool:
            list(pool.map(one, numbers))
        keep = report.failed > 0
    finally:
        report.seconds = time.monotonic() - started
        if keep:
            progress(f"failed trials kept under {scratch / 'trials'}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return report


def _count(report: CorruptReport, trial: _Trial, settings: CorruptSettings) -> None:
    report.trials += 1
    damage = trial.damage
    report.by_damage[damage.kind] += 1
    report.by_file[damage.file_kind] += 1
    report.reported += trial.reported
    if trial.exempt and not trial.reported:
        report.exempt[trial.exempt] += 1
    kinds = {kind for kind, _ in trial.violations}
    report.violations.update(kinds)
    if kinds:
        report.by_violation_file[f"{damage.kind} {damage.file_kind}"] += 1
    for kind, text in trial.violations[:3]:
        if len(report.failures) < FAILURES_KEPT:
            report.failures.append(
                f"--seed {settings.seed} --prepared {settings.prepared} --trial {trial.number}"
                f" (dir seed {trial.prepared.seed}, {'killed' if trial.prepared.killed else 'stopped'}):"
                f" {damage.describe()}: {kind}: {text}"
            )
