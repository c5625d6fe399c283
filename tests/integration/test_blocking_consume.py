"""The blocking client's plain loop against a real server: records handed
out on the caller's thread a chunk of a delivered batch at a time, acks
marked there and handed to the loop thread in bulk, and nothing acked lost
or anything leased kept when the caller leaves early."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import logq
from tests.harness import Running, server_thread


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with server_thread() as running:
        yield running


def counts(client: logq.Client, topic: str) -> dict[str, Any]:
    described = client.describe_group(topic, "g")
    return {"acked": described["counts"]["acked"], "in_flight": described["in_flight"]}


def test_acks_made_while_the_loop_thread_is_busy_share_one_hand_over(server: Running) -> None:
    with logq.Client(server.native) as client:
        client.create_topic("busy", partitions=1)
        client.publish_many("busy", [f"m{n}" for n in range(100)])
        taken = []
        with client.consume("busy", "g", prefetch=200) as consumer:
            for message in consumer:
                taken.append(message)
                if len(taken) == 100:
                    break
            gate = threading.Event()
            client._runner.loop.call_soon_threadsafe(gate.wait)  # the loop thread waits here
            try:
                futures = [message.ack() for message in taken]
                assert len({id(future) for future in futures}) == 1
                assert not futures[0].done()  # nothing left this thread yet
            finally:
                gate.set()
            assert futures[0].result(timeout=10) == 100  # one ACKR of all hundred
        assert counts(client, "busy") == {"acked": 100, "in_flight": 0}


def test_acks_from_several_threads_are_all_confirmed_by_flush(server: Running) -> None:
    with logq.Client(server.native) as client:
        client.create_topic("threads", partitions=3)
        client.publish_many("threads", [f"m{n}" for n in range(3000)])
        with client.consume("threads", "g", prefetch=3000) as consumer:
            taken: list[logq.client.Message] = []
            while len(taken) < 3000:
                got = consumer.next_batch(3000 - len(taken), timeout_s=10)
                assert got, f"stalled after {len(taken)}"
                taken += got
            futures: list[Any] = []

            def ack_every(start: int) -> None:
                futures.extend(message.ack() for message in taken[start::4])

            workers = [threading.Thread(target=ack_every, args=(n,)) for n in range(4)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            client.flush(30)
            assert len(futures) == 3000 and all(f.done() and not f.exception() for f in futures)
        assert counts(client, "threads") == {"acked": 3000, "in_flight": 0}


def test_leaving_the_blocking_loop_gives_back_the_rest_and_keeps_the_acks(
    server: Running,
) -> None:
    with logq.Client(server.native) as client:
        client.create_topic("leave", partitions=1)
        client.publish_many("leave", [b"%d" % n for n in range(50)])
        seen: list[int] = []
        with client.consume("leave", "g", prefetch=100) as consumer:
            for message in consumer:
                assert message.value == b"%d" % message.offset
                message.ack()
                seen.append(message.offset)
                if len(seen) == 7:
                    break
        assert seen == list(range(7))
        # the 43 leased but not handed out were given back at close
        with client.consume("leave", "g", prefetch=100) as consumer:
            rest = consumer.next_batch(100, timeout_s=5)
            assert [m.offset for m in rest] == list(range(7, 50))
            assert {m.attempt for m in rest} == {2}
            for message in rest:
                message.ack()
        assert counts(client, "leave") == {"acked": 50, "in_flight": 0}


def test_the_blocking_loop_stops_at_its_limit_and_auto_acks_what_it_hands_out(
    server: Running,
) -> None:
    with logq.Client(server.native) as client:
        client.create_topic("limited", partitions=1)
        client.publish_many("limited", [b"x"] * 40)
        with client.consume("limited", "g", prefetch=16, limit=13, auto_ack=True) as consumer:
            assert [message.offset for message in consumer] == list(range(13))
            assert consumer.next(timeout_s=0.1) is None  # at its limit
        assert counts(client, "limited") == {"acked": 13, "in_flight": 0}
        with client.consume("limited", "g", prefetch=100) as consumer:
            rest = consumer.next_batch(100, timeout_s=5)
            assert [m.offset for m in rest] == list(range(13, 40))


def test_a_blocking_loop_after_its_client_closed_ends(server: Running) -> None:
    client = logq.Client(server.native)
    with client:
        client.create_topic("after", partitions=1)
        client.publish_many("after", [b"x"] * 5)
        consumer = client.consume("after", "g", prefetch=10)
    assert list(consumer) == []
