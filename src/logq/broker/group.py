"""A consumer group at run time: settings, members, per-partition delivery state.

`ordered` groups give each partition to one member at a time (see
membership.py for how partitions move between members); `shared` groups
hand any partition to any member, starting from a rotating partition so
work spreads evenly.
"""

from __future__ import annotations

from logq.broker.backoff import Backoff
from logq.broker.lifecycle import Lifecycle
from logq.broker.membership import Membership
from logq.broker.settings import GroupMode, GroupSettings, TopicSettings
from logq.state.delivery import PartitionDelivery
from logq.state.lane_guard import LaneGuard


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
        # shared groups: per partition, the starvation guard's counts (in memory only)
        self.lane_guards = [LaneGuard() for _ in deliveries]
        self.membership = Membership(
            len(deliveries),
            settings.mode is GroupMode.ORDERED,
            settings.assignor,
            settings.revoke_timeout_ms,
        )
        self._rotation = 0
        self.lifecycle = Lifecycle()
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
                "stale",
                "lost_to_damage",
            ),
            0,
        )

    def visibility_timeout_ms(self, topic: TopicSettings) -> int:
        return self.settings.visibility_timeout_ms or topic.visibility_timeout_ms

    def backoff(self, topic: TopicSettings) -> Backoff:
        return self.settings.backoff or topic.backoff

    def backoff_wait_ms(self, topic: TopicSettings, attempt: int, jitter: float) -> int:
        """How long a message released after `attempt` waits (the group's
        backoff, `jitter` in [0, 1)), counted."""
        wait = self.backoff(topic).delay_ms(attempt, jitter)
        if wait:
            self.counters["backoff_waits"] += 1
            self.counters["backoff_wait_ms"] += wait
        return wait

    def max_deliveries(self, topic: TopicSettings) -> int:
        return self.settings.max_deliveries or topic.max_deliveries

    def touch(self, consumer: str, now_ms: int, session_timeout_ms: int) -> bool:
        """`consumer` is alive (joining if new); returns True if it just joined."""
        return self.membership.touch(consumer, now_ms, session_timeout_ms)

    def leave(self, consumer: str, now_ms: int) -> bool:
        return self.membership.leave(consumer, now_ms)

    def expire_members(self, now_ms: int) -> list[str]:
        return self.membership.expire(now_ms)

    def hand_over(self, now_ms: int) -> list[int]:
        """Hand over revoking partitions whose in-flight messages are all settled."""
        if not self.membership.revoking:
            return []
        return self.membership.settle(lambda p: self.deliveries[p].in_flight, now_ms)

    def partitions_for(self, consumer: str) -> list[int]:
        """Partitions to serve `consumer` from, in the order to try them."""
        if self.settings.mode is GroupMode.ORDERED:
            return self.membership.partitions_for(consumer)
        count = len(self.deliveries)
        self._rotation = (self._rotation + 1) % count
        return [(self._rotation + step) % count for step in range(count)]

    def add_partitions(self, count: int, now_ms: int) -> None:
        while len(self.deliveries) < count:
            self.deliveries.append(PartitionDelivery())
        while len(self.lane_guards) < len(self.deliveries):
            self.lane_guards.append(LaneGuard())
        self.membership.resize(len(self.deliveries), now_ms)

    def configure(self, settings: GroupSettings, now_ms: int) -> None:
        self.settings = settings
        self.membership.ordered = settings.mode is GroupMode.ORDERED
        self.membership.revoke_timeout_ms = settings.revoke_timeout_ms
        self.membership.set_strategy(settings.assignor, now_ms)


def internal_group(name: str) -> bool:
    """A group the broker keeps for itself (`~dlq`): no user can name one."""
    return name.startswith("~")


def group_key(topic: str, group: str) -> str:
    return f"{topic}/{group}"
