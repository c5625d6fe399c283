"""Received messages read their batch lazily: every public field equals the
eager decode of the same record, and acks gather into ranges per batch."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from logq.client.async_client import AsyncClient
from logq.client.messages import (
    AsyncMessage,
    DeliveredBatch,
    Message,
    ThreadAcks,
    delivered,
    received,
)
from logq.client.records import MessageData
from logq.client.settle import Settler
from logq.lanes import Lanes
from logq.log import compression, decode_batch, encode_batch

LANES = Lanes()


def _stream() -> tuple[bytes, list[tuple[int, int]]]:
    """Three stored batches back to back, as a fetch returns them: offsets 10..15
    (zstd, keys and headers), 16..17 (lz4, high lane, null values), 18..21 (plain)."""
    first = encode_batch(
        [b"a", b"", None, b"d" * 300, b"e", b"f"],
        keys=[b"k0", None, b"", b"k3", None, b"k5"],
        headers=[{"h": "1"}, None, {"x": "é", "y": ""}, None, {"h": "2"}, {}],
        timestamps=[1_000, 1_005, 1_001, 2_000, 1_000, 1_500],
        codec=compression.ZSTD,
        base_offset=10,
    )
    second = encode_batch(
        [None, b"tombstone?"], codec=compression.LZ4, lane=2, base_offset=16, timestamp_ms=7
    )
    third = encode_batch([b"w", b"x", b"y", b"z"], keys=[b"same"] * 4, base_offset=18)
    return first + second + third, [(10, 16), (16, 18), (18, 22)]


@pytest.mark.parametrize(("start", "end"), [(10, 22), (12, 20), (16, 17), (21, 22), (0, 100)])
def test_every_field_equals_the_eager_decode(start: int, end: int) -> None:
    data, _ = _stream()
    messages = received("t", 3, start, end, 2, data, "g", None, LANES)
    expected: list[tuple[object, ...]] = []
    position = 0
    for _ in range(3):
        batch = decode_batch(data, position)
        lane = LANES.name_of(batch.header.lane)
        for record in batch.records():
            if start <= record.offset < end:
                expected.append(
                    (
                        record.offset,
                        record.key,
                        record.value,
                        record.headers,
                        record.timestamp,
                        lane,
                    )
                )
        position += batch.header.size
    assert [
        (m.offset, m.key, m.value, m.headers, m.timestamp_ms, m.priority) for m in messages
    ] == expected
    for message in messages:
        assert isinstance(message, AsyncMessage) and isinstance(message, MessageData)
        assert (message.topic, message.partition, message.attempt, message.group) == (
            "t",
            3,
            2,
            "g",
        )
        assert message.id == f"t:3:{message.offset}"
        assert message.timestamp == datetime.fromtimestamp(message.timestamp_ms / 1000, tz=UTC)
        assert message.headers is message.headers  # decoded once, then the same dict
        assert repr(message).startswith(f"AsyncMessage(id='t:3:{message.offset}'")


def test_a_delivery_is_kept_as_its_batches_with_the_leased_records() -> None:
    data, _ = _stream()
    batches = delivered("t", 0, 12, 19, 1, data, "g", None, LANES)
    assert [(b.base_offset, b.start, b.stop, b.cursor, b.priority) for b in batches] == [
        (10, 2, 6, 2, "normal"),
        (16, 0, 2, 0, LANES.name_of(2)),
        (18, 0, 1, 0, "normal"),
    ]
    assert delivered("t", 0, 22, 30, 1, data, "g", None, LANES) == []


def test_acks_marked_in_a_batch_come_out_as_ranges_once() -> None:
    data, _ = _stream()
    (batch,) = delivered("t", 0, 10, 16, 1, data, "g", None, LANES)
    for index in (0, 1, 3, 4, 5, 1):  # record 1 acked twice
        batch.marks[index] = 1
    assert batch.take_ranges() == [(10, 12), (13, 16)]
    assert batch.take_ranges() == []  # sent ranges are forgotten
    assert batch.pending is None
    batch.marks[5] = 1
    assert batch.take_ranges() == [(15, 16)]


def test_a_message_read_without_a_group_cannot_be_settled() -> None:
    data, _ = _stream()
    (message, *_) = received("t", 0, 10, 12, 0, data, "g", None, LANES)
    for settle in (message.ack, message.nack, message.reject, message.extend):
        with pytest.raises(RuntimeError, match="without a group"):
            settle()
    loop = asyncio.new_event_loop()
    try:
        blocking = Message(message, lambda action: pytest.fail("nothing is sent"), ThreadAcks(loop))
        with pytest.raises(RuntimeError, match="without a group"):
            blocking.ack()
    finally:
        loop.close()


def test_the_blocking_message_answers_from_its_async_message() -> None:
    data, _ = _stream()
    for inner in received("t", 1, 10, 22, 3, data, "g", None, LANES):
        message = Message(inner, submit=lambda action: pytest.fail("nothing is settled"))
        fields = ("topic", "partition", "offset", "key", "value", "headers", "priority", "lease")
        assert [getattr(message, name) for name in fields] == [
            getattr(inner, name) for name in fields
        ]
        assert (message.timestamp, message.attempt, message.group, message.id) == (
            inner.timestamp,
            inner.attempt,
            inner.group,
            inner.id,
        )
        assert message.receipt == inner.receipt


def test_a_batch_holds_its_delivery_range_within_its_records() -> None:
    data, _ = _stream()
    with pytest.raises(AssertionError):
        DeliveredBatch(data, 0, "t", 0, 3, 9, 1, "g", None, LANES)


def test_every_message_of_a_delivery_carries_its_lease_and_receipt() -> None:
    data, _ = _stream()
    leased = received("t", 2, 15, 19, 1, data, "g", None, LANES, 42)
    assert [(m.offset, m.lease, m.receipt) for m in leased] == [
        (offset, 42, f"t:2:{offset}@42") for offset in range(15, 19)
    ]
    assert [m.receipt for m in received("t", 2, 15, 17, 1, data, "g", None, LANES)] == [
        "t:2:15",
        "t:2:16",
    ]  # no lease (a server before lease tokens): the plain id
    batches = delivered("t", 2, 12, 19, 1, data, "g", None, LANES, 42)
    assert [r for b in batches for r in b.receipts(b.cursor, b.stop)] == [
        f"t:2:{offset}@42" for offset in range(12, 19)
    ]


def test_acks_marked_in_batches_go_out_as_ranges_grouped_by_partition_and_lease() -> None:
    """Two deliveries of the same records under different leases (a redelivery)
    and one of another partition: each ack names its own delivery."""
    data, _ = _stream()

    async def run() -> tuple[list[bytes | str | int], list[str], list[str]]:
        settler = Settler(AsyncClient("127.0.0.1:1"), "t", "g")
        first = received("t", 0, 10, 22, 1, data, "g", settler, LANES, 9)
        again = received("t", 0, 10, 16, 2, data, "g", settler, LANES, 11)
        other = received("t", 1, 16, 22, 1, data, "g", settler, LANES, 9)
        futures = {m.ack() for m in first if m.offset in (10, 11, 15, 16, 17, 20)}
        futures |= {m.ack() for m in again[3:]}
        futures.add(settler.ack_all(other[:2]))
        assert len(futures) == 1  # one future for the acks of this loop turn
        ackr = settler._ackr(settler._gather(take=False))
        left = settler.outstanding()
        return ackr, left, await settler.abandon()

    ackr, left, abandoned = asyncio.run(run())
    assert ackr == [
        "ACKR", "t", "g",
        "LEASE", 9, 0, 10, 12, 0, 15, 18, 0, 20, 21, 1, 16, 18,
        "LEASE", 11, 0, 13, 16,
    ]  # fmt: skip
    assert left == ["ack of t/g partition:offsets 0:10-11, 0:15-17, 0:20, 0:13-15, 1:16-17"]
    assert abandoned == left  # what was not sent is named, not dropped
