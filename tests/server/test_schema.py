"""Every route of the REST API against its own OpenAPI document, with
schemathesis: requests generated from `/openapi.json` (valid ones, and ones
the document says are invalid) go to a real server on a free port, and each
answer must be no 5xx and match the document: status, content type, headers
and body.

Half the cases name the seeded topic, group and message instead of random
ones, so the routes also answer from real data; the seed is put back when a
case has deleted it.

One check is left out: that every request the document allows is accepted
(positive_data_acceptance). The broker checks ranges and shapes the document
does not spell out (a visibility timeout of 1 ms to 12 h, a message id of
'<topic>:<partition>:<offset>', a topic that exists), and answers them 400.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from logq.broker import Broker, BrokerConfig, SystemClock
from logq.server.connections import ConnectionCounter
from logq.server.http_app import create_app
from tests.harness import server_thread

MAX_EXAMPLES = 25
SEED = {"topic": "orders", "group": "workers", "id": "orders:0:0"}
CASES: dict[str, int] = {}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    # Long polls are capped at 10 ms, so a generated `wait` cannot hold a case up.
    with server_thread(receive_wait_ms_max=10) as running:
        yield running.http
    total = sum(CASES.values())
    print(f"\nschemathesis: {total} cases over {len(CASES)} operations")


def _document() -> dict[str, Any]:
    """The OpenAPI document, as an app built like the server's serves it
    (collection needs it before any server runs; a test below checks that the
    real server serves the same)."""
    broker = Broker(BrokerConfig(), SystemClock())  # never opened: the document needs no data
    transport = httpx.ASGITransport(app=create_app(broker, ConnectionCounter()))

    async def fetch() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=transport, base_url="http://logq.test") as client:
            document: dict[str, Any] = (await client.get("/openapi.json")).json()
        return document

    return asyncio.run(fetch())


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)
# The event stream never ends: a case reads its first two events (a second
# apart) rather than schemathesis's twenty, now that its query parameters
# make it as many cases as any route.
schema.config.max_stream_events = 2


def test_the_server_serves_this_document(server: str) -> None:
    assert httpx.get(f"{server}/openapi.json", timeout=10).json() == DOCUMENT


def _seed(server: str) -> None:
    """The seeded topic, group and a few messages, put back if a case removed them.

    Each request, like each case, opens its own connection: a kept-alive one
    answers in about 40 ms here (delayed ACK), a fresh one in about 3 ms."""
    topic, group = SEED["topic"], SEED["group"]
    if requests.get(f"{server}/v1/topics/{topic}", timeout=10).status_code == 404:
        created = requests.post(f"{server}/v1/topics", json={"name": topic, "partitions": 2})
        created.raise_for_status()
        messages: list[Any] = [{"value": {"n": n}, "partition": 0} for n in range(3)]
        requests.post(f"{server}/v1/topics/{topic}/messages", json={"messages": messages})
    if requests.get(f"{server}/v1/topics/{topic}/groups/{group}").status_code == 404:
        requests.put(f"{server}/v1/topics/{topic}/groups/{group}", json={"mode": "shared"})


def _wants_seed(case: schemathesis.Case[Any]) -> bool:
    # derived from the generated case, so a failing case replays the same way
    return zlib.crc32(repr((case.body, case.query)).encode()) % 2 == 0


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_route_answers_as_its_schema_says(case: schemathesis.Case[Any], server: str) -> None:
    if case.path_parameters and _wants_seed(case):
        case.path_parameters = {
            name: SEED.get(name, value) for name, value in case.path_parameters.items()
        }
        _seed(server)
    CASES[case.operation.label] = CASES.get(case.operation.label, 0) + 1
    case.call_and_validate(base_url=server, excluded_checks=[positive_data_acceptance])


def test_every_operation_ran_cases() -> None:
    if not CASES:
        pytest.skip("the schemathesis test did not run in this session")
    operations = sum(len(methods) for methods in DOCUMENT["paths"].values())
    assert len(CASES) == operations
    assert all(count > 0 for count in CASES.values())
