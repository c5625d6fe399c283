"""Messages over HTTP: JSON in, OutgoingMessage out; Message in, JSON out.

A message's value is bytes. Over REST it travels either as JSON (`value`:
any JSON value, stored as its JSON text) or as base64 (`value_b64`: any
bytes). A value that came as JSON is marked with the header
`content-type: application/json`, and comes back as JSON; every other value
comes back as base64, so a message returns the way it went in. The JSON text
is stored as the client wrote it (msgspec hands it over raw, without
building Python objects on the publish path); it is decoded again on the way
out, so a message marked as JSON by some other producer but holding other
bytes still comes back, as base64, and never breaks the response.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from logq.broker import Message, OutgoingMessage
from logq.broker.dedup import DEDUP_ID_LENGTH_MAX
from logq.broker.delivery import (
    HEADER_ATTEMPTS,
    HEADER_DEAD_AT,
    HEADER_GROUP,
    HEADER_ORIGIN_ID,
    HEADER_REASON,
)
from logq.durations import parse_duration_ms, parse_time_ms
from logq.errors import BadArgumentError

CONTENT_TYPE_HEADER = "content-type"
JSON_CONTENT_TYPE = "application/json"
# the headers of a JSON value sent with none of its own: one shared dict
# (never changed: the broker copies before it adds), so a batch of plain
# JSON messages encodes its header block once (see encode_batch)
_JSON_ONLY: dict[str, str] = {CONTENT_TYPE_HEADER: JSON_CONTENT_TYPE}


class MessageIn(msgspec.Struct, forbid_unknown_fields=True):
    """One message to publish, as the REST API accepts it."""

    key: str | None = None
    key_b64: str | None = None
    value: msgspec.Raw | UnsetType = UNSET
    value_b64: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    priority: str | None = None
    partition: int | None = None
    delay: int | str | None = None
    deliver_at: int | str | None = None
    ttl: int | str | None = None
    dedup_id: str | None = None


class PublishBody(MessageIn, forbid_unknown_fields=True):
    """One message object, or `{"messages": [...]}`."""

    messages: list[MessageIn] | UnsetType = UNSET  # null is no list: refused


def outgoing_messages(body: PublishBody, now_ms: int) -> list[OutgoingMessage]:
    """The messages of a publish body; `now_ms` places a relative `delay`."""
    if body.messages is UNSET:
        return [outgoing_message(body, None, now_ms)]
    if msgspec.structs.replace(body, messages=UNSET) != PublishBody():
        raise BadArgumentError(
            'give either one message object or {"messages": [...]}, not message fields beside "messages"'
        )
    return [outgoing_message(m, index, now_ms) for index, m in enumerate(body.messages)]


def _where(index: int | None) -> str:
    """Names the message in an error (only then: this is the publish path)."""
    return "message" if index is None else f"messages[{index}]"


def outgoing_message(message: MessageIn, index: int | None, now_ms: int) -> OutgoingMessage:
    """`index` is the message's place in a batch (None for a single message)."""
    if _plain(message):  # the common case, kept lean: it runs per message
        text = bytes(message.value)  # type: ignore[arg-type]
        if not text.isascii():
            _check_utf8(text, index)
        return OutgoingMessage(
            text, None, _JSON_ONLY, message.priority or "normal", message.partition
        )
    _check_dedup_id(message, index)
    headers = message.headers
    if message.value is not UNSET:
        if message.value_b64 is not None:
            raise BadArgumentError(f"{_where(index)}: give value or value_b64, not both")
        text = bytes(message.value)
        if not text.isascii():
            _check_utf8(text, index)
        value: bytes | None = text
        headers = _json_headers(headers, index)
    elif message.value_b64 is not None:
        value = _base64(message.value_b64, index, "value_b64")
    else:
        value = None
    if message.key is not None and message.key_b64 is not None:
        raise BadArgumentError(f"{_where(index)}: give key or key_b64, not both")
    key = (
        message.key.encode()
        if message.key is not None
        else _base64(message.key_b64, index, "key_b64")
        if message.key_b64 is not None
        else None
    )
    return OutgoingMessage(
        value=value,
        key=key,
        headers=headers,
        priority=message.priority or "normal",
        partition=message.partition,
        ttl_ms=None
        if message.ttl is None
        else parse_duration_ms(message.ttl, name=f"{_where(index)}.ttl"),
        deliver_at_ms=_deliver_at(message, index, now_ms),
        dedup_id=message.dedup_id,
    )


