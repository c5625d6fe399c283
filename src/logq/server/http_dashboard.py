"""The dashboard: one page and its assets, shipped in the package (nothing
to build or fetch on the user's machine), over the REST API; the live
numbers come pushed as server-sent events from `/v1/events`, one snapshot
a second, from which the page draws its throughput charts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from logq.errors import LimitError, UnknownCommandError
from logq.server.http_common import ApiState, EventFeed

EVENT_INTERVAL_S = 1.0
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_DIRECTORY = files("logq.server") / "dashboard"
ASSETS: dict[str, bytes] = {
    entry.name: entry.read_bytes()
    for entry in _DIRECTORY.iterdir()
    if entry.is_file() and any(entry.name.endswith(suffix) for suffix in _TYPES)
}
_CACHE = {"Cache-Control": "no-cache"}


async def page(state: ApiState, request: Request) -> Response:
    return Response(ASSETS["index.html"], media_type=_TYPES[".html"], headers=_CACHE)


async def asset(state: ApiState, request: Request) -> Response:
    name = request.path_params["name"]
    body = ASSETS.get(name) if name != "index.html" else None
    if body is None:
        raise UnknownCommandError(f"no asset {name[:80]!r}")
    suffix = name[name.rfind(".") :]
    return Response(body, media_type=_TYPES[suffix], headers=_CACHE)


def snapshot(state: ApiState) -> dict[str, Any]:
    """What the dashboard shows, now: per topic, per group, connections."""
    broker = state.broker
    counters = broker.metrics.topics()
    topics = []
    for described in broker.list_topics():
        counted = counters.get(described["name"], {})
        topics.append(
            {
                key: described[key]
                for key in (
                    "name",
                    "messages",
                    "bytes",
                    "pending",
                    "in_flight",
                    "acked",
                    "failed",
                    "dead_lettered",
                    "in_dlq",
                    "groups",
                )
            }
            | {
                "partitions": len(described["partitions"]),
                "messages_in": counted.get("messages_in", 0),
                "messages_out": counted.get("messages_out", 0),
                "bytes_in": counted.get("bytes_in", 0),
                "bytes_out": counted.get("bytes_out", 0),
            }
        )
    groups = [
        {
            "topic": group["topic"],
            "group": group["group"],
            "mode": group["settings"].get("mode"),
            "members": len(group["members"]),
            "lag": group["lag"],
            "in_flight": group["in_flight"],
        }
        for group in broker.list_groups()
        if not group["group"].startswith("~")
    ]
    return {
        "at_ms": int(time.time() * 1000),
        "node": broker.config.node_id,
        "lanes": list(broker.lanes.order),
        "topics": topics,
        "groups": groups,
        "connections": state.connections.statistics(),
    }


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
        return b"data: " + msgspec.json.encode(snapshot(state)) + b"\n\n"

    async def stream() -> AsyncIterator[bytes]:
        while not state.connections.closing:
            yield feed.frame(frame, EVENT_INTERVAL_S / 2)
            await asyncio.sleep(EVENT_INTERVAL_S)
            if await request.is_disconnected():
                return

    return _CountedStream(stream(), feed, holder)
