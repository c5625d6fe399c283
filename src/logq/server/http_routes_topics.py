"""REST routes for topics, publishing, reading without a group, dead letters
and single messages (DESIGN.md section 3).

Handlers check the request's shape and hand the rest to the Broker, which
validates every value the native protocol would (names, settings, limits):
both front ends answer the same input with the same error code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from logq.broker import Broker
from logq.errors import BadArgumentError
from logq.server.http_common import (
    FLAG_SCHEMA,
    INTEGER_SCHEMA,
    TIME_SCHEMA,
    ApiState,
    Endpoint,
    QueryParameter,
    charge_publish,
    decode_json,
    json_response,
    messages_schema,
    object_schema,
    query_flag,
    query_int,
    query_time,
    read_body,
    read_json,
    read_settings,
    ref,
)
from logq.server.http_messages import (
    PublishBody,
    dead_letter_json,
    message_json,
    outgoing_messages,
)

PEEK_LIMIT_DEFAULT = 100


async def create_topic(state: ApiState, request: Request) -> Response:
    settings = await read_settings(request, state, empty_ok=False)
    name = settings.pop("name", None)
    if name is None:
        raise BadArgumentError("name is required: the topic's name")
    await state.broker.create_topic(name, settings)
    return json_response(state.broker.describe_topic(name), status=201)


# A page of the topic list: a broker of thousands of topics answers the whole
# list (megabytes) only when asked for it without paging.
TOPICS_PAGE_MAX = 1_000
TOPICS_FILTER_LENGTH_MAX = 255  # a topic name's longest


@dataclass(frozen=True, slots=True)
class TopicPage:
    """A page of topic names, by name: those whose name holds the filter
    (any case), `limit` of them from `offset`."""

    names: list[str]
    matching: int  # topics the filter matches
    next_offset: int | None  # where the next page starts; None on the last

    def fields(self) -> dict[str, Any]:
        return {"matching": self.matching, "next_offset": self.next_offset}


def topic_page(request: Request, broker: Broker) -> TopicPage | None:
    """The page `filter`, `offset` and `limit` ask for, or None when the
    query names none of them (the answer is then unpaged, as it always was)."""
    query = request.query_params
    if not any(name in query for name in ("filter", "offset", "limit")):
        return None
    text = query.get("filter", "")
    if len(text) > TOPICS_FILTER_LENGTH_MAX:
        raise BadArgumentError(
            f"filter is {len(text)} characters, the limit is {TOPICS_FILTER_LENGTH_MAX}"
        )
    offset = query_int(request, "offset") or 0
    limit = query_int(request, "limit")
    limit = TOPICS_PAGE_MAX if limit is None else limit
    if offset < 0:
        raise BadArgumentError(f"offset must be 0 or more, got {offset}")
    if not 1 <= limit <= TOPICS_PAGE_MAX:
        raise BadArgumentError(f"limit must be 1..{TOPICS_PAGE_MAX}, got {limit}")
    needle = text.lower()
    matching = sorted(name for name in broker.topics if needle in name.lower())
    names = matching[offset : offset + limit]
    end = offset + len(names)
    return TopicPage(names, len(matching), end if end < len(matching) else None)


# the query parameters of a paged answer (GET /v1/topics, GET /v1/stats)
PAGE_QUERY = (
    QueryParameter(
        "filter",
        {"type": "string", "maxLength": TOPICS_FILTER_LENGTH_MAX},
        "topics whose name holds this (any case)",
    ),
    QueryParameter("offset", INTEGER_SCHEMA, "topics to skip, by name"),
    QueryParameter("limit", INTEGER_SCHEMA, f"topics in the page, 1..{TOPICS_PAGE_MAX}"),
)
PAGE_PROPERTIES = {
    "matching": {
        "type": "integer",
        "description": "topics the filter matches (paged only)",
    },
    "next_offset": {
        "type": ["integer", "null"],
        "description": "where the next page starts; null on the last (paged only)",
    },
}


async def list_topics(state: ApiState, request: Request) -> Response:
    """Every topic (as before), or with `filter`, `offset` or `limit` one page
    of them by name, with how many match and where the next page starts."""
    page = topic_page(request, state.broker)
    if page is None:
        return json_response({"topics": state.broker.list_topics()})
    return json_response(
        {"topics": [state.broker.describe_topic(name) for name in page.names], **page.fields()}
    )


async def describe_topic(state: ApiState, request: Request) -> Response:
    return json_response(state.broker.describe_topic(request.path_params["topic"]))


async def update_topic(state: ApiState, request: Request) -> Response:
    name = request.path_params["topic"]
    changes = await read_settings(request, state, empty_ok=False)
    if changes.pop("name", name) != name:
        raise BadArgumentError("a topic cannot be renamed")
    await state.broker.update_topic(name, changes)
    return json_response(state.broker.describe_topic(name))


async def delete_topic(state: ApiState, request: Request) -> Response:
    name = request.path_params["topic"]
    await state.broker.delete_topic(name)
    return json_response({"deleted": name})


async def publish(state: ApiState, request: Request) -> Response:
    body = await read_body(request, state.limits.publish_body_bytes_max)
    messages = outgoing_messages(decode_json(body, PublishBody), state.broker.clock.now_ms())
    charge_publish(request, len(messages), len(body))
    results = await state.broker.publish(request.path_params["topic"], messages)
    return json_response({"results": results})


async def peek(state: ApiState, request: Request) -> Response:
    limit = query_int(request, "limit")
    messages = await state.broker.read_messages(
        request.path_params["topic"],
        query_int(request, "partition"),
        offset=query_int(request, "offset"),
        from_time_ms=query_time(request, "from_time"),
        to_time_ms=query_time(request, "to_time"),
        limit=PEEK_LIMIT_DEFAULT if limit is None else limit,
        include_deleted=query_flag(request, "include_deleted"),
    )
    return json_response({"messages": [message_json(m) for m in messages]})


async def list_dead_letters(state: ApiState, request: Request) -> Response:
    limit = query_int(request, "limit")
    messages = await state.broker.dlq_messages(
        request.path_params["topic"], PEEK_LIMIT_DEFAULT if limit is None else limit
    )
    return json_response({"messages": [dead_letter_json(m) for m in messages]})


class DeadLetterIds(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[str] | None = None  # None (or absent): every dead letter


def _dead_letter_action(
    action: Callable[[Broker], Callable[[str, list[str] | None], Awaitable[int]]], answer: str
) -> Callable[[ApiState, Request], Awaitable[Response]]:
    """A POST of `{"ids": [...]}` that applies `action` to those dead letters
    and answers how many it touched, as `{answer: count}`."""

    async def handle(state: ApiState, request: Request) -> Response:
        body = await read_json(
            request, DeadLetterIds, limit=state.limits.body_bytes_max, empty=b"{}"
        )
        count = await action(state.broker)(request.path_params["topic"], body.ids)
        return json_response({answer: count})

    return handle


redrive_dead_letters = _dead_letter_action(lambda broker: broker.redrive, "redriven")
purge_some_dead_letters = _dead_letter_action(lambda broker: broker.purge_dlq, "purged")
requeue_dead_letters = _dead_letter_action(lambda broker: broker.requeue_dlq, "requeued")


async def purge_dead_letters(state: ApiState, request: Request) -> Response:
    return json_response({"purged": await state.broker.purge_dlq(request.path_params["topic"])})


async def get_message(state: ApiState, request: Request) -> Response:
    message = await state.broker.get_message(request.path_params["id"])
    return json_response(message_json(message))


async def message_trace(state: ApiState, request: Request) -> Response:
    return json_response(await state.broker.trace(request.path_params["id"]))


_SETTINGS_PROPERTIES: dict[str, Any] = {
    "partitions": {"type": "integer", "minimum": 1, "maximum": 1024},
    "retention": {
        "anyOf": [ref("Duration"), {"type": "null"}],
        "description": "keep messages this long (null: forever)",
    },
    "retention_bytes": {"type": ["integer", "null"], "minimum": 0},
    "max_deliveries": {"type": "integer", "minimum": 1, "maximum": 1000},
    "visibility_timeout": ref("Duration"),
    "dlq": {"type": ["string", "null"], "description": 'dead-letter topic (default "<topic>.dlq")'},
    "backoff": {
        "type": ["object", "null"],
        "description": "retry wait after a nack without delay or a lease expiry: initial * multiplier**(attempt-1), capped at max, minus up to jitter of it (null: none)",
        "properties": {
            "initial": ref("Duration"),
            "multiplier": {"type": "number", "minimum": 1, "maximum": 100},
            "max": ref("Duration"),
            "jitter": {"type": "number", "minimum": 0, "maximum": 1},
        },
    },
    "ttl": {
        "anyOf": [ref("Duration"), {"type": "null"}],
        "description": "messages expire this long after their timestamp (null: never)",
    },
    "ttl_dead_letter": {"type": "boolean", "description": "expired messages go to the DLQ"},
    "max_delay": {
        **ref("Duration"),
        "description": "the furthest ahead a delayed message may be due (7d)",
    },
    "dedup_window": {
        **ref("Duration"),
        "description": "a dedup_id seen within this is not stored again (5m)",
    },
    "archive": {
        "type": "boolean",
        "description": "copy closed segments to the broker's archive (needs `--archive`)",
    },
    "local_retention": {
        "anyOf": [ref("Duration"), {"type": "null"}],
        "description": "archived data kept on the broker's disk this long (null: as retention)",
    },
    "local_retention_bytes": {"type": ["integer", "null"], "minimum": 0},
    "archive_retention": {
        "anyOf": [ref("Duration"), {"type": "null"}],
        "description": "data past retention kept in the archive for audit reads (include_deleted)",
    },
}
_TOPIC = ref("Topic")
_PEEK_QUERY = (
    QueryParameter("partition", INTEGER_SCHEMA, "one partition (default: all)"),
    QueryParameter("offset", INTEGER_SCHEMA, "first offset to read"),
    QueryParameter("from_time", TIME_SCHEMA, "messages at or after this time"),
    QueryParameter("to_time", TIME_SCHEMA, "messages before this time"),
    QueryParameter("limit", INTEGER_SCHEMA, f"most messages (default {PEEK_LIMIT_DEFAULT})"),
    QueryParameter(
        "include_deleted",
        FLAG_SCHEMA,
        "reach below the topic's start into what its archive keeps for audit",
    ),
)
_LIMIT_QUERY = (
    QueryParameter("limit", INTEGER_SCHEMA, f"most messages (default {PEEK_LIMIT_DEFAULT})"),
)
_TOPIC_PATH = "/v1/topics/{topic}"

_DLQ_IDS_BODY = object_schema(
    {
        "ids": {
            "type": ["array", "null"],
            "items": {"type": "string"},
            "description": "dead-letter ids; null or absent: all of them",
        }
    }
)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/v1/topics",
        create_topic,
        "Create a topic",
        body=object_schema(
            {"name": {"type": "string"}, **_SETTINGS_PROPERTIES}, ("name",), closed=False
        ),
        body_required=True,
        response=_TOPIC,
        status=201,
    ),
    Endpoint(
        "GET",
        "/v1/topics",
        list_topics,
        "List topics with their counts: all, or a page by name",
        query=PAGE_QUERY,
        response=object_schema({"topics": {"type": "array", "items": _TOPIC}, **PAGE_PROPERTIES}),
    ),
    Endpoint(
        "GET",
        _TOPIC_PATH,
        describe_topic,
        "A topic's config and per-partition stats",
        response=_TOPIC,
    ),
    Endpoint(
        "PATCH",
        _TOPIC_PATH,
        update_topic,
        "Change a topic's config (partitions can only grow)",
        body=object_schema(_SETTINGS_PROPERTIES, closed=False),
        body_required=True,
        response=_TOPIC,
    ),
    Endpoint(
        "DELETE",
        _TOPIC_PATH,
        delete_topic,
        "Delete a topic, its messages and its groups",
        response=object_schema({"deleted": {"type": "string"}}),
    ),
    Endpoint(
        "POST",
        f"{_TOPIC_PATH}/messages",
        publish,
        'Publish one message object, or {"messages": [...]}',
        body={
            "oneOf": [
                ref("OutgoingMessage"),
                object_schema(
                    {"messages": {"type": "array", "items": ref("OutgoingMessage")}},
                    ("messages",),
                ),
            ]
        },
        body_required=True,
        response=object_schema(
            {"results": {"type": "array", "items": ref("PublishResult")}}, ("results",)
        ),
    ),
    Endpoint(
        "GET",
        f"{_TOPIC_PATH}/messages",
        peek,
        "Peek or replay without a group: by offset or time window [from_time, to_time)",
        query=_PEEK_QUERY,
        response=messages_schema(),
    ),
    Endpoint(
        "GET",
        f"{_TOPIC_PATH}/dlq",
        list_dead_letters,
        "Dead letters, each with origin id, group, attempts and reason",
        query=_LIMIT_QUERY,
        response=object_schema(
            {"messages": {"type": "array", "items": ref("DeadLetter")}}, ("messages",)
        ),
    ),
    Endpoint(
        "POST",
        f"{_TOPIC_PATH}/dlq/redrive",
        redrive_dead_letters,
        "Hand dead letters back to the group that dead-lettered them, attempts reset"
        " (`ids` of dead letters, or `{}` for all)",
        body=_DLQ_IDS_BODY,
        response=object_schema({"redriven": INTEGER_SCHEMA}, ("redriven",)),
    ),
    Endpoint(
        "DELETE",
        f"{_TOPIC_PATH}/dlq",
        purge_dead_letters,
        "Drop every dead letter of the topic from its DLQ",
        response=object_schema({"purged": INTEGER_SCHEMA}, ("purged",)),
    ),
    Endpoint(
        "POST",
        f"{_TOPIC_PATH}/dlq/purge",
        purge_some_dead_letters,
        "Drop the given dead letters (`ids`; null or absent: all) from the DLQ",
        body=_DLQ_IDS_BODY,
        response=object_schema({"purged": INTEGER_SCHEMA}, ("purged",)),
    ),
    Endpoint(
        "POST",
        f"{_TOPIC_PATH}/dlq/requeue",
        requeue_dead_letters,
        "Publish dead letters again to the topic as new messages (every group sees them),"
        " then drop them from the DLQ (`ids`; null or absent: all)",
        body=_DLQ_IDS_BODY,
        response=object_schema({"requeued": INTEGER_SCHEMA}, ("requeued",)),
    ),
    Endpoint("GET", "/v1/messages/{id}", get_message, "One message by id", response=ref("Message")),
    Endpoint(
        "GET",
        "/v1/messages/{id}/trace",
        message_trace,
        "A message's lifecycle: published, then every delivery, settle and move, per group",
        response=ref("Trace"),
    ),
)
