"""The HTTP app: the REST API of DESIGN.md section 3, metrics, OpenAPI, stats.

Starlette with msgspec (no pydantic): the REST path stays light. The route
table is the `ENDPOINTS` of the route modules plus the system routes below;
each handler is wrapped so any LogqError becomes `{"error": {"code",
"message"}}` with the error's HTTP status, and an unexpected failure becomes a
500 that is logged while the app goes on serving.

`RequestAccounting`, a plain ASGI middleware, counts requests in progress
in `connections.http` (ASGI sees requests, not sockets: an idle keep-alive
connection is not counted), refuses new ones at the shared connection limit,
and times every request for the latency histogram by route template.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from logq.broker import Broker
from logq.broker.archive_restore import archived_topics, restore_topic
from logq.broker.errors import from_log_error
from logq.errors import (
    AuthRequiredError,
    BadArgumentError,
    LimitError,
    LogqError,
    UnknownCommandError,
)
from logq.log import LogError
from logq.server import context, http_dashboard, http_routes_groups, http_routes_topics
from logq.server.auth import ANONYMOUS
from logq.server.command_metrics import CommandTimes
from logq.server.connections import ConnectionCounter
from logq.server.descriptors import DescriptorWatch
from logq.server.http_common import (
    ApiState,
    Endpoint,
    Limits,
    QueryParameter,
    error_response,
    json_response,
    object_schema,
    read_body,
    read_json,
)
from logq.server.http_guard import BrowserGuard
from logq.server.http_listener import SCOPE_KEY
from logq.server.http_metrics import HttpMetrics
from logq.server.security import ROUTES, Security
from logq.server.security_config import SecurityConfig

logger = logging.getLogger("logq.server.http")
UNMATCHED_ROUTE = "unmatched"


async def health(state: ApiState, request: Request) -> Response:
    return json_response({"status": "ok"})


async def stats(state: ApiState, request: Request) -> Response:
    """Everything (as before), or with `filter`, `offset` or `limit` the
    queues of one page of topics, as GET /v1/topics pages them."""
    page = http_routes_topics.topic_page(request, state.broker)
    if page is None:
        return json_response({**state.broker.stats(), **state.connections.statistics()})
    found = state.broker.stats(page.names)
    return json_response({**found, **state.connections.statistics(), **page.fields()})


async def archive_status(state: ApiState, request: Request) -> Response:
    topic = request.query_params.get("topic")
    return json_response(state.broker.archive_status(topic or None))


async def archived(state: ApiState, request: Request) -> Response:
    return json_response({"topics": await archived_topics(state.broker)})


async def restore(state: ApiState, request: Request) -> Response:
    body = await read_json(request, dict[str, Any], limit=state.limits.body_bytes_max)
    topic = body.get("name")
    if not isinstance(topic, str):
        raise BadArgumentError('the body names the topic to restore: {"name": "orders"}')
    return json_response(await restore_topic(state.broker, topic))


def _system_endpoints(metrics: HttpMetrics, table: Sequence[Endpoint]) -> tuple[Endpoint, ...]:
    """Health, metrics, stats, the dashboard, and the OpenAPI document of
    `table` (the app's whole route table, this part included)."""

    async def prometheus(state: ApiState, request: Request) -> Response:
        body = await asyncio.to_thread(metrics.format, metrics.collect())
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi_json(state: ApiState, request: Request) -> Response:
        # built on request: a start does not load the document's schemas
        from logq.server.http_openapi import openapi_document  # noqa: PLC0415

        return json_response(openapi_document(table))

    return (
        Endpoint(
            "GET",
            "/health",
            health,
            "Liveness",
            response=object_schema({"status": {"const": "ok"}}, ("status",)),
        ),
        Endpoint(
            "GET",
            "/metrics",
            prometheus,
            "Prometheus metrics (text exposition format)",
            response={"type": "string"},
            media_type="text/plain",
        ),
        Endpoint(
            "GET",
            "/v1/stats",
            stats,
            "Pending messages per topic partition (all, or of a page of topics by name),"
            " connections and totals",
            query=http_routes_topics.PAGE_QUERY,
            response=object_schema(
                {
                    "queues": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "active_connections": {"type": "integer"},
                    **http_routes_topics.PAGE_PROPERTIES,
                },
                ("queues", "active_connections"),
                closed=False,
            ),
        ),
        Endpoint(
            "GET",
            "/v1/archive",
            archive_status,
            "The archive (tiered storage) and, per archived partition, the archived and"
            " local ranges, the upload lag and the last error",
            query=(QueryParameter("topic", {"type": "string"}, "one topic's partitions"),),
            response=object_schema(
                {
                    "archive": {"type": ["string", "null"]},
                    "partitions": {"type": "array", "items": {"type": "object"}},
                },
                ("archive", "partitions"),
                closed=False,
            ),
        ),
        Endpoint(
            "GET",
            "/v1/archive/topics",
            archived,
            "The topics the archive holds, with their partitions (what a restore can bring back)",
            response=object_schema(
                {"topics": {"type": "object", "additionalProperties": {"type": "array"}}},
                ("topics",),
            ),
        ),
        Endpoint(
            "POST",
            "/v1/archive/restore",
            restore,
            "Make a topic again from the archive: its data up to the last archived segment,"
            " its groups at their committed positions",
            body=object_schema({"name": {"type": "string"}}, ("name",)),
            body_required=True,
            response={"type": "object"},
        ),
        Endpoint(
            "GET",
            "/openapi.json",
            openapi_json,
            "This document",
            response={"type": "object"},
        ),
        Endpoint(
            "GET",
            "/",
            http_dashboard.page,
            "The dashboard (one page; its assets under /assets)",
            response={"type": "string"},
            media_type="text/html",
        ),
        Endpoint(
            "GET",
            "/assets/{name}",
            http_dashboard.asset,
            "A file of the dashboard (script, style sheet, icon)",
            response={"type": "string"},
            media_type="text/plain",
        ),
        Endpoint(
            "GET",
            "/v1/events",
            http_dashboard.events,
            "Server-sent events: a snapshot every second of the broker's totals, its"
            " busiest topics, the part of the topic table asked for, the groups with the"
            " most lag and the connections (each event's data is this object, as JSON)",
            query=http_dashboard.EVENTS_QUERY,
            response=http_dashboard.EVENTS_SCHEMA,
            media_type="text/event-stream",
        ),
    )


def create_app(
    broker: Broker,
    connections: ConnectionCounter,
    *,
    limits: Limits | None = None,
    security: Security | None = None,
    native_times: CommandTimes | None = None,
    allowed_hosts: frozenset[str] | None = None,
    proxy_hosts: frozenset[str] = frozenset(),
    descriptors: DescriptorWatch | None = None,
    metrics_aggregate: bool = False,
) -> Starlette:
    """The REST API over `broker`, counting its requests in `connections`;
    `security` signs requests in, checks their permissions and quotas;
    `/metrics` shows the native listener's command latency from `native_times`;
    `allowed_hosts` (when listening on loopback) are the only Host names served;
    `descriptors` and `metrics_aggregate`: see HttpMetrics."""
    state = ApiState(broker, connections, limits or Limits())
    guard = security or Security.from_config(SecurityConfig())
    metrics = HttpMetrics(
        broker,
        connections,
        native_times,
        guard.authenticator.throttle,
        descriptors=descriptors,
        aggregate=metrics_aggregate,
    )
    table: list[Endpoint] = []
    table.extend(_system_endpoints(metrics, table))
    table.extend(http_routes_topics.ENDPOINTS)
    table.extend(http_routes_groups.ENDPOINTS)
    # One route per path, so a method the path does not serve is answered
    # 405 with every method it does serve in Allow.
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for endpoint in table:
        # a route is served only with an entry in the permission table
        assert (endpoint.method, endpoint.path) in ROUTES, (endpoint.method, endpoint.path)
        by_path.setdefault(endpoint.path, {})[endpoint.method] = _wrap(state, endpoint, guard)
    routes = [
        Route(path, _by_method(handlers), methods=list(handlers))
        for path, handlers in by_path.items()
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})
    app.add_middleware(BrowserGuard, allowed_hosts=allowed_hosts, proxy_hosts=proxy_hosts)
    app.add_middleware(RequestAccounting, connections=connections, metrics=metrics)
    return app


