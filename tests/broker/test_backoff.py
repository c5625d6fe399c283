"""Retry backoff with a fake clock: nothing sleeps, time moves when told."""

from __future__ import annotations

import asyncio

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.broker.backoff import Backoff, parse_backoff
from logq.errors import BadArgumentError


def test_the_wait_grows_by_the_multiplier_up_to_the_max_less_jitter() -> None:
    backoff = Backoff(initial_ms=1000, multiplier=2, max_ms=5000, jitter=0.5)
    assert [backoff.delay_ms(attempt, 0.0) for attempt in range(1, 6)] == [
        1000,
        2000,
        4000,
        5000,
        5000,
    ]
    assert 1000 <= backoff.delay_ms(2, 0.999) <= 2000  # at most half of it taken off
    assert Backoff().delay_ms(3, 0.5) == 0  # the default: redeliver at once


def test_settings_are_checked_with_the_field_named() -> None:
    assert parse_backoff("backoff", "2s") == Backoff(initial_ms=2000)
    assert parse_backoff("backoff", {"initial_ms": 10, "max": "1s"}).max_ms == 1000
    for bad in (
        {"initial": "soon"},
        {"multiplier": 0.5},
        {"jitter": -1},
        {"initial": "2m", "max": "1m"},
        {"x": 1},
        [1],
    ):
        with pytest.raises(BadArgumentError, match="backoff"):
            parse_backoff("backoff", bad)


async def _scenario() -> list[tuple[str, int]]:
    clock = FakeClock()
    broker = await Broker.open(BrokerConfig(), clock=clock)
    seen: list[tuple[str, int]] = []
    try:
        await broker.create_topic(
            "jobs", {"partitions": 1, "backoff": {"initial": "1s", "multiplier": 2}}
        )
        await broker.put_group("jobs", "g", {"visibility_timeout": "10s"})
        await broker.publish("jobs", [OutgoingMessage(b"work")])

        async def receive() -> list[str]:
            return [m.id for m in await broker.receive("jobs", "g", "c", max_messages=1)]

        (first,) = await receive()
        await broker.nack("jobs", "g", [first])  # no delay given: attempt 1 waits 1s
        assert await receive() == []
        clock.advance(999)
        assert await receive() == []
        clock.advance(1)
        assert await receive() == [first]
        seen.append(("after nack", 1000))
        # the lease of attempt 2 expires: it waits 2s more
        clock.advance(10_000)
        await broker.expire_leases()
        clock.advance(1999)
        assert await receive() == []
        clock.advance(1)
        assert await receive() == [first]
        seen.append(("after expiry", 2000))
        # an explicit delay overrides the backoff
        await broker.nack("jobs", "g", [first], 0)
        assert await receive() == [first]
        # a group's own backoff wins over the topic's: 100ms * 2**3 after attempt 4
        await broker.put_group("jobs", "g", {"backoff": {"initial": "100ms"}})
        await broker.nack("jobs", "g", [first])
        clock.advance(799)
        assert await receive() == []
        clock.advance(1)
        assert await receive() == [first]
        counts = broker.describe_group("jobs", "g")["counts"]
        seen.append(("waits", counts["backoff_waits"]))
        seen.append(("wait_ms", counts["backoff_wait_ms"]))
    finally:
        await broker.close()
    return seen


def test_nack_and_lease_expiry_wait_the_backoff_and_an_explicit_delay_wins() -> None:
    seen = dict(asyncio.run(_scenario()))
    assert seen["waits"] == 3
    assert seen["wait_ms"] == 1000 + 2000 + 800  # the group's 100ms grown for attempt 4
