"""The delivery state machine against a plain model, at the Broker facade.

Hypothesis drives an embedded broker on a fake clock and a data directory
with random publishes (delayed, prioritised, with a TTL), receives by a
shared and an ordered group, acks, nacks (with a delay, or into the group's
backoff), rejects, extends, seeks, clock moves (leases expire, with attempt
+ 1 or to the DLQ after max_deliveries), redrives, snapshots of the delivery
state and restarts on the same directory. The model is a dict per group of
message id -> (state, attempt, until); after every step what the broker
reports (in-flight and backlog counts, the DLQ, what a receive returns with
which attempts) must agree with it.

What the model cannot know it bounds instead of guessing: a message whose
TTL has passed is settled by the broker only when a receive meets it, so
the backlog may hold it or not. A delayed message goes out at its time,
whether a receive met it before (and held it back) or not.

LOGQ_MODEL_EXAMPLES raises the number of examples for a long run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage

TOPIC = "t"
DLQ = "t.dlq"
PARTITIONS = 2
SHARED, ORDERED = "s", "o"
GROUPS = (SHARED, ORDERED)
LEASE_MS = 10_000  # the topic's visibility timeout
MAX_DELIVERIES = 3
BACKOFF = {"initial": "1s", "multiplier": 2, "max": "4s", "jitter": 0}
DRAIN = 1_000  # a receive this big takes everything deliverable
EXAMPLES = int(os.environ.get("LOGQ_MODEL_EXAMPLES", "40"))

READY, LEASED, PENDING, SETTLED = "ready", "leased", "pending", "settled"


@dataclass
class Stored:
    """A published message: its partition, offset, due and expiry times."""

    partition: int
    offset: int
    due_ms: int
    expires_ms: int | None
    delayed: bool


@dataclass
class Entry:
    """A message as one group sees it. `attempt`: deliveries made;
    `until_ms`: lease deadline (leased) or not-before (pending);
    `delivered`: handed out since the group last moved over it (a seek)."""

    state: str = READY
    attempt: int = 0
    until_ms: int = 0
    delivered: bool = False


@dataclass
class Model:
    now_ms: int
    messages: dict[str, Stored] = field(default_factory=dict)
    groups: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {group: {} for group in GROUPS}
    )
    letters: list[tuple[str, str, int, str]] = field(default_factory=list)

    def expired(self, message_id: str) -> bool:
        expires = self.messages[message_id].expires_ms
        return expires is not None and self.now_ms >= expires

    def due_ms(self, message_id: str, entry: Entry, *, surely: bool) -> int:
        """When a message becomes deliverable to a group: a delayed one at its
        time, held back or not (holds keep exact due times)."""
        return self.messages[message_id].due_ms

    def deliverable(self, group: str, *, surely: bool = True) -> dict[str, int]:
        """What a receive hands out now (`surely`) or may hand out, with the
        attempt it would be."""
        found: dict[str, int] = {}
        for message_id, entry in self.groups[group].items():
            if entry.state not in (READY, PENDING) or self.expired(message_id):
                continue
            due = self.due_ms(message_id, entry, surely=surely)
            if due > self.now_ms or entry.until_ms > self.now_ms:
                continue
            found[message_id] = entry.attempt + 1
        return found

    def known(self, group: str) -> list[str]:
        """Ids whose settlement the model can foretell: delivered and not
        settled (unless past their TTL and out of a lease: the broker may
        have settled them), or never delivered and not delayed."""
        ids = []
        for message_id, entry in sorted(self.groups[group].items()):
            if entry.state == LEASED:
                ids.append(message_id)
            elif entry.state == SETTLED or self.expired(message_id):
                continue
            elif entry.delivered or not self.messages[message_id].delayed:
                ids.append(message_id)  # (a delayed one may have been held back: handed out)
        return ids

    def may_waste(self, group: str) -> bool:
        """Whether a receive may plan a message it then keeps back: one past
        its TTL, or a delayed one not yet due that was never planned."""
        for message_id, entry in self.groups[group].items():
            if entry.state in (READY, PENDING) and self.expired(message_id):
                return True
            stored = self.messages[message_id]
            if entry.state == READY and stored.delayed and stored.due_ms > self.now_ms:
                return True
        return False

    def settleable(self, group: str, message_id: str) -> bool:
        entry = self.groups[group][message_id]
        return entry.state != SETTLED and entry.delivered

    def backoff_ms(self, group: str, attempt: int) -> int:
        if group == ORDERED:
            return 0  # the topic's: none
        return int(min(1000 * 2 ** (attempt - 1), 4000))

    def dead(self, group: str, message_id: str, attempts: int, reason: str) -> None:
        self.groups[group][message_id] = Entry(SETTLED, attempts, 0, True)
        self.letters.append((message_id, group, attempts, reason))


class DeliveryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="logq-model-"))
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.model = Model(self.clock.now_ms())
        self.broker = self.run(self._open())
        self.run(self._setup())

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    async def _open(self) -> Broker:
        return await Broker.open(BrokerConfig(data_dir=self.directory), clock=self.clock)

    async def _setup(self) -> None:
        await self.broker.create_topic(
            TOPIC,
            {
                "partitions": PARTITIONS,
                "visibility_timeout": LEASE_MS,
                "max_deliveries": MAX_DELIVERIES,
            },
        )
        await self.broker.put_group(TOPIC, SHARED, {"mode": "shared", "backoff": BACKOFF})
        await self.broker.put_group(TOPIC, ORDERED, {"mode": "ordered"})

    def teardown(self) -> None:
        try:
            self.run(self.broker.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- rules ----------------------------------------------------------------------------

    @rule(
        specs=st.lists(
            st.tuples(
                st.integers(0, PARTITIONS - 1),
                st.sampled_from(["high", "normal", "low"]),
                st.sampled_from([None, None, 1_000, 5_000, 20_000]),  # delay
                st.sampled_from([None, None, None, 3_000, 30_000]),  # ttl
            ),
            min_size=1,
            max_size=4,
        )
    )
    def publish(self, specs: list[tuple[int, str, int | None, int | None]]) -> None:
        now = self.clock.now_ms()
        outgoing = [
            OutgoingMessage(
                b"m",
                partition=partition,
                priority=priority,
                deliver_at_ms=None if delay is None else now + delay,
                ttl_ms=ttl,
            )
            for partition, priority, delay, ttl in specs
        ]
        results = self.run(self.broker.publish(TOPIC, outgoing))
        for result, (_, _, delay, ttl) in zip(results, specs, strict=True):
            self.model.messages[result.id] = Stored(
                result.partition,
                result.offset,
                now + (delay or 0),
                None if ttl is None else now + ttl,
                delay is not None,
            )
            for group in GROUPS:
                self.model.groups[group][result.id] = Entry()

    @rule(
        group=st.sampled_from(GROUPS),
        consumer=st.sampled_from(["c1", "c2"]),
        count=st.sampled_from([1, 2, 3, DRAIN, DRAIN]),
    )
    def receive(self, group: str, consumer: str, count: int) -> None:
        if group == ORDERED:
            consumer = "c1"  # one owner of every partition: no rebalancing to model
        model = self.model
        deliverable = model.deliverable(group)
        possible = model.deliverable(group, surely=False)
        got = self.run(self.broker.receive(TOPIC, group, consumer, max_messages=count))
        returned = {m.id: m.attempt for m in got}
        assert len(returned) == len(got), f"a message delivered twice in one receive: {got}"
        assert len(got) <= count
        unexpected = {i: a for i, a in returned.items() if possible.get(i) != a}
        assert not unexpected, f"delivered {unexpected}, deliverable were {possible}"
        if not model.may_waste(group):
            # nothing the broker plans can turn out not for now: it fills the receive
            least, most = min(count, len(deliverable)), min(count, len(possible))
            assert least <= len(returned) <= most, (returned, deliverable, possible)
        if count == DRAIN:
            missed = {i: a for i, a in deliverable.items() if returned.get(i) != a}
            assert not missed, f"not delivered {missed}, delivered {returned}"
            for message_id, entry in model.groups[group].items():
                # the broker met every expired message it could hand out: settled
                if entry.state in (READY, PENDING) and model.expired(message_id):
                    due = model.due_ms(message_id, entry, surely=True)
                    if due <= model.now_ms and entry.until_ms <= model.now_ms:
                        model.groups[group][message_id] = Entry(SETTLED, entry.attempt, 0, True)
        for message_id, attempt in returned.items():
            model.groups[group][message_id] = Entry(LEASED, attempt, model.now_ms + LEASE_MS, True)

    @rule(group=st.sampled_from(GROUPS), data=st.data())
    def ack(self, group: str, data: st.DataObject) -> None:
        ids = self._pick(group, data)
        if not ids:
            return
        expected = [i for i in ids if self.model.settleable(group, i)]
        acked = self.run(self.broker.ack(TOPIC, group, ids))
        assert acked == len(expected), (ids, expected, acked)
        for message_id in expected:
            entry = self.model.groups[group][message_id]
            self.model.groups[group][message_id] = Entry(SETTLED, entry.attempt, 0, True)

    @rule(
        group=st.sampled_from(GROUPS),
        delay=st.sampled_from([None, None, 0, 2_000]),
        data=st.data(),
    )
    def nack(self, group: str, delay: int | None, data: st.DataObject) -> None:
        model = self.model
        ids = self._pick(group, data)
        if not ids:
            return
        leased = [i for i in ids if model.groups[group][i].state == LEASED]
        nacked = self.run(self.broker.nack(TOPIC, group, ids, delay_ms=delay))
        assert nacked == len(leased), (ids, leased, nacked)
        for message_id in leased:
            attempt = model.groups[group][message_id].attempt
            if attempt >= MAX_DELIVERIES:
                model.dead(group, message_id, attempt, "max_deliveries (nacked)")
                continue
            wait = model.backoff_ms(group, attempt) if delay is None else delay
            model.groups[group][message_id] = Entry(PENDING, attempt, model.now_ms + wait, True)

    @rule(group=st.sampled_from(GROUPS), data=st.data())
    def reject(self, group: str, data: st.DataObject) -> None:
        model = self.model
        ids = self._pick(group, data)
        if not ids:
            return
        expected = [i for i in ids if model.settleable(group, i)]
        rejected = self.run(self.broker.reject(TOPIC, group, ids, reason="bad"))
        assert rejected == len(expected), (ids, expected, rejected)
        for message_id in expected:
            entry = model.groups[group][message_id]
            # the deliveries made: a nacked one waiting for redelivery counts its own
            attempts = entry.attempt if entry.state in (LEASED, PENDING) else 0
            model.dead(group, message_id, attempts, "bad")

    @rule(
        group=st.sampled_from(GROUPS),
        timeout=st.sampled_from([1_000, 15_000]),
        data=st.data(),
    )
    def extend(self, group: str, timeout: int, data: st.DataObject) -> None:
        model = self.model
        ids = self._pick(group, data)
        if not ids:
            return
        leased = [i for i in ids if model.groups[group][i].state == LEASED]
        extended = self.run(self.broker.extend(TOPIC, group, ids, visibility_timeout_ms=timeout))
        assert extended == len(leased), (ids, leased, extended)
        for message_id in leased:
            model.groups[group][message_id].until_ms = model.now_ms + timeout

    @rule(
        group=st.sampled_from(GROUPS),
        position=st.one_of(
            st.sampled_from(["earliest", "latest"]),
            st.tuples(st.integers(0, PARTITIONS - 1), st.integers(0, 12)),
        ),
    )
    def seek(self, group: str, position: str | tuple[int, int]) -> None:
        target = position
        model = self.model
        ends = [0] * PARTITIONS
        for stored in model.messages.values():
            ends[stored.partition] = max(ends[stored.partition], stored.offset + 1)
        if target == "earliest":
            positions = dict.fromkeys(range(PARTITIONS), 0)
            sent: object = "earliest"
        elif target == "latest":
            positions = dict(enumerate(ends))
            sent = "latest"
        else:
            assert isinstance(target, tuple)
            partition, offset = target
            positions = {partition: min(offset, ends[partition])}
            sent = {"partition": partition, "offset": offset}
        moved = self.run(self.broker.seek(TOPIC, group, sent))
        assert moved == positions
        for message_id, stored in model.messages.items():
            if stored.partition in positions:
                below = stored.offset < positions[stored.partition]
                model.groups[group][message_id] = Entry(SETTLED) if below else Entry()

    @rule(milliseconds=st.sampled_from([1, 500, 1_000, 3_000, 10_000, 25_000]))
    def advance(self, milliseconds: int) -> None:
        """Move the clock and run the timer: leases past their deadline go
        back (after the backoff) or, at max_deliveries, to the DLQ."""
        model = self.model
        self.clock.advance(milliseconds)
        model.now_ms = self.clock.now_ms()
        self.run(self.broker.tick())
        for group in GROUPS:
            for message_id, entry in sorted(model.groups[group].items()):
                if entry.state != LEASED or entry.until_ms > model.now_ms:
                    continue
                if entry.attempt >= MAX_DELIVERIES:
                    reason = "max_deliveries (lease expired)"
                    model.dead(group, message_id, entry.attempt, reason)
                    continue
                wait = model.backoff_ms(group, entry.attempt)
                model.groups[group][message_id] = Entry(
                    PENDING, entry.attempt, model.now_ms + wait, True
                )

    @rule(data=st.data())
    def redrive(self, data: st.DataObject) -> None:
        model = self.model
        letters = self.run(self.broker.dlq_messages(TOPIC, limit=DRAIN))
        if not letters:
            return
        chosen = data.draw(st.lists(st.sampled_from(letters), max_size=2, unique_by=lambda m: m.id))
        everything = not chosen
        picked = letters if everything else chosen
        count = self.run(self.broker.redrive(TOPIC, None if everything else [m.id for m in picked]))
        assert count == len(picked)
        for letter in picked:
            origin, group = letter.headers["logq-origin-id"], letter.headers["logq-group"]
            key = (
                origin,
                group,
                int(letter.headers["logq-attempts"]),
                letter.headers["logq-reason"],
            )
            model.letters.remove(key)
            entry = model.groups[group][origin]
            if entry.state == READY and not entry.delivered:
                continue  # a seek put it back before it was delivered: nothing to hand back
            model.groups[group][origin] = Entry(PENDING, 0, model.now_ms, True)

    @rule()
    def snapshot(self) -> None:
        self.run(self.broker.snapshot_delivery_state())

    @rule()
    def reopen(self) -> None:
        self.run(self.broker.close())
        self.broker = self.run(self._open())

    # -- checks ---------------------------------------------------------------------------

    def _pick(self, group: str, data: st.DataObject) -> list[str]:
        known = self.model.known(group)
        if not known:
            return []
        return data.draw(st.lists(st.sampled_from(known), min_size=1, max_size=3, unique=True))

    @invariant()
    def counts_agree(self) -> None:
        model = self.model
        for group in GROUPS:
            described = self.broker.describe_group(TOPIC, group)
            entries = model.groups[group]
            leased = sum(e.state == LEASED for e in entries.values())
            assert described["in_flight"] == leased, (group, described["partitions"], entries)
            certain = sum(
                e.state == LEASED or (e.state != SETTLED and not model.expired(i))
                for i, e in entries.items()
            )
            maybe = sum(
                e.state in (READY, PENDING) and model.expired(i) for i, e in entries.items()
            )
            assert certain <= described["lag"] <= certain + maybe, (
                group,
                described["lag"],
                certain,
                maybe,
            )

    @invariant()
    def dead_letters_agree(self) -> None:
        letters = self.run(self.broker.dlq_messages(TOPIC, limit=DRAIN))
        found = sorted(
            (
                m.headers["logq-origin-id"],
                m.headers["logq-group"],
                int(m.headers["logq-attempts"]),
                m.headers["logq-reason"],
            )
            for m in letters
        )
        assert found == sorted(self.model.letters)


DeliveryMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,  # fsyncs: step times vary, results do not
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_delivery_state_machine = DeliveryMachine.TestCase
