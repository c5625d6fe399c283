"""The groups of every topic: made, changed, described, stored as records.

A group's record (its settings) is durable before the group is used; its
delivery state lives in the state logs of its topic's partitions
(state/partition_state.py), not here.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from logq.broker.core import Core
from logq.broker.group import Group, group_key, internal_group
from logq.broker.lane_index import forget_loaded
from logq.broker.metadata import group_record_key
from logq.broker.settings import GroupMode, check_group_name, group_settings
from logq.broker.topic_counts import lag_end
from logq.broker.views import GroupPartitionView, GroupView
from logq.state.delivery import PartitionDelivery


class GroupCatalog:
    """Creates, changes and describes groups."""

    def __init__(self, core: Core) -> None:
        self._core = core

    async def save(self, topic_name: str, name: str) -> None:
        """Write one group's record (deleted when the group is gone), durably."""
        key = group_key(topic_name, name)
        groups = self._core.groups

        def document() -> dict[str, Any] | None:
            group = groups.get(key)
            return None if group is None else group.settings.as_dict()

        await self._core.records.sync(group_record_key(topic_name, name), document)

    async def put_group(
        self, topic_name: str, name: str, settings: dict[str, Any] | None = None
    ) -> Group:
        """Create a group, or change its settings."""
        core = self._core
        core.check_open()
        topic = core.topic(topic_name)
        check_group_name(name)
        key = group_key(topic_name, name)
        core.records.check_usable(group_record_key(topic_name, name))
        existing = core.groups.get(key)
        base = existing.settings if existing else core.config.group_defaults
        parsed = group_settings(settings or {}, base)
        before = None if existing is None else existing.settings.mode
        if parsed.mode is not before and GroupMode.SHARED in (before, parsed.mode):
            for partition in topic.partitions:  # the index follows the shared groups
                forget_loaded(partition)
        if existing is not None:
            existing.configure(parsed, core.clock.now_ms())
        else:
            deliveries = [PartitionDelivery() for _ in topic.partitions]
            core.groups[key] = Group(topic_name, name, parsed, deliveries)
            topic.attach(key, deliveries)
        try:
            await self.save(topic_name, name)
        except BaseException:
            if existing is None:  # a group whose record was not stored is not made
                core.groups.pop(key, None)
                topic.detach(key)
            raise
        return core.groups[key]

    async def group_for_receive(self, topic_name: str, name: str) -> Group:
        """The group, created with default settings on first use."""
        existing = self._core.groups.get(group_key(topic_name, name))
        if existing is not None:
            return existing
        return await self.put_group(topic_name, name)

    async def internal_group(self, topic_name: str, name: str) -> Group:
        """A group the broker keeps for itself (a name no user can give),
        made with the default settings on first use, as long as its topic
        has partitions."""
        core = self._core
        key = group_key(topic_name, name)
        group = core.groups.get(key)
        topic = core.topic(topic_name)
        if group is None:
            group = Group(
                topic_name,
                name,
                core.config.group_defaults,
                [PartitionDelivery() for _ in topic.partitions],
            )
            core.groups[key] = group
            await self.save(topic_name, name)
        while len(group.deliveries) < len(topic.partitions):
            group.deliveries.append(PartitionDelivery())
        topic.attach(key, group.deliveries)
        return group

    def describe_group(self, topic_name: str, name: str) -> GroupView:
        core = self._core
        group = core.group(topic_name, name)
        topic = core.topic(topic_name)
        assignment = group.membership.assignment()
        owners = group.membership.owner
        ends = group.settings.end_offsets
        partitions = []
        for index, state in enumerate(group.deliveries):
            log_end = topic.partitions[index].readable_end()
            partitions.append(
                GroupPartitionView(
                    partition=index,
                    committed=state.floor,
                    next_offset=state.next_offset,
                    log_end=log_end,
                    lag=state.unsettled(lag_end(group, index, log_end)),
                    in_flight=state.in_flight,
                    pending_redelivery=state.pending_count,
                    owner=owners.get(index),
                    end_offset=ends[index] if ends and index < len(ends) else None,
                )
            )
        return GroupView(
            topic=topic_name,
            group=name,
            settings=group.settings.as_dict(),
            members=[
                {**asdict(member), **assignment.get(member.name, {})}
                for member in group.membership.members.values()
            ],
            assignment={name: entry["partitions"] for name, entry in assignment.items()},
            generation=group.membership.generation,
            rebalances=[record.as_dict() for record in group.membership.history],
            partitions=partitions,
            lag=sum(p["lag"] for p in partitions),
            in_flight=sum(p["in_flight"] for p in partitions),
            counts=dict(group.counters),
            lifecycle=group.lifecycle.as_dict(),
        )

    def list_groups(self) -> list[GroupView]:
        return [
            self.describe_group(group.topic, group.name)
            for group in sorted(self._core.groups.values(), key=lambda g: g.key)
            if not internal_group(group.name)
        ]
