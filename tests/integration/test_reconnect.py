"""The client reconnects on its own when the server goes away and comes back."""

from __future__ import annotations

from pathlib import Path

from logq.client import Client
from tests.harness import start_process, stop_process


def test_publish_and_consume_carry_on_across_a_server_restart(tmp_path: Path) -> None:
    server = start_process(tmp_path)
    port = str(server.port)
    with Client(server.native) as client:
        client.create_topic("jobs", partitions=2)
        client.put_group("jobs", "g", visibility_timeout="1s")
        first = client.publish("jobs", b"before")
        with client.consume("jobs", "g", prefetch=10) as consumer:
            message = consumer.next(5)
            assert message is not None and message.id == first.id
            message.ack().result(5)
            stop_process(server, kill=True)
            restarted = start_process(tmp_path, "--port", port)
            # the same Client object: its connection is gone, the next call makes a new one
            second = client.publish("jobs", b"after")
            assert second.offset >= 0
            # the consumer subscribes again by itself and gets the new message
            got = consumer.next(10)
            assert got is not None and got.value == b"after"
            got.ack().result(5)
        assert client.describe_group("jobs", "g")["counts"]["acked"] >= 1
    assert stop_process(restarted) == 0
