"""Build the upgrade fixture: a data directory written by this release.

    PYTHONPATH=src python scripts/make_upgrade_fixture.py [--out tests/fixtures]

Runs an embedded broker on a fake clock (so every lease deadline and due
time is reproducible) through the public API and leaves every kind of
durable state on disk: topics of 1 and 3 partitions, messages with keys,
headers and priority lanes, delayed messages not yet due, an ordered and a
shared group with committed progress, outstanding leases, nacked messages
waiting out a delay or the group's backoff, dead letters (one redriven),
dedup ids within their window, an idempotent producer's batches, a topic
with non-default settings, and trace records. The delivery state is
snapshotted part way, so recovery reads the snapshot and replays journal
records written after it. The broker is closed gracefully, the directory
packed as `datadir-release-<N>.tar.gz` (sorted, times and owners zeroed,
so the same code packs the same bytes) and what a later release must find
in it is written beside it as `datadir-release-<N>.json`.

The expected delivery state comes from a ledger the script keeps of its own
calls (who holds what, which attempt, due when), checked against what the
broker reports before it closes: the manifest says what the operations
meant, not merely what this release happened to store.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import io
import json
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logq.broker import Broker, BrokerConfig, FakeClock, Message, OutgoingMessage
from logq.log.batch import encode_batch
from logq.log.directory_lock import LOCK_NAME

RELEASE = 1
START_MS = 1_700_000_000_000
DELAY_MS = 3_600_000  # the delayed orders are due an hour after the start
FIXTURE_BYTES_MAX = 300 * 1024
PRODUCER_ID = 77

ORDERS = "orders"
PAYMENTS = "payments"
TOPICS: dict[str, dict[str, Any]] = {
    ORDERS: {"partitions": 3},
    PAYMENTS: {  # every setting away from its default
        "partitions": 1,
        "retention": "3d",
        "max_deliveries": 2,
        "dedup_window": "10m",
        "ttl": "1d",
        "visibility_timeout": "20s",
    },
}
GROUPS: dict[tuple[str, str], dict[str, Any]] = {
    (ORDERS, "workers"): {
        "mode": "shared",
        "visibility_timeout": "30s",
        "backoff": {"initial": "5s", "multiplier": 2, "max": "1m", "jitter": 0},
    },
    (ORDERS, "audit"): {"mode": "ordered", "visibility_timeout": "60s"},
    (PAYMENTS, "billing"): {"mode": "shared"},
}


@dataclass
class Entry:
    """One message as one group should find it: `state` is ready, leased,
    pending (due at `until_ms`) or settled; `attempt` counts deliveries made."""

    state: str
    attempt: int = 0
    until_ms: int = 0


class Ledger:
    """What the script did to each message, per group."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.groups: dict[str, dict[str, Entry]] = {f"{t}/{g}": {} for t, g in GROUPS}
        self.lease_ms: dict[str, int] = {}
        self.letters: list[dict[str, Any]] = []  # dead letters still in the DLQ

    def published(self, topic: str, ids: list[str], due_ms: int = 0) -> None:
        for key, entries in self.groups.items():
            if key.startswith(f"{topic}/"):
                for message_id in ids:
                    state = "pending" if due_ms else "ready"
                    entries[message_id] = Entry(state, 0, due_ms)

    def received(self, group: str, messages: list[Message]) -> None:
        entries = self.groups[group]
        deadline = self.clock.now_ms() + self.lease_ms[group]
        for message in messages:
            entry = entries[message.id]
            assert entry.state != "settled" and message.attempt == entry.attempt + 1, (
                message.id,
                entry,
                message.attempt,
            )
            entries[message.id] = Entry("leased", message.attempt, deadline)

    def extended(self, group: str, message_id: str, lease_ms: int) -> None:
        self.groups[group][message_id].until_ms = self.clock.now_ms() + lease_ms

    def settled(self, group: str, ids: list[str]) -> None:
        for message_id in ids:
            self.groups[group][message_id].state = "settled"

    def nacked(self, group: str, message_id: str, wait_ms: int) -> None:
        entry = self.groups[group][message_id]
        self.groups[group][message_id] = Entry(
            "pending", entry.attempt, self.clock.now_ms() + wait_ms
        )

    def dead(self, group: str, message_id: str, reason: str) -> None:
        entry = self.groups[group][message_id]
        entry.state = "settled"
        self.letters.append(
            {
                "origin_id": message_id,
                "group": group.partition("/")[2],
                "attempts": entry.attempt,
                "reason": reason,
            }
        )

    def redriven(self, group: str, message_id: str) -> None:
        self.groups[group][message_id] = Entry("pending", 0, self.clock.now_ms())
        self.letters = [x for x in self.letters if x["origin_id"] != message_id]


