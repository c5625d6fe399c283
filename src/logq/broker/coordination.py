"""Group coordination: join, heartbeat, leave, session expiry, hand-overs.

Members join explicitly (JOIN, the client's consumers) or implicitly with
their first receive (REST); either way they stay members while they are
heard from within their session timeout. Partitions of `ordered` groups
move cooperatively (see membership.py): after every settle the broker
hands over revoking partitions that have drained, and wakes the receives
waiting on the topic so the new owner starts at once.
"""

from __future__ import annotations

from logq.broker.core import Core
from logq.broker.group import Group
from logq.broker.group_catalog import GroupCatalog
from logq.broker.settings import check_consumer_name
from logq.broker.views import MemberView
from logq.durations import parse_duration_ms
from logq.errors import BadArgumentError, LimitError

MEMBERS_MAX = 10_000  # per group; silent members leave after their session


class Coordinator:
    """Group membership: who is in each group and which partitions they serve."""

    def __init__(self, core: Core, groups: GroupCatalog) -> None:
        self._core = core
        self._groups = groups

    def session_timeout_ms(self, group: Group) -> int:
        return group.settings.session_timeout_ms or self._core.config.session_timeout_ms

    def member_alive(self, group: Group, consumer: str, session_timeout_ms: int | None) -> None:
        members = group.membership.members
        if consumer not in members and len(members) >= MEMBERS_MAX:
            raise LimitError(
                f"group {group.name!r} has {len(members)} members, the limit is {MEMBERS_MAX}"
            )
        now_ms = self._core.clock.now_ms()
        session = session_timeout_ms or self.session_timeout_ms(group)
        if group.touch(consumer, now_ms, session):
            self._after_rebalance(group, now_ms)

    def _after_rebalance(self, group: Group, now_ms: int) -> None:
        group.hand_over(now_ms)
        self._core.topics[group.topic].changed.set()

    def hand_over(self, group: Group) -> None:
        """Hand over drained revoking partitions; wake receives if any moved."""
        if group.membership.revoking and group.hand_over(self._core.clock.now_ms()):
            self._core.topics[group.topic].changed.set()

    async def join(
        self,
        topic_name: str,
        group_name: str,
        consumer: str,
        *,
        session_timeout_ms: int | None = None,
    ) -> MemberView:
        """Join (or stay in) a group; returns the member's view of the group."""
        self._core.check_open()
        check_consumer_name(consumer)
        session = None
        if session_timeout_ms is not None:
            session = parse_duration_ms(session_timeout_ms, name="session_timeout")
            if not 100 <= session <= 3_600_000:
                raise BadArgumentError(
                    f"session_timeout is {session} ms, it must be within 100 ms..1h"
                )
        self._core.topic(topic_name)
        group = await self._groups.group_for_receive(topic_name, group_name)
        member = group.membership.members.get(consumer)
        if member is not None and session is not None:
            member.session_timeout_ms = session
        self.member_alive(group, consumer, session)
        return self.member_view(group, consumer)

    def heartbeat(self, topic_name: str, group_name: str, consumer: str) -> MemberView:
        """Keep a member alive; a member that had expired joins again."""
        self._core.check_open()
        check_consumer_name(consumer)
        group = self._core.group(topic_name, group_name)
        self.member_alive(group, consumer, None)
        return self.member_view(group, consumer)

    def leave(self, topic_name: str, group_name: str, consumer: str) -> bool:
        """Leave at once: the member's partitions go to the others without
        waiting for its session to expire (its leases still run out)."""
        group = self._core.groups.get(f"{topic_name}/{group_name}")
        if group is None:
            return False
        now_ms = self._core.clock.now_ms()
        if not group.leave(consumer, now_ms):
            return False
        self._after_rebalance(group, now_ms)
        return True

    def expire_sessions(self) -> None:
        now_ms = self._core.clock.now_ms()
        for group in self._core.groups.values():
            if group.expire_members(now_ms):
                self._after_rebalance(group, now_ms)
            elif group.membership.revoking and group.hand_over(now_ms):
                self._core.topics[group.topic].changed.set()

    def member_view(self, group: Group, consumer: str) -> MemberView:
        entry = group.membership.assignment().get(consumer, {})
        member = group.membership.members.get(consumer)
        return MemberView(
            generation=group.membership.generation,
            member=consumer,
            mode=group.settings.mode.value,
            session_timeout_ms=member.session_timeout_ms if member else None,
            partitions=entry.get("partitions", []),
            revoking=entry.get("revoking", []),
            incoming=entry.get("incoming", []),
        )
