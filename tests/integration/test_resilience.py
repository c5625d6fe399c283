"""The client rides out broker restarts and hangs, and fails only the message
that is wrong: real `logq serve` children, killed (SIGKILL), restarted on the
same port, stopped (SIGSTOP) and continued."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from logq.bench.chaos import free_port
from logq.client import AsyncClient, Client
from logq.client.connection import ConnectionLostError, parse_server
from logq.errors import (
    BadArgumentError,
    LimitError,
    LogqError,
    TooBigError,
    TopicNotFoundError,
)
from logq.errors import TimeoutError as LogqTimeoutError
from logq.log.batch import encode_batch
from tests.harness import Running, start_process, stop_process

BIG = b"x" * (5 << 20)  # over the default message_bytes_max of 4 MiB


class Restarts:
    """A server that can be killed and brought back on the same port later."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        # below the ephemeral range: no client elsewhere takes it while the server is down
        self.port = str(free_port())
        self.server = start_process(data_dir, "--port", self.port)
        self._threads: list[threading.Thread] = []

    @property
    def native(self) -> str:
        return self.server.native

    def kill_and_restart_after(self, down_s: float) -> None:
        """SIGKILL now; start again on the same port `down_s` later (in a thread)."""
        stop_process(self.server, kill=True)

        def restart() -> None:
            time.sleep(down_s)
            self.server = start_process(self.data_dir, "--port", self.port)

        thread = threading.Thread(target=restart)
        thread.start()
        self._threads.append(thread)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(60)

    def stop(self) -> None:
        self.join()
        if self.server.process is not None and self.server.process.poll() is None:
            stop_process(self.server)


@pytest.fixture
def restarts(tmp_path: Path) -> Iterator[Restarts]:
    running = Restarts(tmp_path)
    try:
        yield running
    finally:
        running.stop()