def _by_method(
    handlers: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    """The handler of the request's method (HEAD is served by GET)."""

    async def handle(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return handle


def _wrap(
    state: ApiState, endpoint: Endpoint, security: Security
) -> Callable[[Request], Awaitable[Response]]:
    allowed = frozenset(q.name for q in endpoint.query)
    handler = endpoint.handler

    async def handle(request: Request) -> Response:
        try:
            await _admit(request, endpoint, security, state)
            _check_query(request, allowed, endpoint)
            return await handler(state, request)
        except AuthRequiredError as error:
            return error_response(error, headers={"WWW-Authenticate": 'Basic realm="logq"'})
        except LogqError as error:
            return error_response(error)
        except LogError as error:
            return error_response(from_log_error(error))
        except ClientDisconnect:
            # gone before its body arrived (or closed by the body timeout): nobody
            # reads an answer, and there is nothing to report
            return Response(status_code=400)
        except Exception:
            logger.exception("%s %s failed", endpoint.method, endpoint.path)
            return error_response(LogqError("internal error; the server log has the details"))

    return handle


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The body, refused at `limit` before it is read whole; kept for the
    handler, which reads it again."""
    body = await read_body(request, limit)
    request._body = body  # Starlette's cache: the handler's read gets these bytes
    return body


async def _admit(request: Request, endpoint: Endpoint, security: Security, state: ApiState) -> None:
    """Sign the request in and check its permission (its socket then counts
    as signed in); count it against the client's quotas, and leave the
    publish route a way to count its messages."""
    if not security.auth_enabled and not security.quotas.enabled:
        return
    limit = state.limits.body_bytes_max
    principal = await security.authorize_route(
        endpoint.method,
        endpoint.path,
        request.headers,
        request.path_params,
        partial(_bounded_body, request, limit),
        lambda check: asyncio.get_running_loop().run_in_executor(None, check),
        request.client.host if request.client else "local",
    )
    if principal is not ANONYMOUS:
        request.state.user = principal.name  # per-user limits (event streams)
    socket = request.scope.get(SCOPE_KEY)
    if socket is not None and principal is not ANONYMOUS:
        state.connections.signed_in(socket)
    if security.quotas.enabled:
        client = security.client_key(principal, request.client.host if request.client else "?")
        security.quotas.request(client)
        request.state.charge_publish = partial(security.quotas.publish, client)


def _check_query(request: Request, allowed: frozenset[str], endpoint: Endpoint) -> None:
    """Unknown query parameters are refused, not ignored (a typo would read
    the wrong messages)."""
    for name in request.query_params:
        if name not in allowed:
            raise BadArgumentError(
                f"unknown query parameter {name[:40]!r} for {endpoint.method} "
                f"{endpoint.path}; see /openapi.json"
            )


async def _http_exception(request: Request, error: Exception) -> Response:
    """Unknown paths (404) and methods (405) answer in the API's error shape."""
    assert isinstance(error, HTTPException)
    if error.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path[:200]}"
    else:
        message = f"no route {request.method} {request.url.path[:200]}; see /openapi.json"
    response = error_response(UnknownCommandError(message), headers=error.headers)
    response.status_code = error.status_code
    return response


class RequestAccounting:
    """Counts HTTP requests in progress, bounds them, and times them."""

    def __init__(self, app: ASGIApp, connections: ConnectionCounter, metrics: HttpMetrics) -> None:
        self.app = app
        self.connections = connections
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counter = self.connections
        # a request on a socket of the listener was admitted with its socket
        if SCOPE_KEY not in scope and counter.active >= counter.limit:
            counter.refused += 1
            refusal = LimitError(
                f"{counter.active} connections and requests open, the limit is {counter.limit}"
            )
            await error_response(refusal)(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        current = context.id_from_client(given.decode("latin-1") if given else None, "r")
        token = context.request_id.set(current)

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", current.encode())],
                }
            await send(message)

        counter.http += 1
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            context.request_id.reset(token)
            counter.http -= 1
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)
