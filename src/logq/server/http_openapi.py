"""The OpenAPI 3.1 document, generated from the app's route table.

Paths, methods, path and query parameters and request bodies come from the
same `Endpoint` entries that build the Starlette routes, so what the
document lists is what the app serves; the shared schemas (messages,
durations, topics, groups, errors) are written out below.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from logq import __version__
from logq.server.http_common import Endpoint, object_schema, ref


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or null (an optional field that may be sent as null)."""
    return {"anyOf": [schema, {"type": "null"}]}


_PATH_PARAMETER = re.compile(r"{(\w+)}")
_PATH_DESCRIPTIONS = {
    "topic": "topic name",
    "group": "group name",
    "id": "message id, '<topic>:<partition>:<offset>'",
}
_NULLABLE_INTEGER = {"type": ["integer", "null"]}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

COMPONENTS: dict[str, Any] = {
    "Duration": {
        "description": 'a duration: "250ms", "30s", "5m", "2h", "7d" or integer milliseconds',
        "oneOf": [
            {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*$|^\s*\d+\s*$"},
            {"type": "integer", "minimum": 0},
        ],
    },
    "Time": {
        "description": "an RFC 3339 time (with a zone) or epoch milliseconds",
        "oneOf": [{"type": "string"}, {"type": "integer"}],
    },
    "Error": object_schema(
        {
            "error": object_schema(
                {
                    "code": {"type": "string", "examples": ["NOTOPIC", "BADARG", "TOOBIG"]},
                    "message": {"type": "string"},
                },
                ("code", "message"),
            )
        },
        ("error",),
    ),
    "OutgoingMessage": object_schema(
        {
            # every field but value and headers may be null: as if left out
            "key": _or_null({"type": "string", "description": "text key (UTF-8)"}),
            "key_b64": _or_null({"type": "string", "contentEncoding": "base64"}),
            "value": {"description": "any JSON value: stored as JSON, comes back as JSON"},
            "value_b64": _or_null(
                {
                    "type": "string",
                    "contentEncoding": "base64",
                    "description": "bytes: come back as value_b64",
                }
            ),
            "headers": _STRING_MAP,
            "priority": _or_null({"enum": ["high", "normal", "low"]}),
            "partition": _or_null({"type": "integer", "minimum": 0}),
            "delay": _or_null(
                {**ref("Duration"), "description": "deliverable this long after publish"}
            ),
            "deliver_at": _or_null({**ref("Time"), "description": "deliverable from this time"}),
            "ttl": _or_null(
                {**ref("Duration"), "description": "the message expires this long after publish"}
            ),
            "dedup_id": _or_null(
                {"type": "string", "description": "stored once within the topic's dedup window"}
            ),
        }
    ),
    "PublishResult": object_schema(
        {"id": {"type": "string"}, "partition": {"type": "integer"}, "offset": {"type": "integer"}},
        ("id", "partition", "offset"),
    ),
    "Message": object_schema(
        {
            "id": {"type": "string"},
            "topic": {"type": "string"},
            "partition": {"type": "integer"},
            "offset": {"type": "integer"},
            "key": {"type": ["string", "null"]},
            "key_b64": {"type": "string", "description": "a key that is not UTF-8"},
            "value": {"description": "the value, when it was published as JSON"},
            "value_b64": {"type": "string", "description": "the value, otherwise"},
            "headers": _STRING_MAP,
            "priority": {"enum": ["high", "normal", "low"]},
            "timestamp": {"type": "integer", "description": "epoch milliseconds"},
            "attempt": {"type": "integer", "description": "delivery attempt; 0 when peeked"},
            "lease": {
                "type": "integer",
                "description": "lease token naming this delivery (received messages only)",
            },
            "receipt": {
                "type": "string",
                "description": "`<id>@<lease>`: settles this delivery only (received messages only)",
            },
            "expires_at": {
                "type": "integer",
                "description": "epoch ms from which it counts as expired (received messages with a TTL only)",
            },
        },
        ("id", "topic", "partition", "offset", "headers", "priority", "timestamp", "attempt"),
    ),
    "DeadLetter": {
        "allOf": [
            ref("Message"),
            {
                "type": "object",
                "properties": {
                    "origin_id": {"type": ["string", "null"]},
                    "group": {"type": ["string", "null"]},
                    "attempts": _NULLABLE_INTEGER,
                    "reason": {"type": ["string", "null"]},
                    "dead_lettered_at": _NULLABLE_INTEGER,
                },
            },
        ]
    },
    "Topic": {
        "type": "object",
        "description": "config, totals and per-partition stats",
        "properties": {
            "name": {"type": "string"},
            "config": {"type": "object"},
            "partitions": {"type": "array", "items": {"type": "object"}},
            "messages": {"type": "integer"},
            "bytes": {"type": "integer"},
            "pending": {"type": "integer"},
            "in_flight": {"type": "integer"},
            "acked": {"type": "integer"},
            "failed": {"type": "integer"},
            "dead_lettered": {
                "type": "integer",
                "description": "messages the topic's groups dead-lettered since the start",
            },
            "in_dlq": {
                "type": "integer",
                "description": "dead letters in the topic's DLQ now (not redriven, requeued or purged)",
            },
            "groups": {"type": "array", "items": {"type": "string"}},
            "damaged": {
                "type": "array",
                "items": {"type": "object"},
                "description": "ranges of offsets lost to damage on disk, found so far:"
                " partition, start, end (exclusive), reason",
            },
            "damaged_offsets": {"type": "integer"},
        },
    },
    "GroupSettings": object_schema(
        {
            "mode": {"enum": ["ordered", "shared"]},
            "visibility_timeout": {"anyOf": [ref("Duration"), {"type": "null"}]},
            "max_deliveries": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000},
            "auto_ack": {"type": "boolean"},
            "max_in_flight": {"type": "integer", "minimum": 1},
            "starvation_share": {
                "type": "number",
                "minimum": 0.000001,
                "maximum": 0.5,
                "description": "shared groups: a lower lane with messages waiting lets round(1/starvation_share) messages of higher lanes go ahead, then gets one",
            },
            "starvation_timeout": {
                "anyOf": [ref("Duration"), {"type": "null"}],
                "description": "shared groups: a lower lane that has waited this long gets the next message (null: no time bound)",
            },
            "backoff": {
                "type": "object",
                "description": "retry wait after a nack without delay or a lease expiry: initial * multiplier**(attempt-1), capped at max, minus up to jitter of it",
                "properties": {
                    "initial": ref("Duration"),
                    "multiplier": {"type": "number", "minimum": 1, "maximum": 100},
                    "max": ref("Duration"),
                    "jitter": {"type": "number", "minimum": 0, "maximum": 1},
                },
            },
        },
        closed=False,
    ),
    "Group": {
        "type": "object",
        "properties": {
            "topic": {"type": "string"},
            "group": {"type": "string"},
            "settings": {"type": "object"},
            "members": {"type": "array", "items": {"type": "object"}},
            "assignment": {"type": "object"},
            "partitions": {"type": "array", "items": {"type": "object"}},
            "lag": {"type": "integer"},
            "in_flight": {"type": "integer"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "generation": {"type": "integer"},
            "rebalances": {"type": "array", "items": {"type": "object"}},
            "lifecycle": {"type": "object"},
        },
    },
    "Trace": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "topic": {"type": "string"},
            "partition": {"type": "integer"},
            "offset": {"type": "integer"},
            "retained": {"type": "boolean"},
            "traced": {"type": "boolean"},
            "events": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "at_ms": {"type": "integer"},
                        "event": {"type": "string"},
                        "group": {"type": "string"},
                        "consumer": {"type": "string"},
                        "attempt": {"type": "integer"},
                        "reason": {"type": "string"},
                        "until_ms": {"type": "integer"},
                    },
                },
            },
            "delivery_attempts": {"type": "integer"},
            "total_latency_ms": {"type": ["integer", "null"]},
            "truncated": {"type": "boolean"},
        },
    },
    "SeekTarget": {
        "oneOf": [
            {"enum": ["earliest", "latest"]},
            object_schema(
                {"offset": {"type": "integer", "minimum": 0}, "partition": {"type": "integer"}},
                ("offset",),
            ),
            object_schema({"time": ref("Time")}, ("time",)),
        ]
    },
}


