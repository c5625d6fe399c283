"""Messages as the broker's front ends see them, message ids, lanes, partitioning.

A message id is `<topic>:<partition>:<offset>`: it resolves without knowing
anything else, stays the same for the message's life, and is safe in a URL
path segment. Treat it as opaque; its shape may grow, never change meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from logq.errors import BadArgumentError
from logq.lanes import DEFAULT_LANES, Lanes
from logq.log import Record

# Lane index 0 is the default so that a batch built without a lane is "normal".
ID_LENGTH_MAX = 300


@dataclass(frozen=True, slots=True, order=True)
class MessageId:
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: object) -> MessageId:
        if not isinstance(text, str) or len(text) > ID_LENGTH_MAX:
            raise BadArgumentError(f"message id must be a string like 'orders:2:45', got {text!r}")
        topic, _, rest = text.rpartition(":")
        topic, _, partition = topic.rpartition(":")
        if not topic or not partition.isdecimal() or not rest.isdecimal():
            raise BadArgumentError(
                f"malformed message id {text!r}, expected '<topic>:<partition>:<offset>'"
            )
        return cls(topic, int(partition), int(rest))


@dataclass(slots=True)
class OutgoingMessage:
    """A message to publish, before the broker places it. Not frozen: built
    once per message on the REST publish path, where a frozen dataclass's
    __init__ costs five times as much; nothing changes it after."""

    value: bytes | None
    key: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    priority: str = "normal"
    partition: int | None = None
    timestamp_ms: int | None = None
    ttl_ms: int | None = None  # expires this long after publish
    deliver_at_ms: int | None = None  # delayed or scheduled: deliverable from then
    dedup_id: str | None = None  # stored once within the topic's dedup window


@dataclass(frozen=True, slots=True)
class Message:
    """A stored message, as read or delivered."""

    id: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    timestamp_ms: int
    priority: str
    attempt: int = 0  # 0 when read without a group
    lease: int = 0  # the delivery's lease token (0 when read without a group)
    expires_at_ms: int | None = None  # delivered: when it expires (None: never)

    @property
    def receipt(self) -> str:
        """`<id>@<lease>`: names this delivery to settle it (see docs/protocol.md)."""
        return f"{self.id}@{self.lease}"


@dataclass(slots=True)  # not frozen: one per published message (see OutgoingMessage)
class PublishResult:
    id: str
    partition: int
    offset: int


def message_from_record(
    topic: str,
    partition: int,
    record: Record,
    lane: int,
    attempt: int = 0,
    lanes: Lanes = DEFAULT_LANES,
    lease: int = 0,
    expires_at_ms: int | None = None,
) -> Message:
    return Message(
        id=f"{topic}:{partition}:{record.offset}",
        topic=topic,
        partition=partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=record.headers,
        timestamp_ms=record.timestamp,
        priority=lanes.name_of(lane),
        attempt=attempt,
        lease=lease,
        expires_at_ms=expires_at_ms,
    )
