"""What `logq bench chaos` (chaos.py) found, and the checks on it.

Every message's value says what it is: `producer:sequence:due:kind:ttl:sent`
(`due` and `ttl` in ms, 0 when none; `kind` a for acked, r for rejected,
t for one with a TTL). After the run the checker compares what the clients
saw with what the broker stored:

- `lost`: acknowledged publishes that are not stored where they were
  acknowledged;
- `duplicates`: messages stored more than once (the idempotent producer's
  retries, and with --dedup a fresh producer's, must not store twice);
- `out_of_order`: one producer's messages to one partition (with --dedup:
  of one key) not in the order it sent them;
- `redelivered_after_ack`: deliveries of a message after its ack was
  confirmed (a redrive finished twice shows here too);
- `never_delivered`: stored messages the group never received (expired
  ones aside);
- `unsettled`: messages the group still holds once drained;
- `delivered_early`: delayed messages delivered before their due time;
- `delivered_after_expiry`: messages with a TTL the consumer asked for
  only after they had expired, and got;
- `expired_missing`: messages with a TTL never acked and not in the DLQ;
- `dlq_missing`, `dlq_duplicates`, `dlq_unexpected`: the dead letters are
  exactly the rejected (and expired) messages, each once;
- `redrive_both`: a rejected message whose letter is still in the DLQ and
  that came back to the group as well; `redrive_lost`: one whose letter
  left the DLQ and that never came back;
- `dedup_answer_differs`: a publish sent again with its dedup id answered
  with another place than the first; `dedup_unacknowledged`: messages no
  retry got acknowledged (within `resend_for_s`).

Each of these must be 0.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from logq.client import MessageData

TOPIC = "chaos"
GROUP = "workers"
EXAMPLES_MAX = 20


class Fields(NamedTuple):
    producer: int
    sequence: int
    due_ms: int
    kind: str  # a: acked, r: rejected, t: with a TTL (acked if it comes in time)
    ttl_ms: int
    sent_ms: int = 0


def value_of(fields: Fields) -> bytes:
    return ":".join(str(part) for part in fields).encode()


def fields_of(value: bytes) -> Fields:
    producer, sequence, due, kind, ttl, sent = value.decode().split(":")
    return Fields(int(producer), int(sequence), int(due), kind, int(ttl), int(sent))


@dataclass(slots=True)
class ChaosState:
    acknowledged: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    acked: dict[bytes, int] = field(default_factory=dict)  # value -> delivery count at confirm
    ack_attempted: set[bytes] = field(default_factory=set)
    rejected: set[bytes] = field(default_factory=set)  # rejects confirmed
    reject_calls: Counter[bytes] = field(default_factory=Counter)
    delivered: Counter[bytes] = field(default_factory=Counter)
    producing: bool = True
    consuming: bool = True


@dataclass(slots=True)
class ChaosReport:
    mode: str = "base"
    cycles: int = 0
    fault_kills: int = 0  # the server killed itself inside a redrive (LOGQ_FAULT_CRASH)
    seconds: float = 0.0
    publishes_acknowledged: int = 0
    publishes_failed: int = 0  # not acknowledged at the first send: may or may not be stored
    stored: int = 0
    deliveries: int = 0
    redeliveries: int = 0  # deliveries after the first (leases lost to a kill, redrives)
    acks_confirmed: int = 0
    rejects_confirmed: int = 0
    delayed: int = 0
    with_ttl: int = 0
    expired: int = 0  # messages with a TTL dead-lettered as expired
    dead_letters: int = 0
    dlq_left: int = 0  # letters still in the DLQ at the end
    redrive_calls: int = 0
    redrive_calls_failed: int = 0
    redriven_confirmed: int = 0
    returned: int = 0  # rejected messages whose letter left the DLQ and that came back
    dedup_retries: int = 0  # sends again, by a fresh producer, of what a kill failed
    dedup_resent: int = 0  # sends again, on purpose, of acknowledged messages
    lost: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    redelivered_after_ack: int = 0
    never_delivered: int = 0
    unsettled: int = 0
    delivered_early: int = 0
    delivered_after_expiry: int = 0
    expired_missing: int = 0
    dlq_missing: int = 0
    dlq_duplicates: int = 0
    dlq_unexpected: int = 0
    redrive_both: int = 0
    redrive_lost: int = 0
    dedup_answer_differs: int = 0
    dedup_unacknowledged: int = 0
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
        "delivered_after_expiry",
        "expired_missing",
        "dlq_missing",
        "dlq_duplicates",
        "dlq_unexpected",
        "redrive_both",
        "redrive_lost",
        "dedup_answer_differs",
        "dedup_unacknowledged",
        "archive_unused",
    )

    @property
    def ok(self) -> bool:
        return all(getattr(self, name) == 0 for name in self.VIOLATIONS)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def example(self, text: str) -> None:
        if len(self.examples) < EXAMPLES_MAX:
            self.examples.append(text)


def check(
    report: ChaosReport,
    state: ChaosState,
    stored: dict[bytes, list[tuple[int, int]]],
    letters: list[MessageData],
    listed: list[MessageData],
    pending: int,
    *,
    keys: int | None = None,
    redrive: bool = False,
) -> None:
    """Fill `report` from what the clients saw (`state`) and what is stored:
    `letters` every letter the DLQ holds, `listed` those still in it,
    `pending` what the group has not settled. `keys`: the messages went by
    key, one of `keys` per sequence (order is then checked per key)."""
    report.publishes_acknowledged = len(state.acknowledged)
    report.stored = sum(len(places) for places in stored.values())
    report.acks_confirmed = len(state.acked)
    report.rejects_confirmed = len(state.rejected)
    report.unsettled = pending
    report.dead_letters = len(letters)
    report.dlq_left = len(listed)
    for value, place in state.acknowledged.items():
        if place not in stored.get(value, []):
            report.lost += 1
            report.example(f"acknowledged at {place}, not stored there: {value!r}")
    lettered = Counter(letter.value or b"" for letter in letters)
    still_in = Counter(letter.value or b"" for letter in listed)
    for value, places in stored.items():
        found = fields_of(value)
        report.delayed += bool(found.due_ms)
        report.with_ttl += bool(found.ttl_ms)
        if len(places) > 1:
            report.duplicates += len(places) - 1
            report.example(f"stored {len(places)} times at {places}: {value!r}")
        if not state.delivered[value] and not (found.kind == "t" and lettered[value]):
            report.never_delivered += 1
            report.example(f"never delivered: {value!r}")
        _check_letters(report, state, value, lettered[value], still_in[value], redrive=redrive)
    for value in set(lettered) - set(stored):
        report.dlq_unexpected += 1
        report.example(f"a letter of a message not stored: {value!r}")
    _check_order(report, stored, keys)


def _check_letters(
    report: ChaosReport,
    state: ChaosState,
    value: bytes,
    letters: int,
    still_in: int,
    *,
    redrive: bool,
) -> None:
    """One stored message against its letters: `letters` stored in the DLQ,
    `still_in` of them not redriven."""
    kind = fields_of(value).kind
    if letters > 1:
        report.dlq_duplicates += letters - 1
        report.example(f"{letters} letters of {value!r}")
    if kind == "a":
        if letters:
            report.dlq_unexpected += 1
            report.example(f"a letter of a message acked: {value!r}")
    elif kind == "t":
        report.expired += bool(letters)
        if letters and value in state.acked:
            report.dlq_unexpected += 1
            report.example(f"expired after its ack was confirmed: {value!r}")
        if not letters and value not in state.ack_attempted:
            report.expired_missing += 1
            report.example(f"never acked, not dead-lettered: {value!r}")
    elif not redrive:  # rejected each time it comes: a letter, once
        if not letters:
            report.dlq_missing += 1
            report.example(f"rejected, not in the DLQ: {value!r}")
    elif not letters:
        if value in state.rejected:
            report.dlq_missing += 1
            report.example(f"reject confirmed, no letter: {value!r}")
    elif still_in and state.delivered[value] > 1:
        # rejected the first time it came: any later delivery is a redrive's
        report.redrive_both += 1
        report.example(f"in the DLQ and back in the group: {value!r}")
    elif not still_in:
        report.returned += 1
        if state.delivered[value] < 2:
            report.redrive_lost += 1
            report.example(f"redriven out of the DLQ, never back in the group: {value!r}")


def _check_order(
    report: ChaosReport, stored: dict[bytes, list[tuple[int, int]]], keys: int | None
) -> None:
    """One producer's messages of one partition (or key) stored in the order sent."""
    last: dict[tuple[int, int], tuple[int, int]] = {}  # (producer, partition|key) -> (seq, offset)
    for value, places in sorted(stored.items(), key=lambda item: fields_of(item[0])[:2]):
        found = fields_of(value)
        partition, offset = places[0]
        lane = (found.sequence - 1) % keys if keys else partition
        before = last.get((found.producer, lane))
        if before is not None and before[1] > offset:
            report.out_of_order += 1
            report.example(f"{value!r} at offset {offset} after sequence {before[0]}")
        last[(found.producer, lane)] = (found.sequence, offset)