class Stopped:
    """SIGSTOP a server for the `with` block, SIGCONT after, whatever happens."""

    def __init__(self, server: Running) -> None:
        assert server.process is not None
        self.process = server.process

    def __enter__(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(signal.SIGCONT)


def test_a_publish_waits_out_a_restart_of_five_seconds(restarts: Restarts) -> None:
    with Client(restarts.native) as client:
        client.create_topic("t", partitions=1)
        client.publish("t", b"before")
        restarts.kill_and_restart_after(5)
        # retried until the delivery timeout (120 s), not a few tries over ~2.4 s
        result = client.publish("t", b"after")
        assert result.offset == 1
        assert [m.value for m in client.peek("t")] == [b"before", b"after"]


def test_producer_futures_in_flight_at_a_kill_are_stored_once_and_in_order(
    restarts: Restarts,
) -> None:
    async def run() -> list[bytes | None]:
        async with AsyncClient(restarts.native) as client:
            await client.create_topic("t", partitions=1)
            producer = client.producer(linger_ms=1, batch_records=10)
            futures = [await producer.send("t", f"{i}".encode(), key="k") for i in range(200)]
            await asyncio.sleep(0.01)  # some batches stored, some in flight, some queued
            restarts.kill_and_restart_after(3)
            futures += [await producer.send("t", f"{i}".encode(), key="k") for i in range(200, 400)]
            results = [await future for future in futures]  # none fails
            assert [r.offset for r in results] == list(range(400))
            await asyncio.to_thread(restarts.join)
            return [m.value for m in await client.peek("t", limit=1000)]

    stored = asyncio.run(run())
    assert stored == [f"{i}".encode() for i in range(400)]  # each once, in order


def test_a_request_resent_after_a_hang_is_recognised_whole(tmp_path: Path) -> None:
    """A request the broker stored while its client gave up on it (timed out,
    connection dropped) comes again: each of its batches must be one the
    broker still remembers (its last five per partition), else the resend is
    refused as too old to answer although it was stored."""
    server = start_process(tmp_path)
    try:

        async def run() -> None:
            async with AsyncClient(server.native, request_timeout_s=1) as client:
                await client.create_topic("t", partitions=1)
                producer = client.producer(linger_ms=0, batch_records=2)
                await producer.send("t", b"first", partition=0)
                await producer.flush()
                with Stopped(server):
                    # queued before the sender runs: 20 batches of 2 for one partition
                    futures = [
                        await producer.send("t", f"{i}".encode(), partition=0) for i in range(40)
                    ]
                    await asyncio.sleep(2.5)  # the request times out, the resends hang
                results = [await future for future in futures]  # none refused
                assert [r.offset for r in results] == list(range(1, 41))
                stored = [m.value for m in await client.peek("t", limit=100)]
                assert stored == [b"first"] + [f"{i}".encode() for i in range(40)]

        asyncio.run(run())
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        stop_process(server)


def test_an_idle_consume_loop_lives_through_a_restart_of_eight_seconds(
    restarts: Restarts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="logq.client")
    with Client(restarts.native) as client:
        client.create_topic("t", partitions=1)
        client.put_group("t", "g")
        with client.consume("t", "g") as consumer:
            assert consumer.next(0.5) is None  # subscribed, nothing flowing
            restarts.kill_and_restart_after(8)
            assert consumer.next(4) is None  # the broker is down: the loop waits
            restarts.join()
            with Client(restarts.native) as other:
                other.publish("t", b"after")
            message = consumer.next(30)
            assert message is not None and message.value == b"after"
            message.ack().result(10)
    text = caplog.text
    assert "cannot subscribe" in text and "subscribed again after" in text


def test_a_consumer_reports_each_outage_to_its_callback(restarts: Restarts) -> None:
    outages: list[BaseException] = []
    with Client(restarts.native) as client:
        client.create_topic("t", partitions=1)
        with client.consume("t", "g", on_outage=outages.append) as consumer:
            assert consumer.next(0.5) is None
            restarts.kill_and_restart_after(2)
            assert consumer.next(1) is None
            restarts.join()
            client.publish("t", b"after")
            message = consumer.next(30)
            assert message is not None and message.value == b"after"
    assert len(outages) == 1 and isinstance(outages[0], (OSError, LogqError))


def test_a_consume_loop_ends_with_an_error_no_retry_can_cure(tmp_path: Path) -> None:
    server = start_process(tmp_path)
    try:
        with (
            Client(server.native) as client,
            client.consume("missing", "g") as consumer,
            pytest.raises(TopicNotFoundError),
        ):
            consumer.next(30)  # not retried: the topic does not exist
    finally:
        stop_process(server)


def test_a_receive_has_its_wait_on_top_of_the_call_timeout(tmp_path: Path) -> None:
    server = start_process(tmp_path)
    try:
        with Client(server.native, request_timeout_s=1) as client:
            client.create_topic("t", partitions=1)
            assert client.receive("t", "g", max=1, wait="1500ms") == []  # no TIMEOUT
    finally:
        stop_process(server)


def test_a_stopped_broker_times_out_every_call_and_the_handshake(tmp_path: Path) -> None:
    server = start_process(tmp_path)
    try:
        with Client(server.native, request_timeout_s=1, delivery_timeout_s=1) as client:
            client.create_topic("t", partitions=1)
            client.put_group("t", "g")
            client.publish("t", b"leased")
            (leased,) = client.receive("t", "g", max=1)
            calls: dict[str, Callable[[], object]] = {
                "publish": lambda: client.publish("t", b"v"),
                "receive": lambda: client.receive("t", "g", max=1),
                "ack": lambda: client.ack("t", "g", [leased.id]),
                "ping": lambda: client.ping(timeout_s=0.5),
            }
            with Stopped(server):
                # on the open connection: no answer, and the connection is dropped
                with pytest.raises(LogqTimeoutError, match=r"no answer from .* to PING within"):
                    client.ping(timeout_s=0.5)
                for name, call in calls.items():
                    started = time.monotonic()
                    with pytest.raises(LogqTimeoutError) as raised:
                        call()
                    assert time.monotonic() - started < 10, name
                    assert raised.value.retriable and isinstance(raised.value, TimeoutError)
                # a new connection: TCP is accepted by the kernel, the handshake hangs
                other = Client(server.native, connect_timeout_s=0.5, request_timeout_s=1.5)
                try:
                    with pytest.raises(LogqTimeoutError):
                        other.ping()
                finally:
                    other.close()
            assert client.ping()  # continued: the same client carries on
            client.ack("t", "g", [leased.id])  # 0 when the one that timed out went through
            assert client.describe_group("t", "g")["counts"]["acked"] == 1
            # the publish that timed out may have been stored once, never twice
            values = [m.value for m in client.peek("t")]
            assert values[0] == b"leased" and values[1:] in ([], [b"v"])
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        stop_process(server)


def test_send_blocks_then_raises_once_the_buffer_is_full(tmp_path: Path) -> None:
    server = start_process(tmp_path)
    try:

        async def run() -> None:
            async with AsyncClient(server.native) as client:
                await client.create_topic("t", partitions=1)
                producer = client.producer(
                    linger_ms=0, buffer_bytes_max=10_000, block_timeout_s=0.5
                )
                with Stopped(server):
                    futures = [await producer.send("t", b"v" * 1000) for _ in range(9)]
                    assert producer.statistics()["buffered_bytes"] > 9000
                    started = time.monotonic()
                    with pytest.raises(LimitError, match="buffer_bytes_max is 10000"):
                        await producer.send("t", b"v" * 1000)
                    assert time.monotonic() - started >= 0.4  # it waited for room first
                assert len([await future for future in futures]) == 9
                assert producer.statistics()["buffered_bytes"] == 0
                await producer.send("t", b"v" * 1000)  # room again

        asyncio.run(run())
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        stop_process(server)


def test_one_oversized_message_fails_alone(tmp_path: Path) -> None:
    server = start_process(tmp_path)
    try:
        with Client(server.native) as client:
            client.create_topic("t", partitions=1)
            queued: list[object] = []
            with client.producer(linger_ms=200) as producer:
                for value in [b"a", b"b", BIG, b"c", b"d", b"e"]:
                    try:  # refused at send, or through its future
                        queued.append(producer.send("t", value))
                    except LogqError as error:
                        queued.append(error)
            outcomes: list[object] = []
            for item in queued:
                try:
                    outcomes.append(item.result(30) if isinstance(item, Future) else item)
                except LogqError as error:
                    outcomes.append(error)
            assert isinstance(outcomes[2], TooBigError)
            assert "message_bytes_max is 4194304" in str(outcomes[2])
            good = outcomes[:2] + outcomes[3:]
            assert not any(isinstance(outcome, Exception) for outcome in good), good
            assert [m.value for m in client.peek("t")] == [b"a", b"b", b"c", b"d", b"e"]
    finally:
        stop_process(server)


def test_a_multi_partition_batch_is_answered_per_partition(tmp_path: Path) -> None:
    server = start_process(tmp_path)
    try:
        with Client(server.native) as client:
            client.create_topic("t", partitions=2)
            # the broker's own answer: a refused batch is an error element, the rest stored
            reply = client.call(
                "PUBBATCH", "t", 0, encode_batch([BIG]), 1, encode_batch([b"s"] * 10)
            )
            assert isinstance(reply[0], Exception) and "TOOBIG" in str(reply[0])
            assert reply[1] == [1, 0, 9, 0]

            # the producer: a message the broker refuses (due past the topic's
            # max_delay) fails alone; the other partition's are stored and resolved
            async def run() -> None:
                async with AsyncClient(server.native) as aclient:
                    producer = aclient.producer(linger_ms=200)
                    late = await producer.send("t", b"late", partition=0, delay="30d")
                    small = [await producer.send("t", b"s", partition=1) for _ in range(10)]
                    await producer.flush()
                    with pytest.raises(BadArgumentError, match="max_delay"):
                        await late
                    assert [(await f).offset for f in small] == list(range(10, 20))

            asyncio.run(run())
            assert client.peek("t", partition=0) == []
            assert len(client.peek("t", partition=1)) == 20  # each once
    finally:
        stop_process(server)


def test_a_refused_batch_fails_alone_among_the_batches_of_its_partition(tmp_path: Path) -> None:
    server = start_process(tmp_path)
    try:

        async def run() -> None:
            async with AsyncClient(server.native) as client:
                await client.create_topic("t", partitions=1)
                producer = client.producer(linger_ms=200)
                # two lanes: two batches of partition 0 in one request, one refused
                late = await producer.send("t", b"late", delay="30d", priority="high")
                fine = [await producer.send("t", f"{i}".encode()) for i in range(5)]
                await producer.flush()
                with pytest.raises(BadArgumentError, match="max_delay"):
                    await late
                assert [(await future).offset for future in fine] == list(range(5))
                stored = [m.value for m in await client.peek("t")]
                assert stored == [f"{i}".encode() for i in range(5)]

        asyncio.run(run())
    finally:
        stop_process(server)


def test_every_client_error_is_a_logq_error() -> None:
    assert issubclass(ConnectionLostError, LogqError) and ConnectionLostError.retriable
    assert issubclass(LogqTimeoutError, LogqError) and LogqTimeoutError.retriable
    assert issubclass(LogqTimeoutError, TimeoutError)
    with pytest.raises(BadArgumentError, match="expected host:port"):
        Client("no-port")
    with pytest.raises(BadArgumentError, match="not a number"):
        parse_server("host:port")
    assert parse_server(":7071") == ("127.0.0.1", 7071)


def test_an_unreachable_broker_fails_a_call_in_its_timeout_with_a_logq_error(
    tmp_path: Path,
) -> None:
    server = start_process(tmp_path)
    address = server.native
    stop_process(server)
    client = Client(address, request_timeout_s=1)
    try:
        with pytest.raises(ConnectionLostError):
            client.ping()
    finally:
        client.close()
