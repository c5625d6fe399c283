"""Replay a window of a topic (or its dead letters) into a new group, in one call.

The new group starts at the first message at or after `from_time` (the
earliest retained one if none is given) and ends before the first message
at or after `to_time` (the current end of each partition if none is given):
those end offsets are fixed when the replay is created, so messages
published later are not part of it. The group is an ordinary group in
everything else: members, acks, retries, its own DLQ moves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from logq.broker.group import Group, group_key
from logq.broker.topic import Topic
from logq.durations import parse_time_ms
from logq.errors import AlreadyExistsError, BadArgumentError

T = TypeVar("T")


class ReplayMixin:
    """The replay half of the Broker (see broker.py for the rest)."""

    groups: dict[str, Group]

    if TYPE_CHECKING:

        async def run(self, function: Callable[[], T]) -> T: ...
        def topic(self, name: str) -> Topic: ...
        def dlq_name(self, topic_name: str) -> str: ...
        def _check_open(self) -> None: ...
        def describe_group(self, topic_name: str, name: str) -> dict[str, Any]: ...
        async def put_group(
            self, topic_name: str, name: str, settings: dict[str, Any] | None = None
        ) -> Group: ...
        async def seek(
            self, topic_name: str, group_name: str, target: object
        ) -> dict[int, int]: ...

    async def replay(
        self,
        topic_name: str,
        group_name: str,
        *,
        from_time: object = None,
        to_time: object = None,
        dlq: bool = False,
        settings: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create `group_name` to replay [from_time, to_time) of the topic (of
        its DLQ with `dlq`); returns the new group, described."""
        self._check_open()
        name = self.dlq_name(topic_name) if dlq else topic_name
        topic = self.topic(name)
        if group_key(name, group_name) in self.groups:
            raise AlreadyExistsError(
                f"group {group_name!r} of {name!r} exists: replay into a new one"
            )
        start = None if from_time is None else parse_time_ms(from_time, name="from_time")
        end = None if to_time is None else parse_time_ms(to_time, name="to_time")
        if start is not None and end is not None and end < start:
            raise BadArgumentError("to_time is before from_time")
        ends = []
        for partition in topic.partitions:
            log = partition.log
            found = None
            if end is not None:
                found = await self.run(lambda log=log: log.offset_for_time(end))  # type: ignore[misc]
            ends.append(partition.readable_end() if found is None else found)
        await self.put_group(name, group_name, {**(settings or {}), "end_offsets": ends})
        await self.seek(name, group_name, "earliest" if start is None else {"time": start})
        return self.describe_group(name, group_name)
