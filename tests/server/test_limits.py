"""Every named limit is configurable, enforced before the request is stored,
and refused with an error that gives the value and the limit (docs/operations.md)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from logq.client import Client
from logq.errors import BadArgumentError, TooBigError
from logq.log import encode_batch
from logq.protocol.encoder import encode_command
from tests.harness import Running, server_process

CONFIG = """
limits:
  messageBytes: 1000
  keyBytes: 100
  headerCount: 3
  headerBytes: 200
  topicNameLength: 20
  partitionsPerTopic: 4
  frameBytes: 65536
  httpPublishBodyBytes: 4096
  inFlightPerPartition: 5
  eventStreams: 2
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("limits")
    config = directory / "logq.yaml"
    config.write_text(CONFIG)
    with server_process(directory / "data", "--config", str(config)) as running:
        with Client(running.native) as client:
            client.create_topic("t", partitions=1)
        yield running


def test_message_key_and_header_limits(limited: Running) -> None:
    with Client(limited.native) as client:
        with pytest.raises(TooBigError, match="1001 bytes, the limit message_bytes_max is 1000"):
            client.publish("t", b"v" * 1001)
        with pytest.raises(TooBigError, match="key of 101 bytes, the limit key_bytes_max is 100"):
            client.publish("t", b"v", key=b"k" * 101)
        with pytest.raises(TooBigError, match="4 headers, the limit header_count_max is 3"):
            client.publish("t", b"v", headers={f"h{i}": "x" for i in range(4)})
        with pytest.raises(TooBigError, match="the limit header_bytes_max is 200"):
            client.publish("t", b"v", headers={"h": "x" * 300})
        assert client.publish("t", b"v", key=b"k" * 100).offset == 0  # at the limit: fine


def test_a_producer_built_batch_is_checked_record_by_record(limited: Running) -> None:
    host, port = limited.native.rsplit(":", 1)
    cases = [
        (encode_batch([b"ok", b"v" * 1001]), b"record 1 has key and value of 1001 bytes"),
        (encode_batch([b"ok"], keys=[b"k" * 101]), b"record 0 has a key of 101 bytes"),
        (
            encode_batch([b"a", b"b"], headers=[{}, {f"h{i}": "" for i in range(4)}]),
            b"record 1 has 4 headers, the limit header_count_max is 3",
        ),
        (
            encode_batch([b"ok"], headers=[{"h": "x" * 300}]),
            b"record 0 has headers of 309 bytes, the limit header_bytes_max is 200",
        ),
    ]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for batch, expected in cases:
            sock.sendall(encode_command(["PUBBATCH", "t", 0, batch]))
            reply = sock.recv(4096)
            assert reply.startswith(b"-TOOBIG ") and expected in reply, reply
    with Client(limited.native) as client:
        assert [m.value for m in client.peek("t")] == [b"v"]  # nothing else was stored


def test_topic_name_and_partition_limits(limited: Running) -> None:
    with Client(limited.native) as client:
        with pytest.raises(BadArgumentError, match="21 characters, the limit"):
            client.create_topic("x" * 21)
        with pytest.raises(
            TooBigError, match="5 partitions, the limit partitions_per_topic_max is 4"
        ):
            client.create_topic("wide", partitions=5)
        with pytest.raises(TooBigError, match="the limit partitions_per_topic_max is 4"):
            client.alter_topic("t", partitions=5)


def test_in_flight_default_comes_from_the_limits(limited: Running) -> None:
    with Client(limited.native) as client:
        client.create_topic("inflight", partitions=1)
        client.publish_many("inflight", [b"m"] * 10)
        assert len(client.receive("inflight", "g", max=10, wait="1s")) == 5


def test_frame_and_http_body_limits(limited: Running) -> None:
    host, port = limited.native.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"*3\r\n$3\r\nPUB\r\n$1\r\nt\r\n$70000\r\n")
        reply = sock.recv(4096)
        assert reply.startswith(b"-PROTO bulk string of 70000 bytes, the limit is 65536"), reply
    body = {"messages": [{"value": "x" * 900} for _ in range(5)]}
    refused = httpx.post(f"{limited.http}/v1/topics/t/messages", json=body)
    assert refused.status_code == 413 and "4096" in refused.json()["error"]["message"]


def test_limits_config_names_the_bad_key(tmp_path: Path) -> None:
    from logq.server.config import build_config  # noqa: PLC0415
    from logq.server.config_parsing import ConfigError  # noqa: PLC0415

    path = tmp_path / "bad.yaml"
    path.write_text("limits: {partitionsPerTopic: 5000}\n")
    with pytest.raises(ConfigError, match=r"limits\.partitionsPerTopic"):
        build_config(config_file=path, environ={})


def _until_a_stream_is_served(http: httpx.Client, url: str) -> None:
    """Closed streams are counted down as the server notices them: wait for that."""
    for _ in range(200):
        with http.stream("GET", url) as again:
            if again.status_code == 200:
                assert next(iter(again.iter_lines())).startswith("data: {")
                return
        time.sleep(0.02)
    raise AssertionError("no event stream was served after the others closed")


def test_dashboard_event_streams_are_bounded(limited: Running) -> None:
    url = f"{limited.http}/v1/events"

    # a burst, as dashboards reconnecting after a restart: two at most
    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:

            async def open_one() -> int:
                async with client.stream("GET", url) as response:
                    if response.status_code == 200:
                        await asyncio.sleep(0.5)  # held open while the others ask
                    return response.status_code

            return list(await asyncio.gather(*(open_one() for _ in range(10))))

    codes = asyncio.run(burst())
    assert sorted(codes) == [200, 200] + [429] * 8, codes
    with httpx.Client(timeout=10) as http:
        _until_a_stream_is_served(http, url)
        _until_a_stream_is_served(http, url)
        with http.stream("GET", url) as first, http.stream("GET", url) as second:
            # keep the line iterators: dropping one closes its stream
            lines = [stream.iter_lines() for stream in (first, second)]
            for line in lines:
                assert next(line).startswith("data: {")
            refused = http.get(url)
            assert refused.status_code == 429
            assert refused.json()["error"]["message"] == (
                "2 event streams open, the limit eventStreams is 2"
            )
        _until_a_stream_is_served(http, url)
