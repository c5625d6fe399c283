"""The dashboard: one page and its assets, shipped in the package (nothing
to build or fetch on the user's machine), over the REST API; the live
numbers come pushed as server-sent events from `/v1/events`, one snapshot
a second (`dashboard_feed`: totals, the busiest topics, and the part of the
topic table the page asked for in the query string), from which the page
draws its throughput charts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import cache, partial
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from logq.broker.settings import TOPIC_NAME_LENGTH_MAX
from logq.errors import LimitError, UnknownCommandError
from logq.server.dashboard_feed import (
    GROUPS_SHOWN,
    SORT_KEYS,
    TOPIC_OFFSET_MAX,
    TOPIC_ROWS_DEFAULT,
    TOPIC_ROWS_MAX,
    EventFeed,
    Sample,
    TopicRates,
    parse_view,
    take_sample,
)
from logq.server.http_common import ApiState, QueryParameter, object_schema

EVENT_INTERVAL_S = 1.0
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@cache
def assets() -> dict[str, bytes]:
    """The page and its assets by name, read on the first request for one
    (a broker's start reads none of them)."""
    return {
        entry.name: entry.read_bytes()
        for entry in (files("logq.server") / "dashboard").iterdir()
        if entry.is_file() and any(entry.name.endswith(suffix) for suffix in _TYPES)
    }


_CACHE = {"Cache-Control": "no-cache"}

EVENTS_QUERY = (
    QueryParameter(
        "filter",
        {"type": "string", "maxLength": TOPIC_NAME_LENGTH_MAX},
        "topic table: only topics whose name holds this (any case)",
    ),
    QueryParameter(
        "sort", {"enum": list(SORT_KEYS)}, "topic table: the column to sort by (default name)"
    ),
    QueryParameter("order", {"enum": ["asc", "desc"]}, "topic table: asc (default) or desc"),
    QueryParameter(
        "offset",
        {"type": "integer", "minimum": 0, "maximum": TOPIC_OFFSET_MAX},
        "topic table: rows to skip (default 0)",
    ),
    QueryParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": TOPIC_ROWS_MAX},
        f"topic table: most rows (default {TOPIC_ROWS_DEFAULT})",
    ),
)
_COUNTS = {
    key: {"type": "integer"}
    for key in ("messages", "bytes", "pending", "in_flight", "acked", "failed", "dead_lettered")
}
_RATES = {"in_per_s": {"type": "number"}, "out_per_s": {"type": "number"}}
_SNAPSHOT = object_schema(
    {
        "at_ms": {"type": "integer"},
        "node": {"type": "string"},
        "lanes": {"type": "array", "items": {"type": "string"}},
        "totals": object_schema(
            {"topics": {"type": "integer"}, "groups": {"type": "integer"}} | _COUNTS | _RATES
        ),
        "busiest": {
            "type": "array",
            "description": "the busiest topics (by throughput smoothed over about 10 s)",
            "items": object_schema({"name": {"type": "string"}} | _RATES),
        },
        "topics": object_schema(
            {
                "filter": {"type": "string"},
                "sort": {"type": "string"},
                "order": {"type": "string"},
                "offset": {"type": "integer"},
                "limit": {"type": "integer"},
                "matching": {"type": "integer", "description": "topics the filter matches"},
                "rows": {
                    "type": "array",
                    "items": object_schema(
                        {"name": {"type": "string"}, "partitions": {"type": "integer"}}
                        | _COUNTS
                        | _RATES
                    ),
                },
            }
        ),
        "groups": {
            "type": "array",
            "description": f"the {GROUPS_SHOWN} groups with the most lag",
            "items": {"type": "object"},
        },
        "connections": {"type": "object"},
    },
    ("at_ms", "node", "lanes", "totals", "busiest", "topics", "groups", "connections"),
)
EVENTS_SCHEMA = {
    "type": "object",
    "description": "one event: its data is a snapshot, as JSON",
    "properties": {
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": _SNAPSHOT,
        }
    },
    "required": ["data"],
}


async def page(state: ApiState, request: Request) -> Response:
    return Response(assets()["index.html"], media_type=_TYPES[".html"], headers=_CACHE)


async def asset(state: ApiState, request: Request) -> Response:
    name = request.path_params["name"]
    body = assets().get(name) if name != "index.html" else None
    if body is None:
        raise UnknownCommandError(f"no asset {name[:80]!r}")
    suffix = name[name.rfind(".") :]
    return Response(body, media_type=_TYPES[suffix], headers=_CACHE)


def sample(state: ApiState, rates: TopicRates, now_s: float) -> Sample:
    """What every dashboard's frame of this interval shares."""
    return take_sample(state.broker, rates, state.connections.statistics(), now_s)


class _CountedStream(StreamingResponse):
    """A stream that counts itself down when it ends, however it ends (even
    when the client left before its first frame)."""

    def __init__(self, content: AsyncIterator[bytes], feed: EventFeed, holder: str) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._feed = feed
        self._holder = holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._feed.closed(self._holder)


async def events(state: ApiState, request: Request) -> Response:
    """Server-sent events: a snapshot now, then one a second until the page
    goes away or the server stops."""
    view = parse_view(request.query_params)
    feed = state.events
    # the user's, or the address's with authentication off
    holder = getattr(request.state, "user", None) or (request.client.host if request.client else "")
    if feed.streams >= state.limits.event_streams_max:
        raise LimitError(
            f"{feed.streams} event streams open, the limit eventStreams is"
            f" {state.limits.event_streams_max}"
        )
    held = feed.held.get(holder, 0)
    if held >= state.limits.event_streams_per_user_max:
        raise LimitError(
            f"{held} event streams open for {holder!r}, the limit eventStreamsPerUser is"
            f" {state.limits.event_streams_per_user_max}"
        )
    feed.opened(holder)  # with the checks, no await between: a burst cannot pass the limits

    def frame() -> bytes:
        return feed.sample(partial(sample, state), EVENT_INTERVAL_S / 2).frame(view)

    async def stream() -> AsyncIterator[bytes]:
        while not state.connections.closing:
            yield frame()
            await asyncio.sleep(EVENT_INTERVAL_S)
            if await request.is_disconnected():
                return

    return _CountedStream(stream(), feed, holder)
