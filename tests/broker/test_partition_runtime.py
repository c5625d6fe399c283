"""A partition's runtime carries every group's delivery state of it.

Groups and partitions hold the same state objects: a group made (by a
client, on first receive, or by the broker for a DLQ), a topic grown and a
restart all leave each partition holding exactly its groups' states, so a
snapshot of a partition, and whatever serves that partition, needs the
partition alone. The broker is the leader of every partition it holds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from tests.broker.fake import run


def _assert_partitions_hold_their_groups(broker: Broker) -> None:
    for topic in broker.topics.values():
        groups = [g for g in broker.groups.values() if g.topic == topic.name]
        for partition in topic.partitions:
            assert set(partition.deliveries) == {g.key for g in groups}, topic.name
            for group in groups:
                assert partition.deliveries[group.key] is group.deliveries[partition.index]


def test_every_way_a_group_is_made_attaches_it_to_the_partitions() -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("jobs", {"partitions": 2, "max_deliveries": 1})
        await broker.put_group("jobs", "billing")
        await broker.publish("jobs", [OutgoingMessage(b"a"), OutgoingMessage(b"b")])
        (delivery,) = await broker.receive("jobs", "audit", "c1")  # made on first receive
        await broker.reject("jobs", "audit", [delivery.id])  # makes the DLQ
        assert len(await broker.dlq_messages("jobs")) == 1  # and its ~dlq group
        assert any(g.name == "~dlq" for g in broker.groups.values())
        _assert_partitions_hold_their_groups(broker)
        await broker.update_topic("jobs", {"partitions": 5})
        _assert_partitions_hold_their_groups(broker)
        assert len(broker.topics["jobs"].partitions[4].deliveries) == 2
        described = broker.describe_topic("jobs")
        assert {p["role"] for p in described["partitions"]} == {"leader"}

    run(scenario)


def test_a_restart_attaches_the_recovered_groups(tmp_path: Path) -> None:
    config = BrokerConfig(data_dir=tmp_path)

    async def before(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("jobs", {"partitions": 3})
        await broker.put_group("jobs", "a")
        await broker.put_group("jobs", "b")
        await broker.publish("jobs", [OutgoingMessage(b"x", partition=1)])
        (message,) = await broker.receive("jobs", "a", "c1")
        await broker.ack("jobs", "a", [message.id])

    async def after(broker: Broker, clock: FakeClock) -> None:
        _assert_partitions_hold_their_groups(broker)
        partition = broker.topics["jobs"].partitions[1]
        assert partition.deliveries["jobs/a"].floor == 1  # what the group settled came back
        assert partition.deliveries["jobs/b"].floor == 0

    run(before, config)
    run(after, config)


def test_a_group_whose_record_was_not_stored_leaves_no_state_behind(tmp_path: Path) -> None:
    async def scenario(broker: Broker, clock: FakeClock) -> None:
        await broker.create_topic("jobs", {"partitions": 2})

        async def failing(topic_name: str, name: str) -> None:
            raise OSError("disk gone")

        broker._groups.save = failing  # type: ignore[method-assign]
        with pytest.raises(OSError, match="disk gone"):
            await broker.put_group("jobs", "lost")
        assert "jobs/lost" not in broker.groups
        assert all(not p.deliveries for p in broker.topics["jobs"].partitions)

    run(scenario, BrokerConfig(data_dir=tmp_path))
