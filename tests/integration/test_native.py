"""The native protocol end to end: a real server on a free port, reached by
the logq client, by raw sockets, and by redis-py (a RESP library logq did not
write)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from logq.client import AsyncClient, Client
from logq.errors import BadArgumentError, BadBatchError, TooBigError, TopicNotFoundError
from logq.protocol import NEED_MORE, Parser, Push, encode_command
from tests.harness import Running, server_thread


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with server_thread() as running:
        yield running


@pytest.fixture
def client(server: Running) -> Iterator[Client]:
    with Client(server.native) as connected:
        yield connected


def topic_name(request: pytest.FixtureRequest) -> str:
    name: str = request.node.name
    return name.replace("[", "-").replace("]", "")[:60]


def test_a_resp_library_we_did_not_write_can_create_publish_receive_and_ack(
    server: Running, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    r: Any = redis.Redis(port=server.port)  # redis-py is not fully typed
    created = r.execute_command("CREATE", name, "PARTITIONS", "2")
    assert b"partitions" in created or "partitions" in created
    message_id = r.execute_command("PUB", name, '{"order_id": 123}', "KEY", "order-123")
    assert message_id.startswith(name.encode() + b":")
    messages = r.execute_command("RECV", name, "workers", "alice", "COUNT", "10")
    assert len(messages) == 1
    fields = messages[0]
    fields = (
        fields if isinstance(fields, dict) else dict(zip(fields[::2], fields[1::2], strict=True))
    )
    assert fields[b"value"] == b'{"order_id": 123}'
    assert fields[b"attempt"] == 1
    assert r.execute_command("ACK", name, "workers", message_id) == 1
    assert r.execute_command("RECV", name, "workers", "alice", "COUNT", "10") == []
    with pytest.raises(redis.ResponseError, match=r"^NOTOPIC"):
        r.execute_command("PUB", "no-such-topic", "x")
    with pytest.raises(redis.ResponseError, match=r"^UNKNOWN"):
        r.execute_command("FLY", "away")
    # pipelined: many commands in one write, replies in order
    pipe = r.pipeline(transaction=False)
    for index in range(50):
        pipe.execute_command("PUB", name, f"m{index}", "PARTITION", "0")
    ids = pipe.execute()
    offsets = [int(value.rsplit(b":", 1)[1]) for value in ids]
    assert offsets == sorted(offsets) and len(set(offsets)) == 50


def test_publish_receive_ack_through_the_client(
    client: Client, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    client.create_topic(name, partitions=3)
    sent = client.publish_many(name, [f"message {i}".encode() for i in range(30)])
    assert len({result.id for result in sent}) == 30
    received = client.receive(name, "g", max=100, wait="1s")
    assert sorted(m.value or b"" for m in received) == sorted(
        f"message {i}".encode() for i in range(30)
    )
    assert all(m.attempt == 1 for m in received)
    for message in received:
        message.ack()
    client.describe_group(name, "g")  # one more round trip: acks went first
    assert client.receive(name, "g", max=100) == []
    assert client.describe_group(name, "g")["counts"]["acked"] == 30


def test_nack_and_lease_expiry_redeliver_with_the_next_attempt(
    client: Client, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    client.create_topic(name, partitions=1)
    client.publish(name, b"job")
    (first,) = client.receive(name, "g", max=1)
    first.nack()
    (second,) = client.receive(name, "g", max=1, wait="2s", visibility_timeout="100ms")
    assert (second.id, second.attempt) == (first.id, 2)
    # the lease lapses: the long poll returns when the message is leasable again
    (third,) = client.receive(name, "g", max=1, wait="5s", visibility_timeout="100ms")
    assert (third.id, third.attempt) == (first.id, 3)
    (fourth,) = client.receive(name, "g", max=1, wait="5s")
    assert (fourth.id, fourth.attempt) == (first.id, 4)
    fourth.extend("30s")
    fourth.ack().result(5)


def test_after_max_deliveries_the_message_is_dead_lettered(
    client: Client, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    client.create_topic(name, partitions=1, max_deliveries=2)
    sent = client.publish(name, b"poison")
    for _ in range(2):
        (message,) = client.receive(name, "g", max=1, wait="2s")
        message.nack()
    assert client.receive(name, "g", max=1, wait="200ms") == []
    (dead,) = client.dlq(name)
    assert dead.topic == f"{name}.dlq"
    assert dead.value == b"poison"
    assert dead.headers["logq-origin-id"] == sent.id
    assert dead.headers["logq-group"] == "g"
    assert dead.headers["logq-attempts"] == "2"
    # reject sends straight there with a reason
    other = client.publish(name, b"bad")
    (message,) = client.receive(name, "g", max=1, wait="2s")
    assert message.id == other.id
    message.reject("schema mismatch")
    reasons = {m.headers["logq-origin-id"]: m.headers["logq-reason"] for m in client.dlq(name)}
    assert reasons[other.id] == "schema mismatch"


def test_ordered_groups_keep_partition_order_and_groups_fan_out(
    client: Client, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    client.create_topic(name, partitions=3)
    client.publish_many(name, [{"value": f"{i}", "key": f"k{i % 7}"} for i in range(300)])
    for group in ("a", "b", "c"):
        client.put_group(name, group, mode="ordered")
        seen: dict[int, list[int]] = {}
        with client.consume(name, group, prefetch=50) as consumer:
            for _ in range(300):
                message = consumer.next(5)
                assert message is not None
                seen.setdefault(message.partition, []).append(message.offset)
                message.ack()
            assert consumer.next(0.2) is None
        assert sum(len(offsets) for offsets in seen.values()) == 300
        for offsets in seen.values():
            assert offsets == sorted(offsets) == list(range(len(offsets)))


def test_a_shared_group_splits_messages_between_consumers(
    client: Client, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    client.create_topic(name, partitions=2)
    client.put_group(name, "workers", mode="shared")
    client.publish_many(name, [f"{i}".encode() for i in range(200)])
    alice = client.receive(name, "workers", consumer="alice", max=120, visibility_timeout="30s")
    bob = client.receive(name, "workers", consumer="bob", max=120, visibility_timeout="30s")
    assert not {m.id for m in alice} & {m.id for m in bob}
    assert len(alice) + len(bob) == 200
    assert alice and bob


def test_pushed_deliveries_respect_credit(server: Running, request: pytest.FixtureRequest) -> None:
    name = topic_name(request)
    with Client(server.native) as client:
        client.create_topic(name, partitions=1)
        client.publish_many(name, [b"x"] * 20)
    sock = socket.create_connection(("127.0.0.1", server.port))
    parser = Parser()

    def read_frames(count: int) -> list[object]:
        frames: list[object] = []
        while len(frames) < count:
            while (value := parser.next_value()) is not NEED_MORE:
                frames.append(value)
            if len(frames) >= count:
                break
            parser.feed(sock.recv(65536))
        return frames

    sock.sendall(
        encode_command(["HELLO", "3"]) + encode_command(["CONSUME", name, "g", "c1", "CREDIT", "5"])
    )
    hello, ok, push = read_frames(3)
    assert isinstance(hello, dict) and ok == "OK"
    assert isinstance(push, Push) and push[0] == b"delivery"
    start, end = push[3], push[4]
    assert (start, end) == (0, 5)  # exactly the credit, no more
    sock.sendall(encode_command(["PING"]))
    (pong,) = read_frames(1)
    assert pong == "PONG"  # nothing else was pushed without credit
    sock.sendall(encode_command(["CREDIT", "100"]))
    ok, push = read_frames(2)
    assert ok == "OK" and isinstance(push, Push) and (push[3], push[4]) == (5, 20)
    sock.sendall(encode_command(["STOP"]))
    assert read_frames(1) == ["OK"]
    sock.close()


def test_garbage_bytes_close_only_that_connection(server: Running, client: Client) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"*1\r\n$999999999999\r\n")
    reply = sock.recv(1000)
    assert reply.startswith(b"-PROTO ")
    assert sock.recv(1000) == b""  # closed
    sock.close()
    assert client.ping()


def test_bad_input_gets_a_code_and_changes_nothing(
    client: Client, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    client.create_topic(name, partitions=1)
    with pytest.raises(TopicNotFoundError):
        client.publish("missing-topic", b"x")
    with pytest.raises(BadArgumentError):
        client.call("PUB", name, "x", "PARTITION", "seven")
    with pytest.raises(BadArgumentError):
        client.call("RECV", name, "g", "c", "COUNT", "0")
    with pytest.raises(TooBigError):
        client.publish(name, b"x" * (9 << 20))  # over the 8 MiB batch limit
    with pytest.raises(BadArgumentError):
        client.create_topic("bad name!")
    with pytest.raises(BadBatchError):
        client.call(
            "PUBBATCH", name, "0", b"not a batch at all, and long enough to look like one" * 3
        )
    assert client.describe_topic(name)["messages"] == 0
    assert client.ping()


def test_async_client_producer_linger_and_futures(
    server: Running, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)

    async def run() -> list[int]:
        async with AsyncClient(server.native) as client:
            await client.create_topic(name, partitions=2)
            producer = client.producer(linger_ms=20, batch_records=100)
            futures = [await producer.send(name, f"{i}", key=f"k{i % 5}") for i in range(250)]
            await producer.flush()
            results = [await future for future in futures]
            messages = await client.peek(name, partition=results[0].partition, offset=0, limit=1000)
            return [len(results), len({r.id for r in results}), len(messages)]

    total, unique, _ = asyncio.run(run())
    assert total == unique == 250


def test_many_connections_are_served_at_once(
    server: Running, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    with Client(server.native) as client:
        client.create_topic(name, partitions=4)
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            with Client(server.native) as own:
                for n in range(20):
                    own.publish(name, f"{index}-{n}")
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures
    with Client(server.native) as client:
        assert client.describe_topic(name)["messages"] == 160


def test_closed_connections_are_no_longer_counted(server: Running, client: Client) -> None:
    def native() -> int:
        return int(client.stats()["native_connections"])

    before = native()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(encode_command(["PING"]))
            assert sock.recv(100) == b"+PONG\r\n"
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(100) == b""  # the server closes its side after the last reply
    deadline = time.monotonic() + 10
    while native() != before and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for the server's close callbacks, not for time
    assert native() == before


def test_backoff_set_through_the_client_delays_redelivery(
    client: Client, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    topic = client.create_topic(name, partitions=1, backoff={"initial": "300ms", "multiplier": 2})
    assert topic["config"]["backoff"]["initial_ms"] == 300
    group = client.put_group(name, "g", backoff={"initial": "200ms", "jitter": 0.0})
    assert group["settings"]["backoff"]["initial_ms"] == 200
    client.publish(name, b"retry me")
    (first,) = client.receive(name, "g", max=1)
    started = time.monotonic()
    first.nack()
    assert client.receive(name, "g", max=1) == []  # not yet: it waits its backoff
    (again,) = client.receive(name, "g", max=1, wait="5s")
    assert again.attempt == 2
    assert time.monotonic() - started >= 0.2
    assert client.describe_group(name, "g")["counts"]["backoff_waits"] == 1


def test_expired_messages_are_never_delivered(
    server: Running, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    long_ago = int(time.time() * 1000) - 60_000

    async def run() -> None:
        async with AsyncClient(server.native) as client:
            await client.create_topic(name, partitions=1, ttl="30s", ttl_dead_letter=True)
            producer = client.producer(linger_ms=0)
            sent = [
                await producer.send(name, b"stale", timestamp_ms=long_ago),  # past the topic TTL
                await producer.send(name, b"brief", ttl="10s", timestamp_ms=long_ago + 45_000),
                await producer.send(name, b"fresh", ttl="1h"),
            ]
            await producer.flush()
            ids = [(await future).id for future in sent]
            received = await client.receive(name, "g", max=10)
            assert [m.value for m in received] == [b"fresh"]
            letters = await client.dlq(name)
            assert sorted(m.headers["logq-origin-id"] for m in letters) == sorted(ids[:2])
            assert {m.headers["logq-reason"] for m in letters} == {"expired (ttl)"}
            assert (await client.describe_group(name, "g"))["counts"]["ttl_expired"] == 2

    asyncio.run(run())


def test_delayed_messages_arrive_at_their_time_through_every_interface(
    server: Running, client: Client, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    client.create_topic(name, partitions=1)
    started = time.time()
    client.publish(name, b"client", delay="300ms")
    r: Any = redis.Redis(port=server.port)
    r.execute_command("PUB", name, "native", "DELAY", "300ms")
    at = int((started + 0.3) * 1000)
    http = httpx.post(
        f"{server.http}/v1/topics/{name}/messages", json={"value": "rest", "deliver_at": at}
    )
    assert http.status_code == 200, http.text
    early = client.receive(name, "g", max=10)
    if time.time() < started + 0.3:  # answered before any was due: none may come
        assert early == []
    got: list[bytes] = [m.value or b"" for m in early]
    while len(got) < 3:
        batch = client.receive(name, "g", max=10, wait="5s")
        assert batch, "the delayed messages did not come"
        got += [m.value or b"" for m in batch]
        assert time.time() >= started + 0.3 - 0.005  # never early (clock granularity)
    assert sorted(got) == sorted([b"client", b"native", b'"rest"'])
    assert time.time() - started < 3


def test_a_dedup_id_is_stored_once_through_every_interface(
    server: Running, client: Client, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    client.create_topic(name, partitions=3, dedup_window="5m")
    first = client.publish(name, b"charge", dedup_id="invoice-7")
    assert client.publish(name, b"charge", dedup_id="invoice-7", partition=1).id == first.id
    with client.producer(linger_ms=5) as producer:
        futures = [producer.send(name, b"charge", dedup_id="invoice-7") for _ in range(5)]
        futures.append(producer.send(name, b"other"))
    assert {f.result(5).id for f in futures[:5]} == {first.id}
    r: Any = redis.Redis(port=server.port)
    assert r.execute_command("PUB", name, "charge", "DEDUP", "invoice-7").decode() == first.id
    body = {"value": "charge", "dedup_id": "invoice-7"}
    rest = httpx.post(f"{server.http}/v1/topics/{name}/messages", json=body).json()
    assert rest["results"][0]["id"] == first.id
    assert client.describe_topic(name)["messages"] == 2  # the charge once, and "other"


def test_a_shared_group_takes_high_before_normal(
    client: Client, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    client.create_topic(name, partitions=1)
    client.put_group(name, "s", mode="shared", starvation_share=0.2)
    client.publish_many(name, [f"n{i}".encode() for i in range(20)])
    client.publish_many(name, [{"value": f"h{i}", "priority": "high"} for i in range(3)])
    received = client.receive(name, "s", max=10)
    assert [m.value for m in received[:3]] == [b"h0", b"h1", b"h2"]
    assert {m.priority for m in received[:3]} == {"high"}


def test_single_message_receives_of_a_shared_group_take_high_first(
    client: Client, request: pytest.FixtureRequest
) -> None:
    name = topic_name(request)
    client.create_topic(name, partitions=1)
    client.put_group(name, "s", mode="shared")
    client.publish_many(name, [{"value": f"low{i}", "priority": "low"} for i in range(50)])
    client.publish_many(name, [{"value": f"high{i}", "priority": "high"} for i in range(20)])
    values = []
    for _ in range(11):
        (message,) = client.receive(name, "s", max=1)
        message.ack()
        values.append(message.value)
    # ten high ones first; then the guard's bound has passed and low gets one
    assert values == [f"high{i}".encode() for i in range(10)] + [b"low0"]
