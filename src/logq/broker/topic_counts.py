"""Every topic's and group's counts in one pass, for a view of all of them
at once (the dashboard's tables, every second).

`Broker.describe_topic` answers one topic in full (its settings, each
partition, its groups' names) and finds its groups by scanning them all;
`describe_group` copies a group's settings, members and history. A
thousand of those a second is most of a core. Here the groups are sorted
by topic once and each topic or group gets only its totals, the same
numbers the descriptions give."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from logq.broker.group import Group, internal_group
from logq.broker.topic import Topic


def topic_counts(topics: Mapping[str, Topic], groups: Iterable[Group]) -> list[dict[str, Any]]:
    """Per topic, by name: partitions, messages, bytes, pending, in flight,
    and its groups' acked, failed (redelivered) and dead-lettered totals."""
    by_topic: dict[str, list[Group]] = {}
    for group in groups:
        by_topic.setdefault(group.topic, []).append(group)
    counted = []
    for name in sorted(topics):
        topic = topics[name]
        its_groups = by_topic.get(name, [])
        messages = size = pending = in_flight = 0
        for partition in topic.partitions:
            log = partition.log
            if log.opened:
                end = partition.readable_end()
                messages += partition.readable_messages()
                size += log.size_bytes
            else:  # idle ones stay closed: their figures from their files
                first, end, stored = log.stored_figures()
                messages += end - first
                size += stored
            for group in its_groups:
                delivery = group.deliveries[partition.index]
                pending += delivery.unsettled(end)
                in_flight += delivery.in_flight
        counted.append(
            {
                "name": name,
                "partitions": len(topic.partitions),
                "messages": messages,
                "bytes": size,
                "pending": pending,
                "in_flight": in_flight,
                "acked": sum(group.counters["acked"] for group in its_groups),
                "failed": sum(group.counters["redelivered"] for group in its_groups),
                "dead_lettered": sum(group.counters["dead_lettered"] for group in its_groups),
            }
        )
    return counted


def lag_end(group: Group, partition: int, log_end: int) -> int:
    """Where a group's lag on a partition ends: the readable end, or the end
    offset the group was made with (a replay of a window) if that is sooner."""
    ends = group.settings.end_offsets
    return min(log_end, ends[partition]) if ends and partition < len(ends) else log_end


def group_counts(topics: Mapping[str, Topic], groups: Iterable[Group]) -> list[dict[str, Any]]:
    """Per group but the broker's own, by topic and name: its mode, members,
    lag and messages in flight."""
    counted = []
    for group in sorted(groups, key=lambda group: group.key):
        if internal_group(group.name):
            continue
        partitions = topics[group.topic].partitions
        lag = in_flight = 0
        for index, delivery in enumerate(group.deliveries):
            lag += delivery.unsettled(lag_end(group, index, partitions[index].readable_end()))
            in_flight += delivery.in_flight
        counted.append(
            {
                "topic": group.topic,
                "group": group.name,
                "mode": group.settings.mode.value,
                "members": len(group.membership.members),
                "lag": lag,
                "in_flight": in_flight,
            }
        )
    return counted
