"""Messages on the client side: what a consumer receives, and batch building.

The client builds record batches itself (the storage format of
docs/format.md, shared with the log) so that the server stores them with
per-batch work only, and decodes the batches it fetches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from logq.lanes import DEFAULT_LANES, Lanes
from logq.log.batch import decode_batch, decode_headers, iter_headers


@dataclass(frozen=True, slots=True)
class PublishResult:
    id: str
    partition: int
    offset: int


class MessageData:
    """A stored message; `attempt` is 0 when it was read without a group.

    A plain class with slots and positional construction: consumers build
    one per message, so this is on the client's hot path."""

    __slots__ = (
        "attempt",
        "headers",
        "key",
        "offset",
        "partition",
        "priority",
        "timestamp_ms",
        "topic",
        "value",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: dict[str, str] | None = None,
        priority: str = "normal",
        timestamp_ms: int = 0,
        attempt: int = 0,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers if headers is not None else {}
        self.priority = priority
        self.timestamp_ms = timestamp_ms
        self.attempt = attempt

    @property
    def id(self) -> str:
        """`<topic>:<partition>:<offset>`: resolves without knowing the topic."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(id={self.id!r}, key={self.key!r}, value={self.value!r}, "
            f"headers={self.headers!r}, priority={self.priority!r}, attempt={self.attempt})"
        )


def message_from_reply(reply: object) -> MessageData:
    """A message map (RESP3) or flat field/value array (RESP2) from the server."""
    fields = _as_map(reply)
    headers = _as_map(fields.get("headers") or {})
    return MessageData(
        topic=_text(fields["topic"]),
        partition=int(fields["partition"]),  # type: ignore[call-overload]
        offset=int(fields["offset"]),  # type: ignore[call-overload]
        key=fields.get("key"),  # type: ignore[arg-type]
        value=fields.get("value"),  # type: ignore[arg-type]
        headers={str(k): _text(v) for k, v in headers.items()},
        priority=_text(fields.get("priority") or b"normal"),
        timestamp_ms=int(fields.get("timestamp") or 0),  # type: ignore[call-overload]
        attempt=int(fields.get("attempt") or 0),  # type: ignore[call-overload]
    )


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _as_map(value: object) -> dict[str, object]:
    if isinstance(value, dict):
        return {_text(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {_text(value[i]): value[i + 1] for i in range(0, len(value) - 1, 2)}
    raise ValueError(f"expected a map from the server, got {type(value).__name__}")


def as_map(value: object) -> dict[str, Any]:
    """A metadata reply (topic, group, stats) as plain text-keyed data: maps
    become dicts and every bulk string that is UTF-8 becomes str, all the way
    down. Never used for message keys and values, which stay bytes."""
    tree = as_text(value)
    if not isinstance(tree, dict):
        raise TypeError(f"expected a map from the server, got {type(value).__name__}")
    return tree


def as_text(value: object) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value
    if isinstance(value, dict):
        return {str(as_text(k)): as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_text(item) for item in value]
    return value


M = TypeVar("M", bound=MessageData)


def decode_delivery(
    topic: str,
    partition: int,
    start: int,
    end: int,
    attempt: int,
    data: bytes,
    factory: Callable[..., M] = MessageData,  # type: ignore[assignment]
    *extra: Any,
    lanes: Lanes = DEFAULT_LANES,
) -> list[M]:
    """The messages of fetched batches whose offsets lie in [start, end),
    built by `factory` (a MessageData class) with `extra` positional fields."""
    messages: list[M] = []
    for position, header in iter_headers(data):
        if header.next_offset <= start or header.base_offset >= end:
            continue
        decoded = decode_batch(data, position)
        lane = lanes.name_of(header.lane)
        first = max(start - header.base_offset, 0)
        last = min(end - header.base_offset, header.record_count)
        base = header.base_offset
        window = slice(first, last)
        messages += [
            factory(
                topic,
                partition,
                offset,
                key,
                value,
                decode_headers(block) if block else {},
                lane,
                timestamp,
                attempt,
                *extra,
            )
            for offset, key, value, block, timestamp in zip(
                range(base + first, base + last),
                decoded.keys[window],
                decoded.values[window],
                decoded.header_blocks[window],
                decoded.timestamps[window],
                strict=True,
            )
        ]
    return messages
