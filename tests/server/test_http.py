"""The REST API through httpx against the ASGI app over an in-memory broker.

Time moves only through the FakeClock (leases, nack delays, time windows);
no test sleeps. One test at the end runs the real server (uvicorn on a free
port) to check the app as `logq serve` wires it.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from logq.broker import Broker, BrokerConfig, FakeClock, OutgoingMessage
from logq.client import Client
from logq.server import http_dashboard
from logq.server.connections import ConnectionCounter
from logq.server.dashboard_feed import TopicRates, TopicView
from logq.server.http_app import create_app
from logq.server.http_common import ApiState, Limits
from tests.harness import server_thread

pytestmark = pytest.mark.anyio

START_MS = 1_700_000_000_000  # FakeClock's start: 2023-11-14T22:13:20Z
JSON_HEADERS = {"content-type": "application/json"}

# DESIGN.md section 3, route by route.
DESIGN_ROUTES = {
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/archive"),
    ("GET", "/v1/archive/topics"),
    ("POST", "/v1/archive/restore"),
    ("POST", "/v1/topics"),
    ("GET", "/v1/topics"),
    ("GET", "/v1/topics/{topic}"),
    ("PATCH", "/v1/topics/{topic}"),
    ("DELETE", "/v1/topics/{topic}"),
    ("POST", "/v1/topics/{topic}/messages"),
    ("GET", "/v1/topics/{topic}/messages"),
    ("PUT", "/v1/topics/{topic}/groups/{group}"),
    ("GET", "/v1/topics/{topic}/groups/{group}"),
    ("POST", "/v1/topics/{topic}/groups/{group}/receive"),
    ("POST", "/v1/topics/{topic}/groups/{group}/ack"),
    ("POST", "/v1/topics/{topic}/groups/{group}/nack"),
    ("POST", "/v1/topics/{topic}/groups/{group}/reject"),
    ("POST", "/v1/topics/{topic}/groups/{group}/extend"),
    ("POST", "/v1/topics/{topic}/groups/{group}/expired"),
    ("POST", "/v1/topics/{topic}/groups/{group}/seek"),
    ("GET", "/v1/groups"),
    ("POST", "/v1/topics/{topic}/replay"),
    ("GET", "/v1/topics/{topic}/dlq"),
    ("POST", "/v1/topics/{topic}/dlq/redrive"),
    ("DELETE", "/v1/topics/{topic}/dlq"),
    ("POST", "/v1/topics/{topic}/dlq/purge"),
    ("POST", "/v1/topics/{topic}/dlq/requeue"),
    ("GET", "/v1/events"),
    ("GET", "/assets/{name}"),
    ("GET", "/v1/messages/{id}"),
    ("GET", "/v1/messages/{id}/trace"),
    ("GET", "/"),
    ("GET", "/openapi.json"),
}


@dataclass
class Api:
    client: httpx.AsyncClient
    broker: Broker
    clock: FakeClock
    connections: ConnectionCounter
    app: Starlette

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.client.request(method, path, **kwargs)
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def fails(
        self, status: int, code: str, method: str, path: str, **kwargs: Any
    ) -> dict[str, Any]:
        response = await self.client.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        error: dict[str, Any] = response.json()["error"]
        assert error["code"] == code, error
        assert error["message"]
        return error

    async def topic(self, name: str, partitions: int = 1, **settings: Any) -> None:
        await self.ok(
            "POST", "/v1/topics", json={"name": name, "partitions": partitions, **settings}
        )

    async def publish(self, topic: str, body: Any) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = (
            await self.ok("POST", f"/v1/topics/{topic}/messages", json=body)
        )["results"]
        return results

    async def receive(self, topic: str, group: str, **body: Any) -> list[dict[str, Any]]:
        body.setdefault("consumer", "worker-1")
        body.setdefault("max", 100)
        path = f"/v1/topics/{topic}/groups/{group}/receive"
        messages: list[dict[str, Any]] = (await self.ok("POST", path, json=body))["messages"]
        return messages

    async def still_serving(self) -> None:
        assert await self.ok("GET", "/health") == {"status": "ok"}


@asynccontextmanager
async def open_api(
    limits: Limits | None = None, connections: ConnectionCounter | None = None
) -> AsyncIterator[Api]:
    clock = FakeClock()
    broker = await Broker.open(BrokerConfig(), clock=clock)
    counter = connections or ConnectionCounter()
    app = create_app(broker, counter, limits=limits)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://logq.test") as client:
            yield Api(client, broker, clock, counter, app)
    finally:
        await broker.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with open_api() as opened:
        yield opened


# -- topics -------------------------------------------------------------------------


async def test_topic_create_list_describe_patch_delete(api: Api) -> None:
    created = await api.ok(
        "POST",
        "/v1/topics",
        json={"name": "orders", "partitions": 2, "visibility_timeout": "10s", "retention": "2h"},
    )
    assert created["name"] == "orders"
    assert created["config"]["visibility_timeout_ms"] == 10_000
    assert created["config"]["retention_ms"] == 7_200_000
    await api.fails(409, "EXISTS", "POST", "/v1/topics", json={"name": "orders"})
    listed = await api.ok("GET", "/v1/topics")
    assert [t["name"] for t in listed["topics"]] == ["orders"]
    assert listed["topics"][0]["messages"] == 0
    described = await api.ok("GET", "/v1/topics/orders")
    assert [p["partition"] for p in described["partitions"]] == [0, 1]
    assert {"messages", "bytes", "first_offset", "last_offset", "pending", "in_flight"} <= set(
        described["partitions"][0]
    )
    patched = await api.ok("PATCH", "/v1/topics/orders", json={"partitions": 4})
    assert len(patched["partitions"]) == 4
    await api.fails(400, "BADARG", "PATCH", "/v1/topics/orders", json={"partitions": 1})
    await api.fails(400, "BADARG", "PATCH", "/v1/topics/orders", json={"name": "other"})
    await api.fails(400, "BADARG", "PATCH", "/v1/topics/orders", json={"ttl": "a while"})
    assert (await api.ok("PATCH", "/v1/topics/orders", json={"ttl": "1h"}))["config"][
        "ttl_ms"
    ] == 3_600_000
    await api.fails(400, "BADARG", "POST", "/v1/topics", json={"name": "x", "colour": "red"})
    await api.fails(400, "BADARG", "POST", "/v1/topics", json={"partitions": 1})
    await api.fails(400, "BADARG", "POST", "/v1/topics", json={"name": "bad name!"})
    bad_backoff = {"name": "y", "backoff": {"initial": "2m", "max": "1m"}}
    await api.fails(400, "BADARG", "POST", "/v1/topics", json=bad_backoff)
    await api.fails(400, "BADARG", "PATCH", "/v1/topics/orders", json={"backoff": {"jitter": 2}})
    patched = await api.ok(
        "PATCH",
        "/v1/topics/orders",
        json={"backoff": {"initial": "1s", "multiplier": 3, "jitter": 0.1}},
    )
    assert patched["config"]["backoff"] == {
        "initial_ms": 1000,
        "multiplier": 3.0,
        "max_ms": 300_000,
        "jitter": 0.1,
    }
    assert await api.ok("DELETE", "/v1/topics/orders") == {"deleted": "orders"}
    await api.fails(404, "NOTOPIC", "GET", "/v1/topics/orders")
    await api.fails(404, "NOTOPIC", "DELETE", "/v1/topics/orders")
    assert (await api.ok("GET", "/v1/topics"))["topics"] == []


# -- publish and peek --------------------------------------------------------------------


async def test_the_topic_list_pages_and_filters(api: Api) -> None:
    for name in ("b-orders", "a-orders", "mail", "c-orders"):
        await api.topic(name)
    everything = await api.ok("GET", "/v1/topics")
    assert [t["name"] for t in everything["topics"]] == ["a-orders", "b-orders", "c-orders", "mail"]
    assert "matching" not in everything  # unpaged, as before
    first = await api.ok("GET", "/v1/topics", params={"filter": "ORDERS", "limit": 2})
    assert [t["name"] for t in first["topics"]] == ["a-orders", "b-orders"]
    assert (first["matching"], first["next_offset"]) == (3, 2)
    rest = await api.ok("GET", "/v1/topics", params={"filter": "orders", "offset": 2})
    assert [t["name"] for t in rest["topics"]] == ["c-orders"]
    assert rest["next_offset"] is None
    assert rest["topics"][0] == await api.ok("GET", "/v1/topics/c-orders")
    for bad in (
        {"limit": 0},
        {"limit": 1001},
        {"offset": -1},
        {"limit": "x"},
        {"filter": "f" * 256},
    ):
        await api.fails(400, "BADARG", "GET", "/v1/topics", params=bad)


async def test_publish_one_and_a_batch_values_come_back_the_way_they_went_in(api: Api) -> None:
    await api.topic("events", partitions=1)
    raw = bytes(range(256))  # not UTF-8, not JSON
    (one,) = await api.publish(
        "events", {"value": {"event": "signup", "user": "alice"}, "key": "alice"}
    )
    assert one == {"id": "events:0:0", "partition": 0, "offset": 0}
    batch = await api.publish(
        "events",
        {
            "messages": [
                {"value_b64": base64.b64encode(raw).decode(), "headers": {"trace": "t-1"}},
                {"value": "just text", "priority": "high"},
                {"value": [1, 2.5, None, True]},
                {"value_b64": base64.b64encode(b'{"looks": "like json"}').decode()},
                {"key_b64": base64.b64encode(b"\xff\x00").decode(), "value": None},
                {},
            ]
        },
    )
    assert sorted(r["offset"] for r in batch) == [1, 2, 3, 4, 5, 6]  # lanes are stored apart
    peeked = (await api.ok("GET", "/v1/topics/events/messages", params={"partition": 0}))[
        "messages"
    ]
    by_id = {m["id"]: m for m in peeked}
    first, *rest = [by_id[r["id"]] for r in [one, *batch]]
    assert first["value"] == {"event": "signup", "user": "alice"}
    assert first["key"] == "alice"
    assert "value_b64" not in first
    binary, text, array, json_as_bytes, binary_key, empty = rest
    assert base64.b64decode(binary["value_b64"]) == raw
    assert "value" not in binary
    assert binary["headers"] == {"trace": "t-1"}
    assert text["value"] == "just text"
    assert text["priority"] == "high"
    assert array["value"] == [1, 2.5, None, True]
    assert base64.b64decode(json_as_bytes["value_b64"]) == b'{"looks": "like json"}'
    assert base64.b64decode(binary_key["key_b64"]) == b"\xff\x00"
    assert binary_key["value"] is None and "value_b64" not in binary_key
    assert empty["value"] is None and empty["key"] is None
    # JSON is stored as JSON text, marked so that it comes back as JSON
    stored = await api.broker.get_message("events:0:0")
    assert msgspec.json.decode(stored.value or b"") == {"event": "signup", "user": "alice"}
    assert stored.headers["content-type"] == "application/json"
    assert (await api.broker.get_message(batch[0]["id"])).value == raw
    # marked as JSON by another producer, but not JSON: still served, as base64
    marked = OutgoingMessage(b"{not json", headers={"content-type": "application/json"})
    (result,) = await api.broker.publish("events", [marked])
    served = await api.ok("GET", f"/v1/messages/{result.id}")
    assert base64.b64decode(served["value_b64"]) == b"{not json"


async def test_publish_refuses_bad_messages_and_changes_nothing(api: Api) -> None:
    await api.topic("t", partitions=2)
    path = "/v1/topics/t/messages"
    bad: list[Any] = [
        {"value": 1, "value_b64": "AA=="},
        {"value_b64": "not base64!"},
        {"value": 1, "messages": [{"value": 2}]},
        {"value": 1, "colour": "red"},
        {"value": 1, "priority": "urgent"},
        {"value": 1, "partition": 7},
        {"value": 1, "partition": "0"},
        {"value": 1, "headers": {"content-type": "text/plain"}},
        {"messages": []},
        {"messages": [{"value": 1}, {"value": 2, "delay": "soon"}]},
        {"value": 1, "deliver_at": "yesterday"},
        {"value": 1, "ttl": "forever"},
        [1, 2],
    ]
    for body in bad:
        await api.fails(400, "BADARG", "POST", path, json=body)
    not_utf8 = b'{"value": "\xff"}'
    await api.fails(400, "BADARG", "POST", path, content=not_utf8, headers=JSON_HEADERS)
    await api.fails(400, "BADARG", "POST", path, json={"value": 1, "delay": "1s", "deliver_at": 5})
    await api.fails(400, "BADARG", "POST", path, json={"value": 1, "delay": "8d"})  # past max_delay
    await api.fails(400, "BADARG", "POST", path, json={"value": 1, "dedup_id": ""})
    assert (await api.ok("GET", "/v1/topics/t"))["messages"] == 0


async def test_peek_by_offset_and_by_time_window(api: Api) -> None:
    await api.topic("log", partitions=1)
    for second in range(3):
        await api.publish("log", {"messages": [{"value": f"{second}-{i}"} for i in range(2)]})
        api.clock.advance(1000)
    path = "/v1/topics/log/messages"

    async def values(**params: Any) -> list[Any]:
        return [m["value"] for m in (await api.ok("GET", path, params=params))["messages"]]

    assert await values(partition=0, offset=3) == ["1-1", "2-0", "2-1"]
    assert await values(partition=0, offset=1, limit=2) == ["0-1", "1-0"]
    assert await values(from_time=START_MS + 1000, to_time=START_MS + 2000) == ["1-0", "1-1"]
    assert await values(from_time="2023-11-14T22:13:22Z") == ["2-0", "2-1"]
    assert await values(to_time="2023-11-14T22:13:21Z") == ["0-0", "0-1"]
    assert all(
        m["attempt"] == 0 for m in (await api.ok("GET", path, params={"limit": 10}))["messages"]
    )
    await api.fails(400, "BADARG", "GET", path, params={"from_time": "last tuesday"})
    await api.fails(400, "BADARG", "GET", path, params={"limit": "lots"})
    await api.fails(400, "BADARG", "GET", path, params={"limit": 0})
    await api.fails(400, "BADARG", "GET", path, params={"partition": 5})
    await api.fails(400, "BADARG", "GET", path, params={"ofset": 1})
    await api.fails(404, "NOTOPIC", "GET", "/v1/topics/nope/messages")


# -- groups ------------------------------------------------------------------------------


async def test_group_put_and_get(api: Api) -> None:
    await api.topic("jobs", partitions=2)
    group = await api.ok(
        "PUT",
        "/v1/topics/jobs/groups/workers",
        json={"mode": "ordered", "visibility_timeout": "10s", "max_deliveries": 3},
    )
    assert group["settings"]["mode"] == "ordered"
    assert group["settings"]["visibility_timeout_ms"] == 10_000
    assert group["settings"]["max_deliveries"] == 3
    changed = await api.ok("PUT", "/v1/topics/jobs/groups/workers", json={"auto_ack": True})
    assert changed["settings"]["auto_ack"] is True
    assert changed["settings"]["mode"] == "ordered"
    described = await api.ok("GET", "/v1/topics/jobs/groups/workers")
    assert {"members", "assignment", "lag", "in_flight", "counts"} <= set(described)
    created_empty = await api.ok("PUT", "/v1/topics/jobs/groups/other")
    assert created_empty["group"] == "other"
    await api.fails(404, "NOGROUP", "GET", "/v1/topics/jobs/groups/nobody")
    await api.fails(404, "NOTOPIC", "GET", "/v1/topics/nope/groups/workers")
    await api.fails(404, "NOTOPIC", "PUT", "/v1/topics/nope/groups/workers")
    await api.fails(400, "BADARG", "PUT", "/v1/topics/jobs/groups/w", json={"mode": "fifo"})
    await api.fails(400, "BADARG", "PUT", "/v1/topics/jobs/groups/w", json={"lease": "forever"})
    await api.fails(400, "BADARG", "PUT", "/v1/topics/jobs/groups/w", json={"backoff": {"x": 1}})
    groups = (await api.ok("GET", "/v1/groups"))["groups"]
    assert [(g["topic"], g["group"]) for g in groups] == [("jobs", "other"), ("jobs", "workers")]
    assert all("lag" in g for g in groups)


async def test_receive_then_ack(api: Api) -> None:
    await api.topic("jobs", partitions=2)
    await api.publish("jobs", {"messages": [{"value": {"n": n}, "key": f"k{n}"} for n in range(5)]})
    received = await api.receive("jobs", "workers")
    assert sorted(m["value"]["n"] for m in received) == [0, 1, 2, 3, 4]
    assert all(m["attempt"] == 1 for m in received)
    assert {"id", "partition", "offset", "key", "headers", "priority", "timestamp"} <= set(
        received[0]
    )
    assert await api.receive("jobs", "workers") == []
    ids = [m["id"] for m in received]
    assert await api.ok("POST", "/v1/topics/jobs/groups/workers/ack", json={"ids": ids}) == {
        "acked": 5
    }
    group = await api.ok("GET", "/v1/topics/jobs/groups/workers")
    assert group["counts"]["acked"] == 5 and group["lag"] == 0
    assert (await api.ok("GET", "/v1/groups"))["groups"][0]["lag"] == 0
    await api.fails(
        400, "BADARG", "POST", "/v1/topics/jobs/groups/workers/ack", json={"ids": ["zzz"]}
    )
    await api.fails(400, "BADARG", "POST", "/v1/topics/jobs/groups/workers/ack", json={"ids": []})
    await api.fails(404, "NOGROUP", "POST", "/v1/topics/jobs/groups/nobody/ack", json={"ids": ids})
    await api.fails(400, "BADARG", "POST", "/v1/topics/jobs/groups/w/receive", json={"max": 1})
    await api.fails(
        400, "BADARG", "POST", "/v1/topics/jobs/groups/w/receive", json={"consumer": "c", "max": 0}
    )


async def test_receive_long_polls_until_a_message_arrives(api: Api) -> None:
    await api.topic("jobs", partitions=1)
    waiting = asyncio.create_task(api.receive("jobs", "workers", wait="30s"))
    while not api.broker.groups or not api.broker.describe_group("jobs", "workers")["members"]:
        await asyncio.sleep(0)  # let the request reach its wait; no time passes
    assert not waiting.done()
    await api.publish("jobs", {"value": "wake up"})
    (message,) = await asyncio.wait_for(waiting, timeout=10)
    assert message["value"] == "wake up"
    # an empty long poll ends when the broker's clock passes its wait
    empty = asyncio.create_task(api.receive("jobs", "workers", wait="5ms"))
    while not api.clock.sleepers:
        await asyncio.sleep(0)  # let the request reach its wait
    api.clock.advance(5)
    assert await asyncio.wait_for(empty, timeout=10) == []


async def test_nack_then_redelivery_with_attempt_two(api: Api) -> None:
    await api.topic("jobs", partitions=1)
    await api.publish("jobs", {"value": "retry me"})
    (first,) = await api.receive("jobs", "workers")
    nacked = await api.ok(
        "POST", "/v1/topics/jobs/groups/workers/nack", json={"ids": [first["id"]], "delay": "5s"}
    )
    assert nacked == {"nacked": 1}
    assert await api.receive("jobs", "workers") == []
    api.clock.advance(5000)
    (again,) = await api.receive("jobs", "workers")
    assert (again["id"], again["attempt"], again["value"]) == (first["id"], 2, "retry me")
    await api.fails(
        400,
        "BADARG",
        "POST",
        "/v1/topics/jobs/groups/workers/nack",
        json={"ids": [again["id"]], "delay": "5 parsecs"},
    )
    await api.ok("POST", "/v1/topics/jobs/groups/workers/ack", json={"ids": [again["id"]]})
    metrics = (await api.client.get("/metrics")).text
    assert 'logq_redelivered_total{group="workers",topic="jobs"} 1.0' in metrics
    assert 'logq_redeliveries_total{group="workers",reason="nacked",topic="jobs"} 1.0' in metrics
    assert 'logq_delivery_attempts_bucket{group="workers",le="1.0",topic="jobs"} 0.0' in metrics
    assert 'logq_delivery_attempts_bucket{group="workers",le="2.0",topic="jobs"} 1.0' in metrics
    assert 'logq_time_to_ack_seconds_count{group="workers",topic="jobs"} 1.0' in metrics


async def test_a_nack_without_delay_waits_the_groups_backoff(api: Api) -> None:
    """As a native NACK without DELAY does: a REST nack used to wait 0 ms."""
    await api.topic("jobs", partitions=1, backoff={"initial": "5s"})
    await api.publish("jobs", {"value": "retry me"})
    (first,) = await api.receive("jobs", "workers")
    path = "/v1/topics/jobs/groups/workers/nack"
    assert await api.ok("POST", path, json={"ids": [first["id"]]}) == {"nacked": 1}
    assert await api.receive("jobs", "workers") == []
    api.clock.advance(4999)
    assert await api.receive("jobs", "workers") == []
    api.clock.advance(1)
    (again,) = await api.receive("jobs", "workers")
    assert (again["id"], again["attempt"]) == (first["id"], 2)
    described = await api.ok("GET", "/v1/topics/jobs/groups/workers")
    assert described["counts"]["backoff_waits"] == 1
    # an explicit delay of 0 still means at once
    assert await api.ok("POST", path, json={"ids": [again["id"]], "delay": 0}) == {"nacked": 1}
    (third,) = await api.receive("jobs", "workers")
    assert third["attempt"] == 3


async def test_reject_goes_to_the_dlq_with_its_origin(api: Api) -> None:
    await api.topic("orders", partitions=1)
    await api.publish("orders", {"value": {"order": 7}, "key": "o-7"})
    (message,) = await api.receive("orders", "billing")
    rejected = await api.ok(
        "POST",
        "/v1/topics/orders/groups/billing/reject",
        json={"ids": [message["id"]], "reason": "bad data"},
    )
    assert rejected == {"rejected": 1}
    (dead,) = (await api.ok("GET", "/v1/topics/orders/dlq"))["messages"]
    assert dead["origin_id"] == message["id"]
    assert dead["group"] == "billing"
    assert dead["attempts"] == 1
    assert dead["reason"] == "bad data"
    assert dead["dead_lettered_at"] == START_MS
    assert dead["value"] == {"order": 7} and dead["key"] == "o-7"
    assert (await api.ok("GET", "/v1/topics/orders/dlq", params={"limit": 1}))["messages"]
    await api.fails(404, "NOTOPIC", "GET", "/v1/topics/nope/dlq")
    await api.fails(404, "NOTOPIC", "POST", "/v1/topics/nope/dlq/redrive", json={})
    await api.fails(400, "BADARG", "POST", "/v1/topics/orders/dlq/redrive", json={"ids": "all"})
    assert await api.ok("POST", "/v1/topics/orders/dlq/redrive", json={}) == {"redriven": 1}
    assert await api.ok("GET", "/v1/topics/orders/dlq") == {"messages": []}
    assert await api.ok("DELETE", "/v1/topics/orders/dlq") == {"purged": 0}
    metrics = (await api.client.get("/metrics")).text
    assert 'logq_dead_lettered_total{group="billing",topic="orders"} 1.0' in metrics


async def test_extend_renews_the_lease(api: Api) -> None:
    await api.topic("jobs", partitions=1)
    await api.publish("jobs", {"value": "slow work"})
    (message,) = await api.receive("jobs", "workers", visibility_timeout="1s")
    api.clock.advance(800)
    extended = await api.ok(
        "POST",
        "/v1/topics/jobs/groups/workers/extend",
        json={"ids": [message["id"]], "visibility_timeout": "5s"},
    )
    assert extended == {"extended": 1}
    api.clock.advance(800)  # past the first lease, within the renewed one
    await api.broker.expire_leases()
    assert await api.receive("jobs", "workers") == []
    api.clock.advance(5000)
    await api.broker.expire_leases()
    (again,) = await api.receive("jobs", "workers")
    assert again["attempt"] == 2
    await api.fails(
        400,
        "BADARG",
        "POST",
        "/v1/topics/jobs/groups/workers/extend",
        json={"ids": [message["id"]], "visibility_timeout": "eventually"},
    )


async def test_seek_moves_the_group(api: Api) -> None:
    await api.topic("log", partitions=1)
    await api.publish("log", {"messages": [{"value": n} for n in range(3)]})
    api.clock.advance(1000)
    await api.publish("log", {"value": 3})
    path = "/v1/topics/log/groups/replay/seek"
    received = await api.receive("log", "replay")
    await api.ok(
        "POST", "/v1/topics/log/groups/replay/ack", json={"ids": [m["id"] for m in received]}
    )
    assert await api.ok("POST", path, json={"to": "earliest"}) == {"positions": {"0": 0}}
    assert [m["value"] for m in await api.receive("log", "replay")] == [0, 1, 2, 3]
    assert await api.ok("POST", path, json={"to": "latest"}) == {"positions": {"0": 4}}
    assert await api.receive("log", "replay") == []
    await api.ok("POST", path, json={"to": {"offset": 2, "partition": 0}})
    assert [m["value"] for m in await api.receive("log", "replay")] == [2, 3]
    await api.ok("POST", path, json={"to": {"time": START_MS + 1000}})
    assert [m["value"] for m in await api.receive("log", "replay")] == [3]
    await api.fails(400, "BADARG", "POST", path, json={"to": "yesterday"})
    await api.fails(400, "BADARG", "POST", path, json={"to": {"offset": -1}})
    await api.fails(400, "BADARG", "POST", path, json={})


async def test_get_message_by_id(api: Api) -> None:
    await api.topic("t", partitions=1)
    (sent,) = await api.publish("t", {"value": {"hello": "world"}, "headers": {"a": "b"}})
    message = await api.ok("GET", f"/v1/messages/{sent['id']}")
    assert message["value"] == {"hello": "world"}
    assert message["headers"]["a"] == "b"
    assert message["id"] == sent["id"]
    await api.fails(404, "NOMESSAGE", "GET", "/v1/messages/t:0:99")
    await api.fails(404, "NOMESSAGE", "GET", "/v1/messages/nope:0:0")
    await api.fails(400, "BADARG", "GET", "/v1/messages/not-an-id")
    replay = await api.ok("POST", "/v1/topics/t/replay", json={"group": "again"})
    assert replay["group"] == "again" and replay["lag"] == 1
    await api.fails(409, "EXISTS", "POST", "/v1/topics/t/replay", json={"group": "again"})
    # null is not a time or a mode: refused as the schema says, nothing made
    for bad in ({"to_time": None}, {"from_time": None}, {"mode": None}, {"mode": "keyed"}):
        body = {"group": "nulls", **bad}
        await api.fails(400, "BADARG", "POST", "/v1/topics/t/replay", json=body)
    await api.fails(404, "NOGROUP", "GET", "/v1/topics/t/groups/nulls")
    trace = await api.ok("GET", f"/v1/messages/{sent['id']}/trace")
    assert [event["event"] for event in trace["events"]] == ["PUBLISHED"]
    await api.fails(404, "NOMESSAGE", "GET", "/v1/messages/t:0:99/trace")


# -- system routes ---------------------------------------------------------------------------


async def test_health_stats_and_dashboard(api: Api) -> None:
    assert await api.ok("GET", "/health") == {"status": "ok"}
    await api.topic("user-signups", partitions=2)
    await api.publish("user-signups", {"value": "new user: alex", "partition": 0})
    stats = await api.ok("GET", "/v1/stats")
    assert stats["queues"] == {"user-signups-0": 1, "user-signups-1": 0}
    assert stats["active_connections"] == 1  # this request
    assert stats["http_connections"] == 1 and stats["native_connections"] == 0
    assert stats["messages_in"] == 1
    page = await api.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/assets/app.js"' in page.text
    script = await api.client.get("/assets/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "EventSource" in script.text
    assert (await api.client.get("/assets/nothing.js")).status_code == 404
    assert api.connections.http == 0


async def test_the_event_snapshot_holds_what_the_dashboard_shows(api: Api) -> None:
    await api.topic("user-signups", partitions=2)
    await api.publish("user-signups", {"value": "new user: alex", "partition": 0})
    await api.receive("user-signups", "mailer")
    state = ApiState(api.broker, api.connections, Limits())
    snapshot = http_dashboard.sample(state, TopicRates(), 0.0).snapshot(TopicView())
    (topic,) = snapshot["topics"]["rows"]
    assert topic["name"] == "user-signups" and topic["partitions"] == 2
    assert (topic["messages"], topic["in_flight"], topic["pending"]) == (1, 1, 1)
    assert snapshot["topics"]["matching"] == 1
    assert snapshot["totals"]["messages"] == 1 and snapshot["totals"]["groups"] == 1
    assert [busy["name"] for busy in snapshot["busiest"]] == ["user-signups"]
    (group,) = snapshot["groups"]
    assert (group["group"], group["lag"], group["in_flight"]) == ("mailer", 1, 1)
    assert snapshot["lanes"] == ["high", "normal", "low"]
    assert "active_connections" in snapshot["connections"]


async def test_metrics_name_every_series(api: Api) -> None:
    await api.topic("jobs", partitions=1)
    await api.publish("jobs", {"value": 1})
    (message,) = await api.receive("jobs", "workers")
    await api.ok("POST", "/v1/topics/jobs/groups/workers/ack", json={"ids": [message["id"]]})
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        'logq_messages_in_total{topic="jobs"} 1.0',
        'logq_messages_out_total{topic="jobs"} 1.0',
        'logq_bytes_in_total{topic="jobs"}',
        'logq_bytes_out_total{topic="jobs"}',
        'logq_pending_messages{group="workers",topic="jobs"} 0.0',
        'logq_in_flight_messages{group="workers",topic="jobs"} 0.0',
        'logq_acked_total{group="workers",topic="jobs"} 1.0',
        'logq_redelivered_total{group="workers",topic="jobs"} 0.0',
        'logq_dead_lettered_total{group="workers",topic="jobs"} 0.0',
        'logq_active_connections{listener="http"} 1.0',
        'logq_active_connections{listener="native"} 0.0',
        'logq_http_request_duration_seconds_bucket{le="+Inf",method="POST",'
        'route="/v1/topics/{topic}/groups/{group}/receive"} 1.0',
        'logq_http_requests_total{method="POST",route="/v1/topics",status="201"} 1.0',
    ):
        assert line in text, line


async def test_each_app_has_its_own_metrics_registry() -> None:
    async with open_api() as first, open_api() as second:
        await first.topic("only-here")
        assert 'topic="only-here"' in (await first.client.get("/metrics")).text
        assert 'topic="only-here"' not in (await second.client.get("/metrics")).text


async def test_openapi_lists_every_route_with_its_parameters_and_bodies(api: Api) -> None:
    document = await api.ok("GET", "/openapi.json")
    assert document["openapi"].startswith("3.1")
    served = {
        (method, route.path)
        for route in api.app.routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }
    assert served == DESIGN_ROUTES
    listed = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert listed == served
    paths = document["paths"]
    for method, path in served:
        operation = paths[path][method.lower()]
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == {part[1:-1] for part in path.split("/") if part.startswith("{")}
        assert operation["summary"] and operation["responses"]
    peek = {p["name"] for p in paths["/v1/topics/{topic}/messages"]["get"]["parameters"]}
    assert peek == {
        "topic",
        "partition",
        "offset",
        "from_time",
        "to_time",
        "limit",
        "include_deleted",
    }
    for method, path in (
        ("post", "/v1/topics"),
        ("patch", "/v1/topics/{topic}"),
        ("post", "/v1/topics/{topic}/messages"),
        ("put", "/v1/topics/{topic}/groups/{group}"),
        ("post", "/v1/topics/{topic}/groups/{group}/receive"),
        ("post", "/v1/topics/{topic}/groups/{group}/ack"),
        ("post", "/v1/topics/{topic}/groups/{group}/nack"),
        ("post", "/v1/topics/{topic}/groups/{group}/reject"),
        ("post", "/v1/topics/{topic}/groups/{group}/extend"),
        ("post", "/v1/topics/{topic}/groups/{group}/seek"),
    ):
        assert "application/json" in paths[path][method]["requestBody"]["content"], path
    schemas = document["components"]["schemas"]
    for reference in _references(document):
        assert reference.removeprefix("#/components/schemas/") in schemas, reference
    outgoing = schemas["OutgoingMessage"]["properties"]
    assert {"key", "value", "value_b64", "headers", "priority", "partition"} <= set(outgoing)
    receive = paths["/v1/topics/{topic}/groups/{group}/receive"]["post"]["requestBody"]
    properties = receive["content"]["application/json"]["schema"]["properties"]
    assert set(properties) == {"consumer", "max", "wait", "visibility_timeout"}


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


# -- bad input ---------------------------------------------------------------------------------


async def test_bad_input_gets_a_clear_error_and_the_app_keeps_serving(api: Api) -> None:
    await api.topic("t", partitions=1)
    await api.fails(404, "NOTOPIC", "POST", "/v1/topics/nope/messages", json={"value": 1})
    await api.still_serving()
    await api.fails(
        400, "BADARG", "POST", "/v1/topics/t/messages", content=b'{"value": ', headers=JSON_HEADERS
    )
    await api.still_serving()
    await api.fails(400, "BADARG", "POST", "/v1/topics", content=b"\xff\xfe", headers=JSON_HEADERS)
    await api.fails(400, "BADARG", "POST", "/v1/topics/t/groups/g/ack")  # no body at all
    await api.still_serving()
    await api.fails(
        400, "BADARG", "POST", "/v1/topics/t/groups/g/receive", json={"consumer": "c", "wait": "1y"}
    )
    await api.fails(
        400,
        "BADARG",
        "POST",
        "/v1/topics/t/groups/g/receive",
        json={"consumer": "c", "visibility_timeout": "-5s"},
    )
    await api.still_serving()
    await api.fails(404, "UNKNOWN", "GET", "/v2/everything")
    await api.fails(405, "UNKNOWN", "DELETE", "/v1/stats")
    await api.fails(400, "BADARG", "GET", "/v1/topics", params={"verbose": 1})
    await api.still_serving()
    assert await api.publish("t", {"value": "still here"})


async def test_oversize_bodies_are_refused_before_they_are_buffered() -> None:
    limits = Limits(body_bytes_max=1024, publish_body_bytes_max=8192)
    async with open_api(limits) as api:
        await api.topic("t", partitions=1)
        big = {"name": "x" * 2000}
        await api.fails(413, "TOOBIG", "POST", "/v1/topics", json=big)
        await api.still_serving()
        publish = {"value": "v" * 10_000}
        await api.fails(413, "TOOBIG", "POST", "/v1/topics/t/messages", json=publish)
        assert await api.publish("t", {"value": "v" * 5000})  # over the 1 KiB, within 8 KiB
        pulled: list[int] = []

        async def chunks() -> AsyncIterator[bytes]:
            # no Content-Length: the body is counted while it arrives
            for index in range(100):
                pulled.append(index)
                yield b" " * 512

        await api.fails(413, "TOOBIG", "POST", "/v1/topics/t/messages", content=chunks())
        assert len(pulled) < 100
        await api.still_serving()
        assert (await api.ok("GET", "/v1/topics/t"))["messages"] == 1


async def test_an_unexpected_failure_is_a_500_and_the_app_goes_on(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.broker, "stats", broken)
    error = await api.fails(500, "ERR", "GET", "/v1/stats")
    assert "boom" not in error["message"]
    await api.still_serving()


async def test_requests_count_as_connections_and_are_refused_at_the_limit() -> None:
    async with open_api(connections=ConnectionCounter(limit=1)) as api:
        await api.topic("jobs", partitions=1)
        waiting = asyncio.create_task(api.receive("jobs", "workers", wait="30s"))
        while not api.broker.groups or not api.broker.describe_group("jobs", "workers")["members"]:
            await asyncio.sleep(0)
        assert api.connections.http == 1
        await api.fails(429, "LIMIT", "GET", "/health")
        assert api.connections.refused == 1
        await api.broker.publish("jobs", [OutgoingMessage(b"done")])
        (message,) = await asyncio.wait_for(waiting, timeout=10)
        assert base64.b64decode(message["value_b64"]) == b"done"
        assert api.connections.http == 0
        await api.still_serving()


# -- the real server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_server() -> Iterator[str]:
    with server_thread() as running:
        yield running.http


def test_the_real_server_serves_the_rest_api(real_server: str) -> None:
    with httpx.Client(base_url=real_server, timeout=10) as client:
        assert client.get("/health").json() == {"status": "ok"}
        created = client.post("/v1/topics", json={"name": "real", "partitions": 1})
        assert created.status_code == 201, created.text
        sent = client.post("/v1/topics/real/messages", json={"value": {"n": 1}}).json()
        (message,) = client.post(
            "/v1/topics/real/groups/g/receive", json={"consumer": "c", "wait": "2s"}
        ).json()["messages"]
        assert (message["id"], message["value"]) == (sent["results"][0]["id"], {"n": 1})
        acked = client.post("/v1/topics/real/groups/g/ack", json={"ids": [message["id"]]})
        assert acked.json() == {"acked": 1}
        stats = client.get("/v1/stats").json()
        assert stats["queues"] == {"real-0": 0} and stats["active_connections"] >= 1
        assert "logq_acked_total" in client.get("/metrics").text
        too_big = client.post("/v1/topics", content=b"x" * (2 << 20), headers=JSON_HEADERS)
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "TOOBIG"
        assert client.get("/health").status_code == 200


async def test_a_message_ttl_sent_over_rest_expires_it(api: Api) -> None:
    await api.topic("short", partitions=1)
    await api.publish("short", {"messages": [{"value": "gone", "ttl": "1s"}, {"value": "kept"}]})
    api.clock.advance(1000)
    path = "/v1/topics/short/groups/g/receive"
    received = (await api.ok("POST", path, json={"consumer": "c", "max": 10}))["messages"]
    assert [m["value"] for m in received] == ["kept"]
    group = await api.ok("GET", "/v1/topics/short/groups/g")
    assert group["counts"]["ttl_expired"] == 1


def test_metrics_of_the_storage_side(tmp_path: Path) -> None:
    with server_thread(tmp_path / "data") as running, Client(running.native) as client:
        client.create_topic("jobs", partitions=2)
        client.publish_many("jobs", [b"x"] * 10)
        (message,) = client.receive("jobs", "g", max=1, wait="1s")
        message.ack().result(5)
        text = httpx.get(f"{running.http}/metrics").text
    for needle in (
        'logq_fsync_seconds_bucket{le="+Inf",topic="jobs"}',
        'logq_fsync_seconds_count{topic="~journal"}',
        'logq_fsync_failures_total{topic="jobs"} 0.0',
        'logq_recovery_seconds{topic="jobs"}',
        'logq_recovery_cut_bytes{topic="jobs"} 0.0',
        'logq_segments{topic="jobs"} 2.0',
        'logq_rebalances_total{group="g",topic="jobs"} 1.0',
        "logq_disk_free_bytes ",
        "logq_disk_full 0.0",
        "logq_commit_failed_groups_total 0.0",
        "logq_commit_journal_bytes ",
    ):
        assert needle in text, needle
    # the publish was made durable by the writer's commit journal, in one group
    fsyncs = re.search(r'logq_commit_fsyncs_total\{kind="journal"\} (\S+)', text)
    assert fsyncs is not None and float(fsyncs.group(1)) >= 1
    writes = re.search(r"^logq_commit_writes_total (\S+)", text, re.MULTILINE)
    assert writes is not None and float(writes.group(1)) >= 1


def test_other_web_pages_cannot_change_anything(tmp_path: Path) -> None:
    with server_thread(tmp_path / "data") as running, Client(running.native) as client:
        client.create_topic("orders", partitions=1)
        url = f"{running.http}/v1/topics/orders/messages"
        own = running.http
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site", "Origin": own},
        ):
            # a form POST from another site: no preflight, so it must be refused here
            answer = httpx.post(url, content=b"value=x", headers=headers)
            assert answer.status_code == 403, headers
            assert answer.json()["error"]["code"] == "FORBIDDEN"
        assert client.peek("orders") == []
        mine = httpx.post(
            url, json={"value": "x"}, headers={"Origin": own, "Sec-Fetch-Site": "same-origin"}
        )
        assert mine.status_code == 200
        assert httpx.get(f"{running.http}/v1/topics", headers={"Origin": "https://a.b"}).is_success
        # DNS rebinding: a name that is not loopback's is refused, even to read
        port = running.http.rsplit(":", 1)[1]
        for host, status in (
            (f"attacker.example:{port}", 403),
            (f"localhost:{port}", 200),
            (f"127.0.0.1:{port}", 200),
            ("[::1", 403),
        ):
            answer = httpx.get(f"{running.http}/v1/topics", headers={"Host": host})
            assert answer.status_code == status, host
        page = httpx.get(f"{running.http}/")
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"


def test_a_reverse_proxy_named_in_allowed_hosts(tmp_path: Path) -> None:
    from tests.harness import server_process  # noqa: PLC0415

    config = tmp_path / "logq.yaml"
    config.write_text("server:\n  allowedHosts: [logq.example.com]\n")
    with server_process(tmp_path / "data", "--config", str(config)) as running:
        url = f"{running.http}/v1/topics"
        # a proxy that passes Host on
        assert httpx.get(url, headers={"Host": "logq.example.com"}).status_code == 200
        assert httpx.get(url, headers={"Host": "other.example.com"}).status_code == 403
        # a proxy that rewrites Host: its pages may still change things
        proxied = {"Origin": "https://logq.example.com", "Sec-Fetch-Site": "same-origin"}
        assert httpx.post(url, json={"name": "via-proxy"}, headers=proxied).status_code == 201
        evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}
        assert httpx.post(url, json={"name": "via-evil"}, headers=evil).status_code == 403
    from logq.server.config import ServerConfig, apply_file  # noqa: PLC0415
    from logq.server.config_parsing import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match="is not a host name"):
        apply_file(ServerConfig(), {"server": {"allowedHosts": ["logq.example.com:443"]}})


def test_a_deleted_topic_leaves_metrics(tmp_path: Path) -> None:
    with server_thread(tmp_path / "data") as running, Client(running.native) as client:
        client.create_topic("short-lived", partitions=1)
        client.publish("short-lived", b"x")
        assert 'topic="short-lived"' in httpx.get(f"{running.http}/metrics").text
        client.delete_topic("short-lived")
        assert 'topic="short-lived"' not in httpx.get(f"{running.http}/metrics").text


def test_native_command_latency_by_command(tmp_path: Path) -> None:
    import socket  # noqa: PLC0415

    with server_thread(tmp_path / "data") as running, Client(running.native) as client:
        client.create_topic("jobs", partitions=1)
        client.publish_many("jobs", [b"x"] * 10)
        host, port = running.native.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            for name in (b"NOPE", b"ALSO-NOPE"):  # unknown names share one series
                raw.sendall(b"*1\r\n$%d\r\n%s\r\n" % (len(name), name))
                assert raw.recv(4096).startswith(b"-")
        text = httpx.get(f"{running.http}/metrics").text
    counts = dict(re.findall(r'logq_native_command_seconds_count\{command="([^"]+)"\} (\S+)', text))
    assert float(counts["CREATE"]) == 1.0, counts
    assert float(counts["unknown"]) == 2.0, counts
    assert not any("NOPE" in name for name in counts)
    assert 'logq_native_command_seconds_bucket{command="CREATE",le="+Inf"} 1.0' in text


def test_json_logs_carry_the_request_or_connection_id(tmp_path: Path) -> None:
    from tests.harness import server_process  # noqa: PLC0415

    with server_process(tmp_path / "data", "--log-json") as running:
        answer = httpx.post(
            f"{running.http}/v1/topics",
            json={"name": "audit"},
            headers={"X-Request-Id": "ticket-42"},
        )
        assert answer.status_code == 201 and answer.headers["x-request-id"] == "ticket-42"
        made = httpx.get(f"{running.http}/health").headers["x-request-id"]
        assert made.startswith("r-")
        for forged in ("r-0001", "c-77", "no spaces", "x" * 65):  # never passed on as given
            echoed = httpx.get(f"{running.http}/health", headers={"X-Request-Id": forged})
            assert echoed.headers["x-request-id"].startswith("r-")
            assert echoed.headers["x-request-id"] != forged
        with Client(running.native) as client:
            client.create_topic("native-made")
        lines: list[dict[str, Any]] = []
        for _ in range(200):  # the child's log line may trail its answer a little
            lines = [msgspec.json.decode(raw) for raw in list(running.output) if raw[:1] == b"{"]
            if any("native-made" in line.get("message", "") for line in lines):
                break
            time.sleep(0.02)
    by_message = {line["message"]: line for line in lines}
    assert by_message["topic 'audit' created with 6 partitions"]["request_id"] == "ticket-42"
    native = by_message["topic 'native-made' created with 6 partitions"]
    assert native["request_id"].startswith("c-") and native["level"] == "info"


async def test_receive_leaves_out_what_expired_before_the_response_was_built(api: Api) -> None:
    """Leased fresh, expired by the time the response is built (the broker's
    receive is wrapped to move the clock on once it has leased): released
    as expired, counted and traced, and not in the response."""
    await api.topic("t", ttl="10s")
    await api.publish("t", {"value": "old"})
    api.clock.advance(5_000)
    await api.publish("t", {"value": "new"})
    leased = api.broker.receive

    async def slow(*args: Any, **kwargs: Any) -> Any:
        found = await leased(*args, **kwargs)
        api.clock.advance(5_001)  # "old" is past its 10 s now
        return found

    api.broker.receive = slow
    messages = await api.receive("t", "g")
    api.broker.receive = leased
    assert [m["value"] for m in messages] == ["new"]
    assert messages[0]["expires_at"] == messages[0]["timestamp"] + 10_001
    group = await api.ok("GET", "/v1/topics/t/groups/g")
    assert group["counts"]["ttl_expired"] == 1
    assert group["lag"] == 1
    trace = await api.ok("GET", "/v1/messages/t:0:0/trace")
    assert [e["event"] for e in trace["events"]][-2:] == ["DELIVERED", "EXPIRED"]


async def test_expired_route_releases_only_what_has_expired(api: Api) -> None:
    await api.topic("t")
    await api.publish("t", {"messages": [{"value": "a", "ttl": "1s"}, {"value": "b"}]})
    first, second = await api.receive("t", "g")
    body = {"receipts": [first["receipt"], second["receipt"]]}
    await api.fails(409, "NOTEXPIRED", "POST", "/v1/topics/t/groups/g/expired", json=body)
    api.clock.advance(1_000)
    answer = await api.ok("POST", "/v1/topics/t/groups/g/expired", json=body)
    assert answer == {"expired": 1, "not_expired": ["t:0:1"]}
    assert (await api.ok("GET", "/v1/topics/t/groups/g"))["counts"]["ttl_expired"] == 1