def openapi_document(endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "logq REST API",
            "version": __version__,
            "description": "A durable message broker. Errors are "
            '{"error": {"code", "message"}} with a stable code.',
        },
        "paths": paths,
        "components": {"schemas": COMPONENTS},
    }


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": _PATH_DESCRIPTIONS.get(name, name),
            "schema": {"type": "string"},
        }
        for name in _PATH_PARAMETER.findall(endpoint.path)
    ]
    parameters.extend(
        {"name": q.name, "in": "query", "description": q.description, "schema": q.schema}
        for q in endpoint.query
    )
    success: dict[str, Any] = {"description": "success"}
    if endpoint.response is not None:
        success["content"] = {endpoint.media_type: {"schema": endpoint.response}}
    operation: dict[str, Any] = {
        "operationId": _operation_id(endpoint),
        "summary": endpoint.summary,
        "responses": {
            str(endpoint.status): success,
            "default": {
                "description": "an error",
                "content": {"application/json": {"schema": ref("Error")}},
            },
        },
    }
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": endpoint.body_required,
            "content": {"application/json": {"schema": endpoint.body}},
        }
    return operation


def _operation_id(endpoint: Endpoint) -> str:
    words = re.sub(r"[{}]", "", endpoint.path).strip("/").replace("/", "_") or "root"
    return f"{endpoint.method.lower()}_{words}"