def _message(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "partition": message.partition,
        "offset": message.offset,
        "key": None if message.key is None else base64.b64encode(message.key).decode(),
        "value": None if message.value is None else base64.b64encode(message.value).decode(),
        "headers": message.headers,
        "priority": message.priority,
        "timestamp_ms": message.timestamp_ms,
    }


async def _scenario(broker: Broker, clock: FakeClock, ledger: Ledger) -> dict[str, Any]:
    """Everything the fixture holds; returns the manifest's facts that are
    not in the ledger (dedup, producer, trace)."""
    for name, settings in TOPICS.items():
        await broker.create_topic(name, settings)
    for (topic, group), settings in GROUPS.items():
        await broker.put_group(topic, group, settings)
        ledger.lease_ms[f"{topic}/{group}"] = broker.group(topic, group).visibility_timeout_ms(
            broker.topic(topic).settings
        )
    lanes = ("high", "normal", "low")
    orders = [
        OutgoingMessage(
            f"order-{i}".encode(),
            key=f"customer-{i % 5}".encode(),
            headers={"n": str(i), "source": "fixture"},
            priority=lanes[i % 3],
        )
        for i in range(15)
    ]
    published = await broker.publish(ORDERS, orders)
    ledger.published(ORDERS, [r.id for r in published])
    delayed = [
        OutgoingMessage(
            f"order-delayed-{i}".encode(),
            key=f"customer-{i}".encode(),
            headers={"n": f"d{i}"},
            deliver_at_ms=START_MS + DELAY_MS,
        )
        for i in range(2)
    ]
    delayed_ids = [r.id for r in await broker.publish(ORDERS, delayed)]
    ledger.published(ORDERS, delayed_ids, START_MS + DELAY_MS)

    # a shared group: acked, nacked with a delay, nacked into its backoff,
    # a lease extended, a lease left as it was
    clock.advance(1_000)
    workers = f"{ORDERS}/workers"
    taken = await broker.receive(ORDERS, "workers", "w1", max_messages=6)
    ledger.received(workers, taken)
    await broker.ack(ORDERS, "workers", [m.id for m in taken[:2]])
    ledger.settled(workers, [m.id for m in taken[:2]])
    await broker.nack(ORDERS, "workers", [taken[2].id], delay_ms=600_000)
    ledger.nacked(workers, taken[2].id, 600_000)
    await broker.nack(ORDERS, "workers", [taken[3].id])  # the group's backoff: 5 s
    ledger.nacked(workers, taken[3].id, 5_000)
    await broker.extend(ORDERS, "workers", [taken[4].id], visibility_timeout_ms=120_000)
    ledger.extended(workers, taken[4].id, 120_000)

    # an ordered group with committed progress and leases out
    clock.advance(1_000)
    audit = f"{ORDERS}/audit"
    read = await broker.receive(ORDERS, "audit", "a1", max_messages=5)
    ledger.received(audit, read)
    await broker.ack(ORDERS, "audit", [m.id for m in read[:3]])
    ledger.settled(audit, [m.id for m in read[:3]])

    # what came so far is in the snapshot, what follows only in the journal
    await broker.snapshot_delivery_state()

    clock.advance(1_000)
    billing = f"{PAYMENTS}/billing"
    dedup_ids = {"pay-1": b"pay 10 EUR", "pay-2": b"pay 20 EUR"}
    first_ids: dict[str, str] = {}
    for dedup_id, value in dedup_ids.items():
        (result,) = await broker.publish(
            PAYMENTS, [OutgoingMessage(value, key=b"acct-1", dedup_id=dedup_id)]
        )
        first_ids[dedup_id] = result.id
    (plain,) = await broker.publish(
        PAYMENTS, [OutgoingMessage(b"pay 30 EUR", headers={"currency": "EUR"}, priority="high")]
    )
    ledger.published(PAYMENTS, [*first_ids.values(), plain.id])
    batches = [[b"idem-a"], [b"idem-b", b"idem-c"]]
    producer: list[dict[str, Any]] = []
    idempotent_ids: list[str] = []
    for sequence, values in enumerate(batches):
        batch = encode_batch(
            values,
            timestamp_ms=clock.now_ms(),
            producer_id=PRODUCER_ID,
            base_sequence=sum(len(b) for b in batches[:sequence]),
        )
        stored = await broker.publish_batch(PAYMENTS, 0, batch)
        assert not stored.duplicate
        producer.append(
            {
                "batch": base64.b64encode(batch).decode(),
                "partition": stored.partition,
                "base_offset": stored.base_offset,
                "last_offset": stored.last_offset,
            }
        )
        idempotent_ids += [
            f"{PAYMENTS}:0:{o}" for o in range(stored.base_offset, stored.last_offset + 1)
        ]
    ledger.published(PAYMENTS, idempotent_ids)

    got = {m.id: m for m in await broker.receive(PAYMENTS, "billing", "b1", max_messages=10)}
    ledger.received(billing, list(got.values()))
    pay_1, pay_2 = first_ids["pay-1"], first_ids["pay-2"]
    await broker.reject(PAYMENTS, "billing", [pay_1], reason="malformed amount")
    ledger.dead(billing, pay_1, "malformed amount")
    await broker.nack(PAYMENTS, "billing", [pay_2])  # no backoff: back at once
    ledger.nacked(billing, pay_2, 0)
    (again,) = await broker.receive(PAYMENTS, "billing", "b1", max_messages=1)
    assert again.id == pay_2
    ledger.received(billing, [again])
    await broker.nack(PAYMENTS, "billing", [pay_2])  # its second delivery: to the DLQ
    ledger.dead(billing, pay_2, "max_deliveries (nacked)")
    idem_a, idem_b, idem_c = idempotent_ids
    await broker.ack(PAYMENTS, "billing", [idem_a, idem_c])
    ledger.settled(billing, [idem_a, idem_c])
    await broker.nack(PAYMENTS, "billing", [idem_b], delay_ms=900_000)
    ledger.nacked(billing, idem_b, 900_000)

    clock.advance(1_000)
    letters = await broker.dlq_messages(PAYMENTS)
    (letter,) = [x for x in letters if x.headers["logq-origin-id"] == pay_1]
    assert await broker.redrive(PAYMENTS, [letter.id]) == 1
    ledger.redriven(billing, pay_1)

    clock.advance(1_000)
    more = await broker.receive(ORDERS, "workers", "w2", max_messages=3)
    ledger.received(workers, more)
    await broker.ack(ORDERS, "workers", [more[0].id])
    ledger.settled(workers, [more[0].id])

    clock.advance(2_000)
    late = await broker.publish(
        ORDERS,
        [OutgoingMessage(f"order-late-{i}".encode(), headers={"n": f"l{i}"}) for i in (0, 1)],
    )
    ledger.published(ORDERS, [r.id for r in late])
    traced = [pay_1, pay_2, taken[2].id, taken[3].id, delayed_ids[0], read[0].id]
    return {
        "dedup": [
            {"dedup_id": k, "value": base64.b64encode(dedup_ids[k]).decode(), "id": v}
            for k, v in first_ids.items()
        ],
        "producer": producer,
        "traced": traced,
    }


