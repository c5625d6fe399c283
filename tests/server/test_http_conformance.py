"""Answers of the REST API that its OpenAPI document promises, checked one by
one where schemathesis (tests/server/test_schema.py) found them wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from logq.broker import Broker, BrokerConfig, FakeClock
from logq.server.connections import ConnectionCounter
from logq.server.http_app import create_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    broker = await Broker.open(BrokerConfig(), clock=FakeClock())
    transport = httpx.ASGITransport(app=create_app(broker, ConnectionCounter()))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://logq.test") as opened:
            yield opened
    finally:
        await broker.close()


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/v1/topics", {"GET", "POST"}),
        ("/v1/topics/t", {"GET", "PATCH", "DELETE"}),
        ("/v1/topics/t/messages", {"GET", "POST"}),
        ("/v1/topics/t/dlq", {"GET", "DELETE"}),
        ("/v1/topics/t/groups/g", {"GET", "PUT"}),
    ],
)
async def test_a_method_not_allowed_lists_every_method_of_the_path(
    client: httpx.AsyncClient, path: str, methods: set[str]
) -> None:
    # Each method had a route of its own, so the 405 named only the first
    # route's method in Allow (OPTIONS /v1/topics: "Allow: POST", no GET).
    response = await client.request("OPTIONS", path)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "UNKNOWN"
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert allowed - {"HEAD"} == methods


async def test_a_publish_with_messages_null_is_refused(client: httpx.AsyncClient) -> None:
    # {"messages": null} matches neither form of the publish body, but was
    # taken for a single message (with no value) and stored.
    await client.post("/v1/topics", json={"name": "t"})
    for body in ({"messages": None}, {"messages": None, "value": 1}):
        response = await client.post("/v1/topics/t/messages", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "BADARG"
    listed = await client.get("/v1/topics/t/messages")
    assert listed.json() == {"messages": []}
    sent = await client.post("/v1/topics/t/messages", json={"messages": [{"value": 1}]})
    assert sent.status_code == 200, sent.text


async def test_a_seek_target_with_other_fields_is_refused(client: httpx.AsyncClient) -> None:
    # {"offset": 0, "x": 1} or {"time": ..., "offset": 0} moved the group,
    # the extra field ignored, where the document allows no other field.
    await client.post("/v1/topics", json={"name": "t", "partitions": 2})
    path = "/v1/topics/t/groups/g/seek"
    for target in ({"offset": 0, "x": 1}, {"time": 0, "offset": 0}, {}, {"partition": 0}):
        response = await client.post(path, json={"to": target})
        assert response.status_code == 400, (target, response.text)
        assert response.json()["error"]["code"] == "BADARG"
    accepted: list[object] = [{"offset": 0}, {"offset": 0, "partition": 1}, {"time": 0}, "latest"]
    for good in accepted:
        response = await client.post(path, json={"to": good})
        assert response.status_code == 200, (good, response.text)


async def test_the_document_allows_what_redrive_accepts(client: httpx.AsyncClient) -> None:
    # {"ids": null} redrives every dead letter, as {} does; the document said
    # ids is an array, so a schema-valid client could not send what works.
    await client.post("/v1/topics", json={"name": "t"})
    response = await client.post("/v1/topics/t/dlq/redrive", json={"ids": None})
    assert response.json() == {"redriven": 0}
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/v1/topics/{topic}/dlq/redrive"]["post"]
    ids = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["ids"]
    assert ids["type"] == ["array", "null"]
