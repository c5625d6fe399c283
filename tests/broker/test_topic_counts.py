"""`Broker.topic_counts` and `group_counts` (the dashboard's tables, every
second) have the same numbers as `describe_topic` and `list_groups`, which
answer in full."""

from __future__ import annotations

from logq.broker import Broker, FakeClock, OutgoingMessage
from tests.broker.fake import run

COUNTED = ("messages", "bytes", "pending", "in_flight", "acked", "failed", "dead_lettered")


def test_topic_counts_agree_with_describe_topic() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("orders", {"partitions": 3, "max_deliveries": 1})
        await broker.create_topic("audit", {"partitions": 1})
        await broker.create_topic("empty", {"partitions": 2})
        await broker.publish("orders", [OutgoingMessage(b"o" * 10)] * 9)
        await broker.publish("audit", [OutgoingMessage(b"a")] * 4)
        await broker.put_group("orders", "idle")
        received = await broker.receive("orders", "billing", "c1", max_messages=6)
        await broker.ack("orders", "billing", [m.id for m in received[:2]])
        await broker.nack("orders", "billing", [received[2].id])  # dead-lettered: one delivery
        await broker.reject("orders", "billing", [received[3].id])
        (audited,) = await broker.receive("audit", "readers", "c2", max_messages=1)
        await broker.nack("audit", "readers", [audited.id], delay_ms=0)
        await broker.receive("audit", "readers", "c2", max_messages=1)  # a redelivery
        counted = broker.topic_counts()
        assert [topic["name"] for topic in counted] == sorted(broker.topics)
        for topic in counted:
            described = broker.describe_topic(topic["name"])
            assert topic["partitions"] == len(described["partitions"])
            assert {key: topic[key] for key in COUNTED} == {
                key: dict(described)[key] for key in COUNTED
            }, topic["name"]
        orders = next(topic for topic in counted if topic["name"] == "orders")
        assert (orders["messages"], orders["acked"], orders["in_flight"]) == (9, 2, 2)
        assert orders["dead_lettered"] == 2 and orders["pending"] > 0
        audit = next(topic for topic in counted if topic["name"] == "audit")
        assert audit["failed"] == 1

    run(scenario)


def test_group_counts_agree_with_list_groups() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("orders", {"partitions": 3, "max_deliveries": 1})
        await broker.publish("orders", [OutgoingMessage(b"o")] * 12)
        await broker.put_group("orders", "ordered", {"mode": "ordered"})
        await broker.put_group("orders", "window", {"end_offsets": [1, 2, 0]})  # a replay
        received = await broker.receive("orders", "billing", "c1", max_messages=5)
        await broker.ack("orders", "billing", [m.id for m in received[:2]])
        await broker.reject("orders", "billing", [received[2].id])  # its DLQ gets a group
        counted = broker.group_counts()
        listed = broker.list_groups()
        assert [(g["topic"], g["group"]) for g in counted] == [
            (g["topic"], g["group"]) for g in listed
        ]
        assert not any(g["group"].startswith("~") for g in counted)
        for count, described in zip(counted, listed, strict=True):
            assert count == {
                "topic": described["topic"],
                "group": described["group"],
                "mode": described["settings"]["mode"],
                "members": len(described["members"]),
                "lag": described["lag"],
                "in_flight": described["in_flight"],
            }
        by_name = {g["group"]: g for g in counted}
        # the replay ends at its end offsets (1, 2 and 0), the others at the log end
        assert by_name["window"]["lag"] <= 2 and by_name["ordered"]["lag"] == 12
        assert by_name["billing"]["in_flight"] == 2 and by_name["billing"]["members"] == 1

    run(scenario)
