"""Shared pieces of the REST API: the route table entry, bounded JSON bodies,
JSON responses and query parameters.

Every route is an `Endpoint`: method, path, handler, and what it accepts
(query parameters, a JSON schema of its body). `create_app` builds the
Starlette routes from that table and `/openapi.json` is generated from the
same table, so the document cannot drift from what is served.

Bodies are bounded before they are buffered: a Content-Length over the limit
is refused without reading anything, and a streamed body is counted while it
arrives and refused as soon as it passes the limit.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from logq.broker import Broker
from logq.durations import parse_duration_ms, parse_time_ms
from logq.errors import BadArgumentError, LogqError, TooBigError
from logq.server.connections import ConnectionCounter
from logq.server.dashboard_feed import EventFeed

T = TypeVar("T")

# Settings, ids, receive and seek requests: the largest honest one (100,000
# ids to ack) is about 3 MiB only for very long topic names; 1 MiB covers every
# realistic request and bounds what a careless client makes us buffer.
BODY_BYTES_MAX = 1 << 20
# Publish: base64 inflates by 4/3, so this carries about 48 MiB of payload,
# several batches of 1000 messages at the broker's 4 MiB message limit.
PUBLISH_BODY_BYTES_MAX = 64 << 20
JSON_MEDIA_TYPE = "application/json"
_INTEGER = re.compile(r"^-?\d{1,19}$")
_encoder = msgspec.json.Encoder()


EVENT_STREAMS_MAX = 32


@dataclass(frozen=True, slots=True)
class Limits:
    body_bytes_max: int = BODY_BYTES_MAX
    publish_body_bytes_max: int = PUBLISH_BODY_BYTES_MAX
    event_streams_max: int = EVENT_STREAMS_MAX  # open /v1/events streams (dashboards)
    event_streams_per_user_max: int = 4  # of those, held by one user (address, auth off)


@dataclass(frozen=True, slots=True)
class ApiState:
    """What every handler may use; passed in, never global."""

    broker: Broker
    connections: ConnectionCounter
    limits: Limits
    events: EventFeed = field(default_factory=EventFeed)


Handler = Callable[[ApiState, Request], Awaitable[Response]]


def charge_publish(request: Request, messages: int, size: int) -> None:
    """Count a publish against the client's quota (set by the app when quotas are on)."""
    charge = getattr(request.state, "charge_publish", None)
    if charge is not None:
        charge(messages, size)


@dataclass(frozen=True, slots=True)
class QueryParameter:
    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route: the handler, and what it accepts and answers (for OpenAPI)."""

    method: str
    path: str
    handler: Handler
    summary: str
    query: tuple[QueryParameter, ...] = ()
    body: dict[str, Any] | None = None  # JSON schema of the request body
    body_required: bool = False
    response: dict[str, Any] | None = None  # JSON schema of the success answer
    status: int = 200
    media_type: str = JSON_MEDIA_TYPE


# -- responses ----------------------------------------------------------------------


def json_response(data: object, status: int = 200) -> Response:
    return Response(_encoder.encode(data), status_code=status, media_type=JSON_MEDIA_TYPE)


def error_body(code: str, message: str, stored: list[dict[str, object]] | None = None) -> bytes:
    body: dict[str, object] = {"code": code, "message": message}
    if stored:
        body["stored"] = stored
    return _encoder.encode({"error": body})


def error_response(error: LogqError, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        error_body(error.code, error.message, error.stored),
        status_code=error.http_status,
        media_type=JSON_MEDIA_TYPE,
        headers=headers,
    )


# -- request bodies -----------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with TOOBIG as soon as it is known to pass `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise BadArgumentError(f"Content-Length must be a byte count, got {declared[:40]!r}")
        if int(declared) > limit:
            raise TooBigError(f"request body is {declared} bytes, the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooBigError(f"request body is over {limit} bytes, the limit is {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        raise BadArgumentError(f"invalid request body: {error}") from None
    except msgspec.DecodeError as error:
        raise BadArgumentError(f"request body is not valid JSON: {error}") from None


async def read_json(
    request: Request, kind: type[T], *, limit: int, empty: bytes | None = None
) -> T:
    """The body decoded as `kind`; an empty body stands for `empty` if given."""
    body = await read_body(request, limit)
    if not body.strip():
        if empty is None:
            raise BadArgumentError("this request needs a JSON body")
        body = empty
    return decode_json(body, kind)


async def read_settings(request: Request, state: ApiState, *, empty_ok: bool) -> dict[str, Any]:
    """A JSON object of settings (the broker validates each one)."""
    return await read_json(
        request,
        dict[str, Any],
        limit=state.limits.body_bytes_max,
        empty=b"{}" if empty_ok else None,
    )


# -- query parameters ---------------------------------------------------------------


def query_int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not _INTEGER.match(value.strip()):
        raise BadArgumentError(f"{name} must be an integer, got {value[:40]!r}")
    return int(value)


def query_flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return False
    if value not in ("true", "false", "1", "0"):
        raise BadArgumentError(f"{name} must be true or false, got {value[:40]!r}")
    return value in ("true", "1")


def query_time(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    return None if value is None else parse_time_ms(value, name=name)


def duration_ms(value: int | str | None, name: str) -> int | None:
    return None if value is None else parse_duration_ms(value, name=name)


# -- schema pieces shared by the route tables -----------------------------------------

DURATION_SCHEMA: dict[str, Any] = {"$ref": "#/components/schemas/Duration"}
TIME_SCHEMA: dict[str, Any] = {"$ref": "#/components/schemas/Time"}
FLAG_SCHEMA: dict[str, Any] = {"type": "string", "enum": ["true", "false", "1", "0"]}
INTEGER_SCHEMA: dict[str, Any] = {"type": "integer"}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def object_schema(
    properties: dict[str, Any], required: tuple[str, ...] = (), *, closed: bool = True
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def messages_schema() -> dict[str, Any]:
    return object_schema({"messages": {"type": "array", "items": ref("Message")}}, ("messages",))
