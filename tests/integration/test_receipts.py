"""Stale settlements against a real server: a consumer whose lease ran out
while another consumer received the message again cannot ack, nack, reject
or extend the other's copy, through the native protocol (a RESP library we
did not write, and the logq client) or REST. Plain ids, as typed into
redis-cli, keep settling the current delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from logq.client import AsyncClient, Client
from logq.errors import StaleDeliveryError
from tests.harness import Running, server_thread

SHORT = "150ms"  # consumer A's lease: B's long poll returns once it lapses


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with server_thread() as running:
        yield running


def _fields(reply: Any) -> dict[Any, Any]:
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def test_native_stale_receipts_are_refused_and_plain_ids_still_work(server: Running) -> None:
    r: Any = redis.Redis(port=server.port)  # redis-py is not fully typed
    r.execute_command("CREATE", "rcpt-native", "PARTITIONS", "1")
    r.execute_command("GROUP", "rcpt-native", "g", "MODE", "shared")
    r.execute_command("PUB", "rcpt-native", "job")
    (a,) = r.execute_command("RECV", "rcpt-native", "g", "a", "VISIBILITY_TIMEOUT", SHORT)
    (b,) = r.execute_command("RECV", "rcpt-native", "g", "b", "WAIT", "10s")
    a, b = _fields(a), _fields(b)
    assert a[b"id"] == b[b"id"] and (a[b"attempt"], b[b"attempt"]) == (1, 2)
    message_id = a[b"id"].decode()
    late, current = f"{message_id}@{a[b'lease']}", f"{message_id}@{b[b'lease']}"
    for command in (
        ["ACK", "rcpt-native", "g", late],
        ["NACK", "rcpt-native", "g", late],
        ["REJECT", "rcpt-native", "g", "REASON", "late", late],
        ["EXTEND", "rcpt-native", "g", late],
        ["ACKR", "rcpt-native", "g", "LEASE", a[b"lease"], 0, 0, 1],
    ):
        with pytest.raises(redis.ResponseError, match=r"^STALE .*" + late):
            r.execute_command(*command)
    assert r.execute_command("RECV", "rcpt-native", "g", "c") == []  # B still holds it
    assert r.execute_command("DLQ", "rcpt-native") == []
    assert r.execute_command("EXTEND", "rcpt-native", "g", current) == 1
    # a request naming a stale delivery and a current one: the current one is settled
    r.execute_command("PUB", "rcpt-native", "second")
    (fresh,) = r.execute_command("RECV", "rcpt-native", "g", "b")
    fresh = _fields(fresh)
    mixed = r.execute_command("ACK", "rcpt-native", "g", late, f"{fresh[b'id'].decode()}")
    assert _fields(mixed) == {b"count": 1, b"stale": [late.encode()]}
    assert r.execute_command("ACKR", "rcpt-native", "g", "LEASE", b[b"lease"], 0, 0, 1) == 1
    # plain ids, as typed by hand: the current delivery, whoever holds it
    r.execute_command("PUB", "rcpt-native", "third")
    (third,) = r.execute_command("RECV", "rcpt-native", "g", "b")
    assert r.execute_command("ACK", "rcpt-native", "g", _fields(third)[b"id"]) == 1


def test_the_client_raises_stale_delivery_error(server: Running) -> None:
    with Client(server.native) as client:
        client.create_topic("rcpt-client", partitions=1)
        client.put_group("rcpt-client", "g", mode="shared")
        client.publish("rcpt-client", b"job")
        (late,) = client.receive("rcpt-client", "g", consumer="a", visibility_timeout=SHORT)
        (current,) = client.receive("rcpt-client", "g", consumer="b", wait="10s")
        assert (current.id, current.attempt) == (late.id, 2) and current.lease != late.lease
        with pytest.raises(StaleDeliveryError) as raised:
            late.ack().result(10)
        assert raised.value.stale == [late.receipt] and not raised.value.retriable
        for settle in (late.nack, late.reject, late.extend):
            with pytest.raises(StaleDeliveryError):
                settle()
        assert client.dlq("rcpt-client") == []
        assert current.extend() == 1
        assert current.ack().result(10) == 1
        assert client.describe_group("rcpt-client", "g")["counts"]["acked"] == 1
        # the consumer's messages carry their lease token too
        client.publish("rcpt-client", b"pushed")
        with client.consume("rcpt-client", "g", consumer="c") as consumer:
            (pushed,) = consumer.next_batch(1, timeout_s=10)
            assert pushed.lease > current.lease
            assert pushed.ack().result(10) == 1


def test_rest_receipts(server: Running) -> None:
    base = "/v1/topics/rcpt-rest/groups/g"
    with httpx.Client(base_url=server.http, timeout=20) as http:
        http.post("/v1/topics", json={"name": "rcpt-rest", "partitions": 1}).raise_for_status()
        http.put(base, json={"mode": "shared"}).raise_for_status()
        http.post("/v1/topics/rcpt-rest/messages", json={"value": "job"}).raise_for_status()

        def receive(consumer: str, **options: Any) -> list[dict[str, Any]]:
            reply = http.post(f"{base}/receive", json={"consumer": consumer, **options})
            reply.raise_for_status()
            messages: list[dict[str, Any]] = reply.json()["messages"]
            return messages

        (late,) = receive("a", visibility_timeout=SHORT)
        (current,) = receive("b", wait="10s")
        assert late["receipt"] == f"{late['id']}@{late['lease']}"
        assert current["receipt"] != late["receipt"] and current["attempt"] == 2
        for action in ("ack", "nack", "reject", "extend"):
            reply = http.post(f"{base}/{action}", json={"receipts": [late["receipt"]]})
            assert reply.status_code == 409, reply.text
            assert reply.json()["error"]["code"] == "STALE"
        assert http.get("/v1/topics/rcpt-rest/dlq").json() == {"messages": []}
        metrics = http.get("/metrics").text
        assert 'logq_stale_total{group="g",topic="rcpt-rest"} 4.0' in metrics
        extended = http.post(f"{base}/extend", json={"receipts": [current["receipt"]]})
        assert extended.json() == {"extended": 1}
        http.post("/v1/topics/rcpt-rest/messages", json={"value": "more"}).raise_for_status()
        (fresh,) = receive("b")
        acked = http.post(
            f"{base}/ack",
            json={"receipts": [late["receipt"], current["receipt"], fresh["receipt"]]},
        )
        assert acked.json() == {"acked": 2, "stale": [late["receipt"]]}
        # plain ids: the current delivery, whoever holds it
        http.post("/v1/topics/rcpt-rest/messages", json={"value": "third"}).raise_for_status()
        (third,) = receive("b")
        assert http.post(f"{base}/ack", json={"ids": [third["id"]]}).json() == {"acked": 1}


def test_a_batch_of_acks_with_one_stale_records_the_rest_and_says_which(server: Running) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.native) as client:
            await client.create_topic("rcpt-batch", partitions=1)
            await client.put_group("rcpt-batch", "g", mode="shared")
            await client.publish("rcpt-batch", b"job")
            (late,) = await client.receive(
                "rcpt-batch", "g", consumer="a", visibility_timeout=SHORT
            )
            (current,) = await client.receive("rcpt-batch", "g", consumer="b", wait="10s")
            await client.publish("rcpt-batch", b"next")
            (fresh,) = await client.receive("rcpt-batch", "g", consumer="a")
            both = [late.ack(), fresh.ack()]  # one turn of the loop: one ACKR, two tokens
            assert both[0] is both[1]
            with pytest.raises(StaleDeliveryError) as raised:
                await both[0]
            assert raised.value.stale == [late.receipt] and raised.value.count == 1
            assert await current.ack() == 1
            described = await client.describe_group("rcpt-batch", "g")
            assert described["counts"]["acked"] == 2 and described["lag"] == 0

    asyncio.run(scenario())
