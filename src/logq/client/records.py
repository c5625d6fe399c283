"""Messages on the client side: what a consumer receives, and batch building.

The client builds record batches itself (the storage format of
docs/format.md, shared with the log) so that the server stores them with
per-batch work only, and decodes the batches it fetches (a received
message reads its batch lazily: see `logq.client.messages`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from logq.log.batch import iter_headers


@dataclass(frozen=True, slots=True)
class PublishResult:
    id: str
    partition: int
    offset: int


class MessageData:
    """A stored message; `attempt` is 0 when it was read without a group, and
    so is `lease`, the token naming the delivery that settlements carry.

    Every field is a read-only property so that a received message (see
    AsyncMessage) can answer them from its batch, built per message on the
    consumer's hot path with no per-field work; this class stores them."""

    __slots__ = (
        "_attempt",
        "_headers",
        "_key",
        "_lease",
        "_offset",
        "_partition",
        "_priority",
        "_timestamp_ms",
        "_topic",
        "_value",
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
        lease: int = 0,
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._key = key
        self._value = value
        self._headers = headers if headers is not None else {}
        self._priority = priority
        self._timestamp_ms = timestamp_ms
        self._attempt = attempt
        self._lease = lease

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def partition(self) -> int:
        return self._partition

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def key(self) -> bytes | None:
        return self._key

    @property
    def value(self) -> bytes | None:
        return self._value

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    @property
    def priority(self) -> str:
        return self._priority

    @property
    def timestamp_ms(self) -> int:
        return self._timestamp_ms

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def lease(self) -> int:
        return self._lease

    @property
    def id(self) -> str:
        """`<topic>:<partition>:<offset>`: resolves without knowing the topic."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def receipt(self) -> str:
        """`<id>@<lease>`: settles this delivery only (the id when there is no lease)."""
        return f"{self.id}@{self.lease}" if self.lease else self.id

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
        lease=int(fields.get("lease") or 0),  # type: ignore[call-overload]
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


def batches_in(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Where each batch in `data` holding offsets of [start, end) begins, with
    the record indexes [first, last) that fall in it."""
    for position, header in iter_headers(data):
        if header.next_offset <= start or header.base_offset >= end:
            continue
        first = max(start - header.base_offset, 0)
        last = min(end - header.base_offset, header.record_count)
        yield position, first, last