def _expected(ledger: Ledger, broker: Broker) -> dict[str, Any]:
    """Per group: the counts it reports, and what its receives must return."""
    groups: dict[str, Any] = {}
    for key, entries in ledger.groups.items():
        topic, _, name = key.partition("/")
        described = broker.describe_group(topic, name)
        leased = {i: e for i, e in entries.items() if e.state == "leased"}
        unsettled = {i: e for i, e in entries.items() if e.state != "settled"}
        assert described["in_flight"] == len(leased), (key, described["in_flight"], leased)
        assert described["lag"] == len(unsettled), (key, described["lag"], unsettled)
        now_ms = broker.clock.now_ms()
        due_now = {
            i: e.attempt + 1
            for i, e in entries.items()
            if e.state == "ready" or (e.state == "pending" and e.until_ms <= now_ms)
        }
        later = {i: e.attempt + 1 for i, e in unsettled.items() if i not in due_now}
        groups[key] = {
            "topic": topic,
            "group": name,
            "settings": described["settings"],
            "partitions": [
                {
                    k: p[k]
                    for k in (
                        "partition",
                        "committed",
                        "next_offset",
                        "in_flight",
                        "pending_redelivery",
                        "lag",
                    )
                }
                for p in described["partitions"]
            ],
            "in_flight": len(leased),
            "lag": len(unsettled),
            "receive_now": dict(sorted(due_now.items())),
            "receive_later": dict(sorted(later.items())),
            "latest_deadline_ms": max(e.until_ms for e in unsettled.values()),
        }
    return groups


