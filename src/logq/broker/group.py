"""A consumer group at run time: settings, members, per-partition delivery state.

`ordered` groups give each partition to one member at a time; members are
assigned in join order (partition p goes to the (p mod n)-th member), and a
member that stops asking for `session_timeout_ms` leaves. `shared` groups
hand any partition to any member, starting from a rotating partition so
work spreads evenly.
"""

from __future__ import annotations

from dataclasses import dataclass

from logq.broker.backoff import Backoff
from logq.broker.settings import GroupMode, GroupSettings, TopicSettings
from logq.state.delivery import PartitionDelivery


@dataclass(slots=True)
class Member:
    name: str
    joined_ms: int
    last_seen_ms: int


class Group:
    def __init__(
        self,
        topic: str,
        name: str,
        settings: GroupSettings,
        deliveries: list[PartitionDelivery],
    ) -> None:
        self.topic = topic
        self.name = name
        self.key = group_key(topic, name)
        self.settings = settings
        self.deliveries = deliveries
        self.members: dict[str, Member] = {}
        self._rotation = 0
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "delivered",
                "acked",
                "nacked",
                "rejected",
                "redelivered",
                "dead_lettered",
                "redriven",
                "expired",
                "ttl_expired",
                "backoff_waits",
                "backoff_wait_ms",
            ),
            0,
        )

    def visibility_timeout_ms(self, topic: TopicSettings) -> int:
        return self.settings.visibility_timeout_ms or topic.visibility_timeout_ms

    def backoff(self, topic: TopicSettings) -> Backoff:
        return self.settings.backoff or topic.backoff

    def max_deliveries(self, topic: TopicSettings) -> int:
        return self.settings.max_deliveries or topic.max_deliveries

    def touch(self, consumer: str, now_ms: int) -> None:
        member = self.members.get(consumer)
        if member is None:
            self.members[consumer] = Member(consumer, now_ms, now_ms)
        else:
            member.last_seen_ms = now_ms

    def leave(self, consumer: str) -> bool:
        return self.members.pop(consumer, None) is not None

    def expire_members(self, now_ms: int, session_timeout_ms: int) -> list[str]:
        gone = [
            m.name for m in self.members.values() if now_ms - m.last_seen_ms > session_timeout_ms
        ]
        for name in gone:
            del self.members[name]
        return gone

    def assignment(self) -> dict[str, list[int]]:
        names = list(self.members)
        result: dict[str, list[int]] = {name: [] for name in names}
        if self.settings.mode is GroupMode.ORDERED and names:
            for partition in range(len(self.deliveries)):
                result[names[partition % len(names)]].append(partition)
        elif names:
            for name in names:
                result[name] = list(range(len(self.deliveries)))
        return result

    def partitions_for(self, consumer: str) -> list[int]:
        """Partitions to serve `consumer` from, in the order to try them."""
        count = len(self.deliveries)
        if self.settings.mode is GroupMode.ORDERED:
            names = list(self.members)
            if consumer not in names:
                return []
            position = names.index(consumer)
            return [p for p in range(count) if p % len(names) == position]
        self._rotation = (self._rotation + 1) % count
        return [(self._rotation + step) % count for step in range(count)]

    def add_partitions(self, count: int) -> None:
        while len(self.deliveries) < count:
            self.deliveries.append(PartitionDelivery())


def group_key(topic: str, group: str) -> str:
    return f"{topic}/{group}"
