"""Message TTL with a fake clock: expired messages are never delivered."""

from __future__ import annotations

import pytest

from logq.broker import Broker, FakeClock, OutgoingMessage
from logq.broker.expiry import expired_offsets
from logq.errors import BadArgumentError
from logq.log.batch import encode_batch, with_base_offset
from tests.broker.fake import run


async def values(broker: Broker, topic: str, group: str = "g") -> list[bytes | None]:
    return [m.value for m in await broker.receive(topic, group, "c", max_messages=100)]


def test_topic_ttl_drops_old_messages_and_counts_them() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1, "ttl": "10s"})
        await broker.publish("t", [OutgoingMessage(b"old")])
        clock.advance(6_000)
        await broker.publish("t", [OutgoingMessage(b"new")])
        clock.advance(5_000)  # "old" is 11 s old, "new" 5 s
        assert await values(broker, "t") == [b"new"]
        group = broker.describe_group("t", "g")
        assert group["counts"]["ttl_expired"] == 1
        assert group["lag"] == 1  # "new" is in flight; "old" is settled as expired
        assert await broker.dlq_messages("t") == []
        # replay without a group still sees both: TTL is about delivery
        assert [m.value for m in await broker.read_messages("t", 0, offset=0)] == [b"old", b"new"]

    run(test)


def test_message_ttl_and_dead_lettering_when_the_topic_asks() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1, "ttl_dead_letter": True})
        await broker.publish(
            "t",
            [
                OutgoingMessage(b"short", ttl_ms=1_000),
                OutgoingMessage(b"forever"),
                OutgoingMessage(b"long", ttl_ms=60_000),
            ],
        )
        clock.advance(1_000)
        assert await values(broker, "t") == [b"forever", b"long"]
        (dead,) = await broker.dlq_messages("t")
        assert dead.value == b"short"
        assert dead.headers["logq-reason"] == "expired (ttl)"
        assert dead.headers["logq-origin-id"] == "t:0:0"
        assert broker.describe_group("t", "g")["counts"]["ttl_expired"] == 1

    run(test)


def test_a_redelivery_after_expiry_is_dropped_too() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.publish("t", [OutgoingMessage(b"job", ttl_ms=5_000)])
        (message,) = await broker.receive("t", "g", "c")
        await broker.nack("t", "g", [message.id], 0)
        clock.advance(5_000)
        assert await values(broker, "t") == []
        assert broker.describe_group("t", "g")["lag"] == 0

    run(test)


def test_ttl_settings_are_checked() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        with pytest.raises(BadArgumentError, match="ttl"):
            await broker.create_topic("t", {"ttl": "soon"})
        with pytest.raises(BadArgumentError, match="ttl_dead_letter"):
            await broker.create_topic("t", {"ttl_dead_letter": "yes"})
        with pytest.raises(BadArgumentError, match="ttl"):
            await broker.create_topic("t", {"ttl": 0})

    run(test)


def test_the_check_reads_records_only_when_it_must() -> None:
    fresh = with_base_offset(encode_batch([b"a", b"b"], timestamps=[100, 200]), 10)
    assert expired_offsets(fresh, 10, 12, 1_000, now_ms=1_000) == []  # all within the TTL
    assert expired_offsets(fresh, 10, 12, 1_000, now_ms=1_150) == [10]  # straddles the line
    assert expired_offsets(fresh, 11, 12, 1_000, now_ms=5_000) == [11]  # only the range asked
    assert expired_offsets(fresh, 10, 12, None, now_ms=10**12) == []  # no TTL, not marked
    marked = with_base_offset(
        encode_batch(
            [b"a", b"b"], headers=[{"logq-expires-at": "500"}, None], timestamp_ms=1, expiring=True
        ),
        0,
    )
    assert expired_offsets(marked, 0, 2, None, now_ms=499) == []
    assert expired_offsets(marked, 0, 2, None, now_ms=500) == [0]


def test_a_receive_goes_past_a_flood_of_expired_messages() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1, "ttl": "1s"})
        await broker.publish("t", [OutgoingMessage(f"{i}".encode()) for i in range(3000)])
        clock.advance(2_000)
        await broker.publish("t", [OutgoingMessage(b"fresh")])
        (message,) = await broker.receive("t", "g", "c", max_messages=1, wait_ms=5_000)
        assert message.value == b"fresh"
        assert broker.describe_group("t", "g")["counts"]["ttl_expired"] == 3000

    run(test)