def _plain(message: MessageIn) -> bool:
    """A JSON value, perhaps a key, priority or partition, and nothing else."""
    return (
        message.value is not UNSET
        and message.key is None
        and not message.headers
        and message.value_b64 is None
        and message.key_b64 is None
        and message.ttl is None
        and message.delay is None
        and message.deliver_at is None
        and message.dedup_id is None
    )


def _check_utf8(text: bytes, index: int | None) -> None:
    """msgspec checked the JSON syntax; its strings must be UTF-8 too."""
    try:
        text.decode()
    except UnicodeDecodeError:
        raise BadArgumentError(f"{_where(index)}: value is not valid UTF-8") from None


def _deliver_at(message: MessageIn, index: int | None, now_ms: int) -> int | None:
    if message.delay is not None and message.deliver_at is not None:
        raise BadArgumentError(f"{_where(index)}: give delay or deliver_at, not both")
    if message.delay is not None:
        return now_ms + parse_duration_ms(message.delay, name=f"{_where(index)}.delay")
    if message.deliver_at is not None:
        return parse_time_ms(message.deliver_at, name=f"{_where(index)}.deliver_at")
    return None


def _check_dedup_id(message: MessageIn, index: int | None) -> None:
    if message.dedup_id is not None and not 1 <= len(message.dedup_id) <= DEDUP_ID_LENGTH_MAX:
        raise BadArgumentError(
            f"{_where(index)}.dedup_id must be 1..{DEDUP_ID_LENGTH_MAX} characters"
        )


def _json_headers(headers: dict[str, str], index: int | None) -> dict[str, str]:
    """The headers plus the JSON mark; a conflicting content-type is refused."""
    if not headers:
        return _JSON_ONLY
    result: dict[str, str] = {}
    for name, text in headers.items():
        if name.lower() == CONTENT_TYPE_HEADER:
            if text.split(";")[0].strip().lower() != JSON_CONTENT_TYPE:
                raise BadArgumentError(
                    f"{_where(index)}: a JSON value has content-type {JSON_CONTENT_TYPE}, "
                    f"not {text[:80]!r} (send other bytes as value_b64)"
                )
            continue
        result[name] = text
    result[CONTENT_TYPE_HEADER] = JSON_CONTENT_TYPE
    return result


def _base64(text: str, index: int | None, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadArgumentError(f"{_where(index)}.{field} is not valid base64") from None


# -- out ----------------------------------------------------------------------------


def message_json(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": message.id,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
    }
    _put_key(data, message.key)
    _put_value(data, message.value, message.headers)
    data["headers"] = message.headers
    data["priority"] = message.priority
    data["timestamp"] = message.timestamp_ms
    data["attempt"] = message.attempt
    if message.lease:
        data["lease"] = message.lease
        data["receipt"] = message.receipt
    if message.expires_at_ms is not None:
        data["expires_at"] = message.expires_at_ms
    return data


def _put_key(data: dict[str, Any], key: bytes | None) -> None:
    """`key` as text when it is UTF-8 (as REST keys are), else `key_b64`."""
    try:
        data["key"] = None if key is None else key.decode()
    except UnicodeDecodeError:
        data["key_b64"] = base64.b64encode(key or b"").decode("ascii")


def _put_value(data: dict[str, Any], value: bytes | None, headers: dict[str, str]) -> None:
    """`value` for a JSON-marked value that is JSON, else `value_b64`."""
    if value is None:
        data["value"] = None
        return
    if headers.get(CONTENT_TYPE_HEADER) == JSON_CONTENT_TYPE:
        try:
            data["value"] = msgspec.json.decode(value)
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
        else:
            return
    data["value_b64"] = base64.b64encode(value).decode("ascii")


def dead_letter_json(message: Message) -> dict[str, Any]:
    """A dead letter: the message with where it came from and why it died."""
    data = message_json(message)
    headers = message.headers
    attempts = headers.get(HEADER_ATTEMPTS, "")
    dead_at = headers.get(HEADER_DEAD_AT, "")
    data["origin_id"] = headers.get(HEADER_ORIGIN_ID)
    data["group"] = headers.get(HEADER_GROUP)
    data["attempts"] = int(attempts) if attempts.isdecimal() else None
    data["reason"] = headers.get(HEADER_REASON)
    data["dead_lettered_at"] = int(dead_at) if dead_at.isdecimal() else None
    return data
