"""REST routes for groups: configure, describe, receive (with long poll), ack,
nack, reject, extend, expired, seek, and the list of all groups (DESIGN.md section 3).

A receive answers only messages that have not expired when its response is
built: one that expired between its lease and then (a long poll's wait for
more, a slow disk) is released as expired (`Broker.release_expired`) and
left out, as the client library does with what expires in its buffer.

Request bodies decode into msgspec Structs that refuse unknown fields, so a
misspelt option is an error rather than silently ignored; durations are
parsed here with the same function the native protocol uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from logq.broker.messages import Message
from logq.errors import BadArgumentError, NotExpiredError, StaleDeliveryError
from logq.server.http_common import (
    DURATION_SCHEMA,
    ApiState,
    Endpoint,
    duration_ms,
    json_response,
    messages_schema,
    object_schema,
    read_json,
    read_settings,
    ref,
)
from logq.server.http_messages import message_json


class ReceiveBody(msgspec.Struct, forbid_unknown_fields=True):
    consumer: str
    max: int = 1
    wait: int | str = 0
    visibility_timeout: int | str | None = None


class IdsBody(msgspec.Struct, forbid_unknown_fields=True):
    """Messages by id (their current delivery, whoever holds it) and by
    receipt (`<id>@<lease>`: that delivery only, refused once stale)."""

    ids: list[str] = []
    receipts: list[str] = []

    @property
    def named(self) -> list[str]:
        return [*self.ids, *self.receipts]


class NackBody(IdsBody, forbid_unknown_fields=True):
    delay: int | str | None = None  # not given: the group's retry backoff, as a native NACK


class RejectBody(IdsBody, forbid_unknown_fields=True):
    reason: str = "rejected"


class ExtendBody(IdsBody, forbid_unknown_fields=True):
    visibility_timeout: int | str | None = None


class SeekBody(msgspec.Struct, forbid_unknown_fields=True):
    to: str | dict[str, Any]


class ReplayBody(msgspec.Struct, forbid_unknown_fields=True):
    """As the route's schema says: a field is given with its type, or left
    out (null is refused: BADARG, nothing made)."""

    group: str
    from_time: int | str | msgspec.UnsetType = msgspec.UNSET
    to_time: int | str | msgspec.UnsetType = msgspec.UNSET
    dlq: bool = False
    mode: Literal["ordered", "shared"] | msgspec.UnsetType = msgspec.UNSET


def _names(request: Request) -> tuple[str, str]:
    return request.path_params["topic"], request.path_params["group"]


async def put_group(state: ApiState, request: Request) -> Response:
    topic, group = _names(request)
    settings = await read_settings(request, state, empty_ok=True)
    await state.broker.put_group(topic, group, settings)
    return json_response(state.broker.describe_group(topic, group))


async def describe_group(state: ApiState, request: Request) -> Response:
    return json_response(state.broker.describe_group(*_names(request)))


async def list_groups(state: ApiState, request: Request) -> Response:
    return json_response({"groups": state.broker.list_groups()})


async def receive(state: ApiState, request: Request) -> Response:
    topic, group = _names(request)
    body = await read_json(request, ReceiveBody, limit=state.limits.body_bytes_max)
    messages = await state.broker.receive(
        topic,
        group,
        body.consumer,
        max_messages=body.max,
        wait_ms=duration_ms(body.wait, "wait") or 0,
        visibility_timeout_ms=duration_ms(body.visibility_timeout, "visibility_timeout"),
    )
    while expired := _expired(messages, state.broker.clock.now_ms()):
        with contextlib.suppress(StaleDeliveryError, NotExpiredError):
            await state.broker.release_expired(topic, group, [m.receipt for m in expired])
        gone = {m.id for m in expired}
        messages = [m for m in messages if m.id not in gone]
    # no await from the last check to here: what goes out has not expired
    return json_response({"messages": [message_json(m) for m in messages]})


def _expired(messages: list[Message], now_ms: int) -> list[Message]:
    return [m for m in messages if m.expires_at_ms is not None and m.expires_at_ms <= now_ms]


async def _settled(name: str, settlement: Awaitable[int]) -> Response:
    """`{name: count}`, with `"stale": [receipts]` when some receipts were
    stale (`"not_expired": [ids]` for messages an expired release named that
    have not expired); that error when nothing changed (docs/protocol.md)."""
    try:
        count = await settlement
    except StaleDeliveryError as error:
        if not error.count:
            raise
        return json_response({name: error.count, "stale": error.stale})
    except NotExpiredError as error:
        if not error.count:
            raise
        return json_response({name: error.count, "not_expired": error.not_expired})
    return json_response({name: count})


async def ack(state: ApiState, request: Request) -> Response:
    body = await read_json(request, IdsBody, limit=state.limits.body_bytes_max)
    return await _settled("acked", state.broker.ack(*_names(request), body.named))


async def nack(state: ApiState, request: Request) -> Response:
    body = await read_json(request, NackBody, limit=state.limits.body_bytes_max)
    delay = duration_ms(body.delay, "delay")
    return await _settled("nacked", state.broker.nack(*_names(request), body.named, delay))


async def reject(state: ApiState, request: Request) -> Response:
    body = await read_json(request, RejectBody, limit=state.limits.body_bytes_max)
    return await _settled(
        "rejected", state.broker.reject(*_names(request), body.named, body.reason)
    )


async def extend(state: ApiState, request: Request) -> Response:
    body = await read_json(request, ExtendBody, limit=state.limits.body_bytes_max)
    lease = duration_ms(body.visibility_timeout, "visibility_timeout")
    return await _settled("extended", state.broker.extend(*_names(request), body.named, lease))


async def expired(state: ApiState, request: Request) -> Response:
    body = await read_json(request, IdsBody, limit=state.limits.body_bytes_max)
    return await _settled("expired", state.broker.release_expired(*_names(request), body.named))


_SEEK_FIELDS = ({"offset"}, {"offset", "partition"}, {"time"})


async def seek(state: ApiState, request: Request) -> Response:
    body = await read_json(request, SeekBody, limit=state.limits.body_bytes_max)
    if isinstance(body.to, dict) and set(body.to) not in _SEEK_FIELDS:
        raise BadArgumentError(
            'seek "to" is "earliest", "latest", {"offset", "partition"} or {"time"}, '
            f"not an object with {sorted(body.to)[:5]}"
        )
    positions = await state.broker.seek(*_names(request), body.to)
    return json_response({"positions": {str(p): offset for p, offset in positions.items()}})


async def replay(state: ApiState, request: Request) -> Response:
    body = await read_json(request, ReplayBody, limit=state.limits.body_bytes_max)
    described = await state.broker.replay(
        request.path_params["topic"],
        body.group,
        from_time=None if body.from_time is msgspec.UNSET else body.from_time,
        to_time=None if body.to_time is msgspec.UNSET else body.to_time,
        dlq=body.dlq,
        settings=None if body.mode is msgspec.UNSET else {"mode": body.mode},
    )
    return json_response(described, status=201)


_GROUP_PATH = "/v1/topics/{topic}/groups/{group}"
_IDS = {
    "ids": {
        "type": "array",
        "items": {"type": "string"},
        "description": "message ids: settles the current delivery, whoever holds it",
    },
    "receipts": {
        "type": "array",
        "items": {"type": "string"},
        "description": "receipts (`<id>@<lease>`, from receive): settles that delivery only",
    },
}
_NAMED = {"anyOf": [{"required": ["ids"]}, {"required": ["receipts"]}]}


def _named_body(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**object_schema({**_IDS, **(extra or {})}), **_NAMED}


def _count(name: str) -> dict[str, Any]:
    stale = {
        "type": "array",
        "items": {"type": "string"},
        "description": "receipts named that were stale (they changed nothing)",
    }
    return object_schema({name: {"type": "integer"}, "stale": stale}, (name,))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "PUT",
        _GROUP_PATH,
        put_group,
        "Create a group or change its settings",
        body=ref("GroupSettings"),
        response=ref("Group"),
    ),
    Endpoint(
        "GET",
        _GROUP_PATH,
        describe_group,
        "A group: members, assignment, lag, in-flight, counts",
        response=ref("Group"),
    ),
    Endpoint(
        "POST",
        f"{_GROUP_PATH}/receive",
        receive,
        "Lease messages to a consumer, waiting up to `wait` for some (long poll)",
        body=object_schema(
            {
                "consumer": {"type": "string", "minLength": 1, "maxLength": 200},
                "max": {"type": "integer", "minimum": 1, "default": 1},
                "wait": {**DURATION_SCHEMA, "description": "long poll (default 0)"},
                "visibility_timeout": DURATION_SCHEMA,
            },
            ("consumer",),
        ),
        body_required=True,
        response=messages_schema(),
    ),
    Endpoint(
        "POST",
        f"{_GROUP_PATH}/ack",
        ack,
        "Settle delivered messages",
        body=_named_body(),
        body_required=True,
        response=_count("acked"),
    ),
    Endpoint(
        "POST",
        f"{_GROUP_PATH}/nack",
        nack,
        "Hand messages back for redelivery after `delay` (without it, after the group's retry backoff)",
        body=_named_body({"delay": DURATION_SCHEMA}),
        body_required=True,
        response=_count("nacked"),
    ),
    Endpoint(
        "POST",
        f"{_GROUP_PATH}/reject",
        reject,
        "Send messages straight to the dead-letter topic",
        body=_named_body({"reason": {"type": "string", "maxLength": 1000}}),
        body_required=True,
        response=_count("rejected"),
    ),
    Endpoint(
        "POST",
        f"{_GROUP_PATH}/extend",
        extend,
        "Renew the lease of in-flight messages from now",
        body=_named_body({"visibility_timeout": DURATION_SCHEMA}),
        body_required=True,
        response=_count("extended"),
    ),
    Endpoint(
        "POST",
        f"{_GROUP_PATH}/expired",
        expired,
        "Release delivered messages that have expired (by the broker's clock) as expired:"
        " counted, traced and dead-lettered as the broker does with those it finds before leasing",
        body=_named_body(),
        body_required=True,
        response=_count("expired"),
    ),
    Endpoint(
        "POST",
        f"{_GROUP_PATH}/seek",
        seek,
        "Move the group to earliest, latest, an offset or a time",
        body=object_schema({"to": ref("SeekTarget")}, ("to",)),
        body_required=True,
        response=object_schema(
            {"positions": {"type": "object", "additionalProperties": {"type": "integer"}}}
        ),
    ),
    Endpoint(
        "POST",
        "/v1/topics/{topic}/replay",
        replay,
        "Create a group that replays a time window of the topic, or its DLQ",
        body=object_schema(
            {
                "group": {"type": "string"},
                "from_time": ref("Time"),
                "to_time": ref("Time"),
                "dlq": {"type": "boolean"},
                "mode": {"enum": ["ordered", "shared"]},
            },
            ("group",),
        ),
        body_required=True,
        response=ref("Group"),
        status=201,
    ),
    Endpoint(
        "GET",
        "/v1/groups",
        list_groups,
        "All groups with their lag",
        response=object_schema({"groups": {"type": "array", "items": ref("Group")}}),
    ),
)
