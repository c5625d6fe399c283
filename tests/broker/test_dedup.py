"""The dedup window, with a fake clock."""

from __future__ import annotations

import asyncio
import logging
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


def test_one_request_is_stored_in_request_order_whatever_path_each_message_takes() -> None:
    """Dedup ids, delays and priorities mixed in one publish: per partition the
    stored order is the request's (each path used to be its own concurrent batch)."""

    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 2})
        now = clock.now_ms()
        messages = []
        for n in range(60):
            fields: dict[str, object] = {"partition": n % 2, "key": b"k"}
            if n % 3 == 0:
                fields["dedup_id"] = f"id-{n}"
            if n % 4 == 1:
                fields["deliver_at_ms"] = now + 60_000 + n
            if n % 5 == 2:
                fields["priority"] = ("high", "low")[n % 2]
            messages.append(OutgoingMessage(f"m{n}".encode(), **fields))  # type: ignore[arg-type]
        results = await broker.publish("t", messages)
        for partition in (0, 1):
            stored = await broker.read_messages("t", partition, offset=0, limit=100)
            expected = [f"m{n}".encode() for n in range(partition, 60, 2)]
            assert [m.value for m in stored] == expected
        assert [r.offset for r in results[0::2]] == list(range(30))

    run(test)


def test_after_a_restart_the_window_is_read_once_for_concurrent_publishes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def before(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 3, "dedup_window": "30m"})
        for n in range(30):
            await broker.publish("t", [once(b"x", f"old-{n}")])

    async def after(broker: Broker, clock: FakeClock) -> None:
        requests = [
            broker.publish(
                "t", [once(f"{r}-{n}".encode(), f"new-{r}-{n}", partition=0) for n in range(20)]
            )
            for r in range(3)
        ]
        results = await asyncio.gather(*requests)
        for request in results:
            offsets = [r.offset for r in request]
            assert offsets == sorted(offsets)
        (again,) = await broker.publish("t", [once(b"x", "old-7")])
        assert again.id.startswith("t:")
        assert broker.describe_topic("t")["messages"] == 90

    run(before, BrokerConfig(data_dir=tmp_path))
    with caplog.at_level(logging.INFO, logger="logq.broker.recovery"):
        run(after, BrokerConfig(data_dir=tmp_path))
    rebuilt = [r.getMessage() for r in caplog.records if "dedup window" in r.getMessage()]
    assert rebuilt == ["dedup window of topic 't' rebuilt: 30 ids from the last 1800000 ms"]
