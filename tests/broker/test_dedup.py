"""The dedup window, with a fake clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.errors import BadBatchError
from logq.log.batch import encode_batch
from tests.broker.fake import run


def once(value: bytes, dedup_id: str, **fields: int | None) -> OutgoingMessage:
    return OutgoingMessage(value, dedup_id=dedup_id, **fields)  # type: ignore[arg-type]


def test_a_repeat_within_the_window_returns_the_first_id_and_stores_nothing() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 3, "dedup_window": "1m"})
        (first,) = await broker.publish("t", [once(b"pay 10", "order-1")])
        (again,) = await broker.publish("t", [once(b"pay 10", "order-1", partition=2)])
        assert again.id == first.id
        # within one publish too, and beside messages without an id
        results = await broker.publish(
            "t", [once(b"a", "order-2"), OutgoingMessage(b"plain"), once(b"a", "order-2")]
        )
        assert results[0].id == results[2].id != results[1].id
        assert broker.describe_topic("t")["messages"] == 3
        clock.advance(60_000)  # the window has passed: stored again
        (later,) = await broker.publish("t", [once(b"pay 10", "order-1")])
        assert later.id != first.id
        assert broker.describe_topic("t")["messages"] == 4

    run(test)


def test_concurrent_publishes_of_one_id_store_it_once() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 2})
        results = await asyncio.gather(
            *(broker.publish("t", [once(f"{n}".encode(), "same")]) for n in range(10))
        )
        assert len({r[0].id for r in results}) == 1
        assert broker.describe_topic("t")["messages"] == 1

    run(test)


def test_a_dedup_batch_holds_one_record() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        two = encode_batch([b"a", b"b"], headers=[{"logq-dedup-id": "x"}, None], dedup=True)
        with pytest.raises(BadBatchError, match="one record"):
            await broker.publish_batch("t", 0, two)
        unnamed = encode_batch([b"a"], dedup=True)
        with pytest.raises(BadBatchError, match="logq-dedup-id"):
            await broker.publish_batch("t", 0, unnamed)
        assert broker.describe_topic("t")["messages"] == 0

    run(test)


def test_the_window_is_rebuilt_after_a_restart(tmp_path: Path) -> None:
    ids: list[str] = []

    async def before(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 2, "dedup_window": "10m"})
        ids.append((await broker.publish("t", [once(b"x", "abc")]))[0].id)

    async def after(broker: Broker, clock: FakeClock) -> None:
        clock.advance(60_000)
        (again,) = await broker.publish("t", [once(b"x", "abc")])
        assert again.id == ids[0]
        assert broker.describe_topic("t")["messages"] == 1

    run(before, BrokerConfig(data_dir=tmp_path))
    run(after, BrokerConfig(data_dir=tmp_path))
