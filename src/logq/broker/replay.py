"""Replay a window of a topic (or its dead letters) into a new group, in one call.

The new group starts at the first message at or after `from_time` (the
earliest retained one if none is given) and ends before the first message
at or after `to_time` (the current end of each partition if none is given):
those end offsets are fixed when the replay is created, so messages
published later are not part of it. The group is an ordinary group in
everything else: members, acks, retries, its own DLQ moves.
"""

from __future__ import annotations

from typing import Any

from logq.broker.core import Core
from logq.broker.group import group_key
from logq.broker.group_catalog import GroupCatalog
from logq.broker.settlement import Settlement
from logq.broker.views import GroupView
from logq.durations import parse_time_ms
from logq.errors import AlreadyExistsError, BadArgumentError


class Replays:
    """Creates replay groups; see the module doc."""

    def __init__(self, core: Core, groups: GroupCatalog, settlement: Settlement) -> None:
        self._core = core
        self._groups = groups
        self._settlement = settlement

    async def replay(
        self,
        topic_name: str,
        group_name: str,
        *,
        from_time: object = None,
        to_time: object = None,
        dlq: bool = False,
        settings: dict[str, Any] | None = None,
    ) -> GroupView:
        """Create `group_name` to replay [from_time, to_time) of the topic (of
        its DLQ with `dlq`); returns the new group, described."""
        self._core.check_open()
        name = self._core.dlq_name(topic_name) if dlq else topic_name
        topic = self._core.topic(name)
        if group_key(name, group_name) in self._core.groups:
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
                found = await self._core.run(lambda log=log: log.offset_for_time(end))  # type: ignore[misc]
            ends.append(partition.readable_end() if found is None else found)
        await self._groups.put_group(name, group_name, {**(settings or {}), "end_offsets": ends})
        await self._settlement.seek(
            name, group_name, "earliest" if start is None else {"time": start}
        )
        return self._groups.describe_group(name, group_name)
