"""Dead-letter actions stay within their topic and act on each letter once:
only the broker writes to a dead-letter topic, a DLQ shared by two topics is
acted on per origin topic, ids named twice count once, concurrent actions on
one letter apply once, and a letter without an origin does not block "all"."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.errors import BadArgumentError, MessageNotFoundError
from logq.log.batch import encode_batch
from tests.broker.fake import run


async def dead_letter(broker: Broker, topic: str, values: list[bytes]) -> list[str]:
    """Publish `values` to `topic`; group `g` rejects them all; their letter ids."""
    if topic not in broker.topics:
        await broker.create_topic(topic, {"partitions": 1})
    await broker.publish(topic, [OutgoingMessage(v) for v in values])
    taken = await broker.receive(topic, "g", "c", max_messages=100)
    await broker.reject(topic, "g", [m.id for m in taken], "poison")
    return [m.id for m in await broker.dlq_messages(topic, 100) if m.value in values]


def test_only_the_broker_writes_to_a_dead_letter_topic() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await dead_letter(broker, "t", [b"bad"])
        forged = OutgoingMessage(b"x", headers={"logq-origin-id": "t:0:0", "logq-group": "g"})
        with pytest.raises(BadArgumentError, match="dead-letter topic"):
            await broker.publish("t.dlq", [forged])
        with pytest.raises(BadArgumentError, match="dead-letter topic"):
            await broker.publish_batch("t.dlq", 0, encode_batch([b"x"]))
        assert [m.value for m in await broker.dlq_messages("t", 10)] == [b"bad"]
        # a topic in use cannot become a DLQ: its messages have no origin to trust,
        # and its producers would be locked out
        await broker.create_topic("orders", {"partitions": 1})
        with pytest.raises(BadArgumentError, match="'orders' is a topic in use"):
            await broker.create_topic("u", {"partitions": 1, "dlq": "orders"})
        with pytest.raises(BadArgumentError, match="'orders' is a topic in use"):
            await broker.update_topic("t", {"dlq": "orders"})
        with pytest.raises(BadArgumentError, match="its own dead-letter topic"):
            await broker.update_topic("orders", {"dlq": "orders"})
        await broker.publish("orders", [OutgoingMessage(b"still open")])
        # another topic's DLQ may be shared
        await broker.create_topic("v", {"partitions": 1, "dlq": "t.dlq"})
        # a DLQ's own letters are redriven, never requeued into it
        with pytest.raises(BadArgumentError, match="redrive them"):
            await broker.requeue_dlq("t.dlq")

    run(test)


def test_a_shared_dlq_is_acted_on_per_origin_topic() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        for name in ("s1", "s2"):
            await broker.create_topic(name, {"partitions": 1, "dlq": "shared-dlq"})
        (from_s1,) = await dead_letter(broker, "s1", [b"one"])
        (from_s2,) = await dead_letter(broker, "s2", [b"two"])
        with pytest.raises(BadArgumentError, match="dead letter of 's2', not of 's1'"):
            await broker.requeue_dlq("s1", [from_s2])
        with pytest.raises(BadArgumentError, match="dead letter of 's2', not of 's1'"):
            await broker.redrive("s1", [from_s2])
        assert await broker.requeue_dlq("s1") == 1  # s1's letter only
        assert [m.value for m in await broker.read_messages("s1", 0, offset=1)] == [b"one"]
        assert await broker.read_messages("s2", 0, offset=1) == []
        assert await broker.purge_dlq("s1") == 0  # s2's letter is not s1's to purge
        assert [m.id for m in await broker.dlq_messages("s2", 10)] == [from_s2]
        assert await broker.purge_dlq("s2") == 1
        assert from_s1 != from_s2

    run(test)


def test_ids_named_twice_count_once() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        (letter,) = await dead_letter(broker, "t", [b"bad"])
        assert await broker.redrive("t", [letter, letter, letter]) == 1
        assert broker.groups["t/g"].counters["redriven"] == 1
        assert len(await broker.receive("t", "g", "c", max_messages=10)) == 1

    run(test)


def test_concurrent_actions_on_one_letter_apply_once() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        (letter,) = await dead_letter(broker, "t", [b"bad"])
        requeued, redriven, purged = await asyncio.gather(
            broker.requeue_dlq("t", [letter]),
            broker.redrive("t", [letter]),
            broker.purge_dlq("t", [letter]),
        )
        assert (requeued, redriven, purged) == (1, 0, 0)
        # the requeued copy is the only way back: one message, not two
        assert [m.value for m in await broker.receive("t", "g", "c", max_messages=10)] == [b"bad"]

    run(test)


def test_a_letter_without_an_origin_does_not_block_all() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await dead_letter(broker, "t", [b"a", b"b"])
        # written as the broker would, minus its origin (a damaged letter)
        await broker.publish("t.dlq", [OutgoingMessage(b"orphan")], as_broker=True)
        assert await broker.redrive("t") == 2
        (orphan,) = await broker.dlq_messages("t", 10)
        assert orphan.value == b"orphan"
        with pytest.raises(MessageNotFoundError, match="carries no logq-origin-id"):
            await broker.redrive("t", [orphan.id])
        assert await broker.purge_dlq("t", [orphan.id]) == 1  # by its id, it can go

    run(test)


def test_the_dlq_size_is_what_is_in_it_now() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        letters = await dead_letter(broker, "t", [b"a", b"b", b"c"])
        described = broker.describe_topic("t")
        assert (described["dead_lettered"], described["in_dlq"]) == (3, 3)
        assert await broker.redrive("t", letters[:1]) == 1
        assert await broker.purge_dlq("t", letters[1:2]) == 1
        described = broker.describe_topic("t")
        assert (described["dead_lettered"], described["in_dlq"]) == (3, 1)
        assert broker.describe_topic("t.dlq")["in_dlq"] == 0  # the DLQ's own DLQ: none

    run(test)


def test_all_goes_page_by_page_past_any_page_size() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        values = [f"m{i}".encode() for i in range(2_500)]  # 3 pages of the DLQ
        await broker.publish("t", [OutgoingMessage(v) for v in values])
        while taken := await broker.receive("t", "g", "c", max_messages=1000):
            await broker.reject("t", "g", [m.id for m in taken], "poison")
        assert broker.describe_topic("t")["in_dlq"] == 2_500
        assert await broker.redrive("t") == 2_500
        assert broker.describe_topic("t")["in_dlq"] == 0
        with pytest.raises(BadArgumentError, match=r"limit must be within 1\.\.10000"):
            await broker.dlq_messages("t", 10_001)

    run(test)


def test_a_dlq_stays_closed_after_its_topic_goes_and_across_a_restart(tmp_path: Path) -> None:
    forged = OutgoingMessage(b"x", headers={"logq-origin-id": "v:0:0", "logq-group": "g"})

    async def main() -> None:
        config = BrokerConfig(data_dir=tmp_path)
        broker = await Broker.open(config)
        try:
            await dead_letter(broker, "v", [b"real"])
            await broker.delete_topic("v")
            with pytest.raises(BadArgumentError, match="dead-letter topic"):
                await broker.publish("v.dlq", [forged])
        finally:
            await broker.close()
        broker = await Broker.open(config)
        try:
            with pytest.raises(BadArgumentError, match="dead-letter topic"):
                await broker.publish("v.dlq", [forged])
            await broker.create_topic("v", {"partitions": 1})  # its old DLQ is fine to reuse
            # a DLQ a client made itself is not one: the topic that would use it is refused
            await broker.create_topic("w.dlq", {"partitions": 1})
            with pytest.raises(BadArgumentError, match="written by the broker only"):
                await broker.publish("w.dlq", [forged])
            await broker.publish("w.dlq", [OutgoingMessage(b"x")])
            with pytest.raises(BadArgumentError, match=r"'w\.dlq' is a topic in use"):
                await broker.create_topic("w", {"partitions": 1})
        finally:
            await broker.close()

    asyncio.run(main())


def test_a_redrive_hands_back_letters_below_a_seek_with_those_above_it() -> None:
    """Letters of adjacent offsets travel as one range: the part the group
    has not handed out since a seek (at or past its position) has nothing
    to hand back, the part below its position goes back all the same."""

    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "o", {"mode": "ordered"})
        await broker.publish("t", [OutgoingMessage(b"m") for _ in range(6)])
        assert len(await broker.receive("t", "o", "c", max_messages=6)) == 6
        assert await broker.reject("t", "o", ["t:0:3", "t:0:4"], "poison") == 2
        assert await broker.seek("t", "o", {"partition": 0, "offset": 4}) == {0: 4}
        assert await broker.redrive("t") == 2
        again = await broker.receive("t", "o", "c", max_messages=6)
        # 3 goes back (attempts start over); 4 was not delivered since the seek: once
        assert [(m.offset, m.attempt) for m in again] == [(3, 1), (4, 1), (5, 1)]
        assert broker.describe_group("t", "o")["in_flight"] == 3

    run(test)


def test_a_message_dead_lettered_again_after_a_snapshot_and_a_restart_is_a_new_letter(
    tmp_path: Path,
) -> None:
    """Each dead-letter move is named by a lease token of its own (the DLQ's
    dedup id is made of it): a snapshot keeps the highest token handed out,
    so after a restart the moves of the same messages are new letters, not
    duplicates of the first ones, even when the clock has not moved."""

    async def main() -> None:
        clock = FakeClock()
        config = BrokerConfig(data_dir=tmp_path)
        broker = await Broker.open(config, clock=clock)
        try:
            await broker.create_topic("t", {"partitions": 1})
            await broker.put_group("t", "o", {"mode": "ordered"})
            await broker.publish("t", [OutgoingMessage(b"m") for _ in range(3)])
            assert len(await broker.receive("t", "o", "c", max_messages=3)) == 3
            assert await broker.reject("t", "o", ["t:0:0", "t:0:1"], "poison") == 2
            assert await broker.redrive("t") == 2
            assert await broker.ack("t", "o", ["t:0:2"]) == 1
            await broker.snapshot_delivery_state()  # no lease left: tokens only in the snapshot
        finally:
            await broker.close()
        broker = await Broker.open(config, clock=clock)
        try:
            again = await broker.receive("t", "o", "c", max_messages=3)
            assert [(m.offset, m.attempt) for m in again] == [(0, 1), (1, 1)]
            assert await broker.reject("t", "o", ["t:0:0", "t:0:1"], "poison again") == 2
            letters = await broker.dlq_messages("t", 100)
            assert sorted(
                (m.headers["logq-origin-id"], m.headers["logq-reason"]) for m in letters
            ) == [("t:0:0", "poison again"), ("t:0:1", "poison again")]
        finally:
            await broker.close()

    asyncio.run(main())


def test_a_rejected_message_carries_its_own_deliveries_as_attempts() -> None:
    """Rejected together, adjacent messages delivered a different number of
    times (leased under two deliveries, or waiting after a nack) each
    carry the deliveries made to them, not those of the first one."""

    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "g", {"mode": "shared"})
        await broker.publish("t", [OutgoingMessage(b"m") for _ in range(3)])
        assert [m.offset for m in await broker.receive("t", "g", "c", max_messages=1)] == [0]
        assert await broker.nack("t", "g", ["t:0:0"], delay_ms=0) == 1
        again = await broker.receive("t", "g", "c", max_messages=3)
        assert sorted((m.offset, m.attempt) for m in again) == [(0, 2), (1, 1), (2, 1)]
        assert await broker.nack("t", "g", ["t:0:2"], delay_ms=60_000) == 1
        assert await broker.reject("t", "g", ["t:0:0", "t:0:1", "t:0:2"], "poison") == 3
        letters = await broker.dlq_messages("t", 100)
        assert sorted(
            (m.headers["logq-origin-id"], m.headers["logq-attempts"]) for m in letters
        ) == [("t:0:0", "2"), ("t:0:1", "1"), ("t:0:2", "1")]

    run(test)
