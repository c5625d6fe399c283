"""Settlements by receipt touch only the delivery they name (fake clock).

A consumer whose lease ended and whose message went to another consumer
must not ack, nack, reject or extend the other's copy: its receipt (id and
lease token) is stale, refused with STALE, and changes nothing. Plain ids
settle the current delivery, whoever holds it, as before.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from logq.broker import Broker, BrokerConfig, FakeClock, Message, OutgoingMessage
from logq.broker.receipts import parse_receipt
from logq.errors import BadArgumentError, StaleDeliveryError
from logq.state.events import Leased, decode_events
from logq.state.legacy_journal import Snapshot
from logq.state.snapshots import restore_partition
from tests.broker.fake import run

LEASE_MS = 10_000


async def _handed_over(broker: Broker, clock: FakeClock) -> tuple[Message, Message]:
    """A receives the message, its lease expires, B receives it again."""
    await broker.create_topic("jobs", {"partitions": 1})
    await broker.put_group("jobs", "g", {"mode": "shared", "visibility_timeout": LEASE_MS})
    await broker.publish("jobs", [OutgoingMessage(b"work")])
    (first,) = await broker.receive("jobs", "g", "a")
    clock.advance(LEASE_MS + 1)
    assert await broker.expire_leases() == 1
    (second,) = await broker.receive("jobs", "g", "b")
    assert second.id == first.id and second.attempt == first.attempt + 1
    assert second.lease != first.lease
    return first, second


def _holder(broker: Broker, message: Message) -> tuple[str, int, int]:
    state = broker.group("jobs", "g").deliveries[message.partition]
    lease = state.lease_of(message.offset)
    assert lease is not None
    return lease.consumer, lease.token, lease.deadline_ms


def test_a_late_settlement_is_refused_and_leaves_the_new_delivery_alone() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        stale, current = await _handed_over(broker, clock)
        held = _holder(broker, current)
        assert held[:2] == ("b", current.lease)
        attempts = [
            broker.ack("jobs", "g", [stale.receipt]),
            broker.nack("jobs", "g", [stale.receipt]),
            broker.reject("jobs", "g", [stale.receipt], "late"),
            broker.extend("jobs", "g", [stale.receipt], 60_000),
        ]
        for attempt in attempts:
            with pytest.raises(StaleDeliveryError) as raised:
                await attempt
            assert raised.value.code == "STALE" and not raised.value.retriable
            assert raised.value.stale == [stale.receipt] and raised.value.count == 0
        assert _holder(broker, current) == held  # untouched, lease and deadline alike
        assert broker.group("jobs", "g").counters["stale"] == len(attempts)
        assert broker.topics.get(broker.dlq_name("jobs")) is None  # nothing dead-lettered
        assert await broker.extend("jobs", "g", [current.receipt], 60_000) == 1
        assert _holder(broker, current)[2] == clock.now_ms() + 60_000
        assert await broker.ack("jobs", "g", [current.receipt]) == 1
        assert broker.group("jobs", "g").deliveries[0].floor == 1

    run(scenario)


def test_an_ack_ranges_names_its_lease_and_the_current_part_is_settled() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        stale, current = await _handed_over(broker, clock)
        await broker.publish("jobs", [OutgoingMessage(b"more")])
        (other,) = await broker.receive("jobs", "g", "a")
        with pytest.raises(StaleDeliveryError) as raised:
            await broker.ack_ranges("jobs", "g", {(0, stale.lease): [(0, 1)]})
        assert raised.value.count == 0
        # one request, one stale range and one current: the current one is settled
        with pytest.raises(StaleDeliveryError) as raised:
            await broker.ack_ranges(
                "jobs", "g", {(0, stale.lease): [(0, 1)], (0, other.lease): [(1, 2)]}
            )
        assert raised.value.count == 1 and raised.value.stale == [stale.receipt]
        assert _holder(broker, current)[:2] == ("b", current.lease)
        assert broker.group("jobs", "g").deliveries[0].is_settled(1)
        assert await broker.ack_ranges("jobs", "g", {(0, current.lease): [(0, 1)]}) == 1

    run(scenario)


def test_plain_ids_settle_the_current_delivery_whoever_holds_it() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        stale, _ = await _handed_over(broker, clock)
        assert await broker.extend("jobs", "g", [stale.id]) == 1
        assert await broker.ack("jobs", "g", [stale.id]) == 1
        assert await broker.ack_ranges("jobs", "g", {(0, 0): [(0, 1)]}) == 0  # already settled

    run(scenario)


def test_a_lease_that_expired_with_nobody_receiving_again_can_still_be_acked() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("jobs", {"partitions": 1})
        await broker.put_group("jobs", "g", {"mode": "shared", "visibility_timeout": LEASE_MS})
        await broker.publish("jobs", [OutgoingMessage(b"work")])
        (message,) = await broker.receive("jobs", "g", "a")
        clock.advance(LEASE_MS + 1)
        assert await broker.expire_leases() == 1
        assert await broker.ack("jobs", "g", [message.receipt]) == 1
        assert await broker.receive("jobs", "g", "b") == []

    run(scenario)


def test_a_seek_back_hands_out_new_tokens_though_the_attempt_starts_over() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("jobs", {"partitions": 1})
        await broker.put_group("jobs", "g", {"mode": "shared"})
        await broker.publish("jobs", [OutgoingMessage(b"work")])
        (first,) = await broker.receive("jobs", "g", "a")
        await broker.seek("jobs", "g", "earliest")
        (second,) = await broker.receive("jobs", "g", "b")
        assert (second.id, second.attempt) == (first.id, first.attempt)  # same attempt
        with pytest.raises(StaleDeliveryError):
            await broker.reject("jobs", "g", [first.receipt], "late")
        assert _holder(broker, second)[:2] == ("b", second.lease)

    run(scenario)


def test_a_redriven_message_is_not_settled_by_its_old_receipt() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("jobs", {"partitions": 1, "max_deliveries": 1})
        await broker.put_group("jobs", "g", {"mode": "shared", "visibility_timeout": LEASE_MS})
        await broker.publish("jobs", [OutgoingMessage(b"work")])
        (first,) = await broker.receive("jobs", "g", "a")
        clock.advance(LEASE_MS + 1)
        await broker.expire_leases()  # max deliveries: to the DLQ
        assert await broker.redrive("jobs") == 1
        (second,) = await broker.receive("jobs", "g", "b")
        assert second.attempt == first.attempt == 1
        with pytest.raises(StaleDeliveryError):
            await broker.ack("jobs", "g", [first.receipt])
        assert _holder(broker, second)[:2] == ("b", second.lease)

    run(scenario)


@pytest.mark.parametrize("snapshot_bytes", [64 << 20, 1])
def test_tokens_survive_a_restart(tmp_path: Path, snapshot_bytes: int) -> None:
    """From the journal, and from a snapshot (taken at every commit here)."""
    config = BrokerConfig(data_dir=tmp_path, snapshot_bytes=snapshot_bytes)
    kept: list[Message] = []

    async def before(broker: Broker, clock: FakeClock) -> None:
        kept.extend(await _handed_over(broker, clock))

    async def after(broker: Broker, clock: FakeClock) -> None:
        stale, current = kept
        with pytest.raises(StaleDeliveryError):
            await broker.nack("jobs", "g", [stale.receipt])
        assert _holder(broker, current)[:2] == ("b", current.lease)
        await broker.publish("jobs", [OutgoingMessage(b"more")])
        (fresh,) = await broker.receive("jobs", "g", "c")
        assert fresh.lease > current.lease  # never a token handed out before
        assert await broker.ack("jobs", "g", [current.receipt, fresh.receipt]) == 2

    run(before, config)
    run(after, config)


def test_receipts_are_validated() -> None:
    assert parse_receipt("jobs:0:5@17")[1] == 17
    assert parse_receipt("jobs:0:5")[1] == 0
    for bad in ("jobs:0:5@", "jobs:0:5@x", "jobs:0:5@0", "jobs:0:5@" + "9" * 20, "@1"):
        with pytest.raises(BadArgumentError):
            parse_receipt(bad)


def test_journals_and_snapshots_written_before_tokens_still_read() -> None:
    (leased,) = decode_events(msgspec.msgpack.encode([["L", "g", 0, [[0, 2]], "a", 9, 1, 3]]))
    assert isinstance(leased, Leased) and leased.token == 0
    old = b'{"version":1,"generation":0,"groups":{"g":{"0":[0,2,[],[[0,2,"a",9,1]],[]]}}}'
    state = restore_partition(msgspec.json.decode(old, type=Snapshot).groups["g"][0])
    assert [(lease.start, lease.end, lease.token) for lease in state.leases] == [(0, 2, 0)]
    assert state.stale_parts([(0, 2)], 17) == [(0, 2)]  # a receipt never names it
    assert state.next_token(5) == 5000
