"""Message traces: every lifecycle event, by id, and after a restart."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.log import LogConfig
from tests.broker.fake import run


def kinds(trace: dict[str, Any]) -> list[str]:
    return [event["event"] for event in trace["events"]]


async def lone(broker: Broker, topic: str, **settings: Any) -> str:
    await broker.create_topic(topic, {"partitions": 1, "max_deliveries": 3, **settings})
    await broker.put_group(topic, "g", {"mode": "shared", "backoff": {"initial": "1s"}})
    (sent,) = await broker.publish(topic, [OutgoingMessage(b"v")])
    return sent.id


def test_delivered_acked_with_consumer_attempt_and_latency() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        message_id = await lone(broker, "t")
        clock.advance(5)
        (message,) = await broker.receive("t", "g", "worker-1")
        clock.advance(20)
        await broker.ack("t", "g", [message.id])
        trace = await broker.trace(message_id)
        assert kinds(trace) == ["PUBLISHED", "DELIVERED", "ACKED"]
        delivered, acked = trace["events"][1:]
        assert delivered["consumer"] == "worker-1" and delivered["attempt"] == 1
        assert acked["group"] == "g" and acked["consumer"] == "worker-1"
        assert trace["delivery_attempts"] == 1
        assert trace["total_latency_ms"] == 25
        lifecycle = broker.describe_group("t", "g")["lifecycle"]
        assert lifecycle["attempts"]["count"] == 1
        assert lifecycle["time_to_ack_ms"]["sum"] == 20

    run(test)


def test_lease_expiry_nack_redelivery_reject_dead_letter_and_redrive() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        message_id = await lone(broker, "t")
        await broker.receive("t", "g", "a", visibility_timeout_ms=1_000)
        clock.advance(1_000)
        await broker.tick()  # lease expired, back after 1 s of backoff
        clock.advance(1_000)
        (again,) = await broker.receive("t", "g", "b")
        await broker.nack("t", "g", [again.id], delay_ms=0)
        (third,) = await broker.receive("t", "g", "c")
        await broker.reject("t", "g", [third.id], "poison")
        await broker.redrive("t")
        trace = await broker.trace(message_id)
        assert kinds(trace) == [
            "PUBLISHED",
            "DELIVERED",
            "LEASE EXPIRED",
            "REDELIVERED",
            "NACKED",
            "REDELIVERED",
            "REJECTED",
            "DEAD-LETTERED",
            "REDRIVEN",
        ]
        expired = trace["events"][2]
        assert expired["consumer"] == "a" and expired["until_ms"] == expired["at_ms"] + 1_000
        assert trace["events"][6]["reason"] == "poison"
        assert "t.dlq" in trace["events"][7]["detail"]
        assert trace["delivery_attempts"] == 3
        lifecycle = broker.describe_group("t", "g")["lifecycle"]
        assert lifecycle["redelivery_reasons"] == {"lease_expired": 1, "nacked": 1}
        assert lifecycle["time_in_dlq_ms"]["count"] == 1

    run(test)


def test_max_deliveries_dead_letters_with_the_reason() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        message_id = await lone(broker, "t")
        for _ in range(3):
            (message,) = await broker.receive("t", "g", "a")
            await broker.nack("t", "g", [message.id], delay_ms=0)
        trace = await broker.trace(message_id)
        assert kinds(trace)[-2:] == ["REDELIVERED", "DEAD-LETTERED"]
        assert "max_deliveries" in trace["events"][-1]["detail"]

    run(test)


def test_delayed_held_back_expired_and_auto_ack() -> None:
    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1})
        await broker.put_group("t", "g", {"mode": "shared"})
        now = clock.now_ms()
        delayed, short = await broker.publish(
            "t",
            [
                OutgoingMessage(b"later", deliver_at_ms=now + 5_000),
                OutgoingMessage(b"brief", ttl_ms=10),
            ],
        )
        clock.advance(11)
        assert await broker.receive("t", "g", "a", max_messages=10) == []
        trace = await broker.trace(delayed.id)
        assert kinds(trace) == ["PUBLISHED", "DELAYED", "HELD BACK"]
        assert trace["events"][0]["at_ms"] == now
        assert trace["events"][1]["until_ms"] == now + 5_000
        assert kinds(await broker.trace(short.id)) == ["PUBLISHED", "EXPIRED"]
        await broker.put_group("t", "auto", {"auto_ack": True})
        clock.advance(5_000)
        await broker.receive("t", "auto", "a", max_messages=10)
        trace = await broker.trace(delayed.id)
        assert kinds(trace)[-2:] == ["DELIVERED", "ACKED"]
        assert trace["events"][-1]["reason"] == "auto_ack"

    run(test)


def test_retention_and_tracing_off() -> None:
    config = BrokerConfig(log=LogConfig(segment_bytes=4096))

    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1, "retention": "1h"})
        (old,) = await broker.publish("t", [OutgoingMessage(b"x" * 5000)])
        clock.advance(3_600_001)
        await broker.publish("t", [OutgoingMessage(b"y" * 5000)])
        assert await broker.apply_retention() >= 1
        trace = await broker.trace(old.id)
        assert kinds(trace) == ["DELETED BY RETENTION"]
        assert not trace["retained"]
        await broker.create_topic("quiet", {"partitions": 1, "trace": False})
        (sent,) = await broker.publish("quiet", [OutgoingMessage(b"v")])
        (message,) = await broker.receive("quiet", "g", "a")
        await broker.ack("quiet", "g", [message.id])
        trace = await broker.trace(sent.id)
        assert kinds(trace) == ["PUBLISHED"] and not trace["traced"]

    run(test, config)


def test_traces_survive_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        config = BrokerConfig(data_dir=tmp_path)
        broker = await Broker.open(config, clock=clock)
        message_id = await lone(broker, "t")
        (message,) = await broker.receive("t", "g", "a")
        await broker.nack("t", "g", [message.id], delay_ms=0)
        await broker.close()
        broker = await Broker.open(replace(config), clock=clock)
        try:
            (message,) = await broker.receive("t", "g", "b")
            await broker.ack("t", "g", [message.id])
            trace = await broker.trace(message_id)
            assert kinds(trace) == ["PUBLISHED", "DELIVERED", "NACKED", "REDELIVERED", "ACKED"]
            assert trace["events"][-1]["consumer"] == "b"
        finally:
            await broker.close()

    asyncio.run(main())


def test_the_timer_applies_retention() -> None:
    config = BrokerConfig(log=LogConfig(segment_bytes=4096), retention_check_ms=60_000)

    async def test(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("t", {"partitions": 1, "retention": "1m"})
        (old,) = await broker.publish("t", [OutgoingMessage(b"x" * 5000)])
        clock.advance(60_001)
        await broker.publish("t", [OutgoingMessage(b"y" * 5000)])
        await broker.tick()
        assert broker.describe_topic("t")["partitions"][0]["first_offset"] == 1
        assert kinds(await broker.trace(old.id)) == ["DELETED BY RETENTION"]

    run(test, config)