async def _build(directory: Path) -> dict[str, Any]:
    clock = FakeClock(START_MS)
    broker = await Broker.open(BrokerConfig(data_dir=directory), clock=clock)
    ledger = Ledger(clock)
    try:
        facts = await _scenario(broker, clock, ledger)
        manifest: dict[str, Any] = {
            "release": RELEASE,
            "start_ms": START_MS,
            "end_ms": clock.now_ms(),
            "topics": {
                name: {
                    "config": broker.describe_topic(name)["config"],
                    "next_offsets": [p.log.next_offset for p in broker.topic(name).partitions],
                }
                for name in sorted(broker.topics)
            },
            "messages": {
                name: [
                    _message(m)
                    for p in range(len(broker.topic(name).partitions))
                    for m in await broker.read_messages(name, p, offset=0, limit=1000)
                ]
                for name in TOPICS
            },
            "groups": _expected(ledger, broker),
            "dead_letters": {PAYMENTS: ledger.letters},
            "traces": {i: (await broker.trace(i))["events"] for i in facts.pop("traced")},
            **facts,
        }
        # run by release 1 (the release this fixture stands for), whose
        # broker kept one journal; later releases read it only to migrate it
        journal = getattr(broker, "journal_log")  # noqa: B009
        manifest["journal_records_after_snapshot"] = journal.next_offset - journal.first_offset
        assert manifest["journal_records_after_snapshot"] > 0
    finally:
        await broker.close()
    assert (directory / "state" / "snapshot.json").exists()
    return manifest


def _pack(directory: Path) -> bytes:
    """The directory as a tar.gz that the same files always pack to (the
    lock file left out)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directory.rglob("*")):
            if path.relative_to(directory) == Path(LOCK_NAME):
                continue  # names the process that held it; the next broker takes its own
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(directory)))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_file():
                with path.open("rb") as file:
                    tar.addfile(info, file)
            else:
                tar.addfile(info)
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "tests/fixtures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary) / "data"
        manifest = asyncio.run(_build(directory))
        packed = _pack(directory)
    if len(packed) > FIXTURE_BYTES_MAX:
        print(
            f"the fixture packs to {len(packed)} bytes, over {FIXTURE_BYTES_MAX}", file=sys.stderr
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"datadir-release-{RELEASE}"
    stem.with_suffix(".tar.gz").write_bytes(packed)
    stem.with_suffix(".json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"{stem}.tar.gz: {len(packed)} bytes; {stem}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
