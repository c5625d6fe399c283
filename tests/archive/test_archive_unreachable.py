"""Reads of archived offsets while the S3 store (moto's server, behind a
relay the test can cut) is out of reach: the broker answers UNAVAILABLE
(retriable) over the native protocol and REST (503), whether the store
refuses connections or takes them and never answers; reads of local data go
on; the Python client tries the call again and gets the messages once the
store is back. An object the manifest names that is gone from the store is
CORRUPT (lost until put back), which the client does not retry."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from logq.archive.names import parse_segment_key
from logq.archive.store import ArchiveStore
from logq.client import Client
from logq.client.connection import Connection
from logq.errors import CorruptError, LogqError, UnavailableError
from tests.archive.conftest import s3_store
from tests.archive.served import LOCAL_BYTES, publish, value, wait_archived
from tests.archive.store_link import StoreLink
from tests.harness import Running, start_process, stop_process

BUCKET = "unreachable"
READ_TIMEOUT = "1s"  # archive.remoteReadTimeout: how long a hung store holds a read


@pytest.fixture
def link(s3_endpoint: str) -> Iterator[StoreLink]:
    request = urllib.request.Request(f"{s3_endpoint}/{BUCKET}", method="PUT")
    with urllib.request.urlopen(request, timeout=10):
        pass
    relay = StoreLink(s3_endpoint)
    try:
        yield relay
    finally:
        relay.close()


def _serve(tmp_path: Path, endpoint: str) -> Running:
    config = tmp_path / "logq.yaml"
    config.write_text(
        "broker: {segmentBytes: 65536}\n"
        f"archive: {{url: 's3://{BUCKET}/logq', endpoint: '{endpoint}', region: us-east-1,"
        f" tickMs: 100, remoteReadTimeout: {READ_TIMEOUT}}}\n"
    )
    env = {
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        "AWS_REGION": "us-east-1",
    }
    return start_process(tmp_path / "data", "--config", str(config), env=env)


def _native_error(address: str, *command: str | int) -> LogqError:
    """The error the broker answers to one command (no client retries)."""

    async def call() -> LogqError:
        host, port = address.rsplit(":", 1)
        connection = await Connection.open(host, int(port))
        try:
            await connection.call(*command)
        except LogqError as error:
            return error
        finally:
            connection.close()
        raise AssertionError(f"{command} succeeded")

    return asyncio.run(call())


def _rest_error(url: str) -> tuple[int, dict[str, str]]:
    try:
        urllib.request.urlopen(url, timeout=30).close()
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())["error"]
    raise AssertionError(f"{url} succeeded")


def _segments(store: ArchiveStore) -> dict[int, str]:
    """The archived segment objects of orders/0 in the store, by base offset."""

    async def listing() -> list[str]:
        return [info.key async for info in store.list("topics/orders/0")]

    found: dict[int, str] = {}
    for key in asyncio.run(listing()):
        name = parse_segment_key(key)
        if name is not None:
            found[name.base_offset] = key
    return found


def _values(first: int, count: int) -> list[bytes]:
    return [value(n) for n in range(first, first + count)]


def test_archived_reads_answer_unavailable_while_the_store_is_away(
    tmp_path: Path, link: StoreLink, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = s3_store(s3_endpoint, monkeypatch, bucket=BUCKET, prefix="logq")
    running = _serve(tmp_path, link.endpoint)
    try:
        with Client(running.native) as client:
            client.create_topic(
                "orders", partitions=1, archive=True, local_retention_bytes=LOCAL_BYTES
            )
            publish(client, "orders", 0, 1200)
            local_from = wait_archived(client, "orders")["local_from"]
            bases = sorted(base for base in _segments(store) if base < local_from)
            assert len(bases) >= 4 and bases[0] == 0, (bases, local_from)  # archived only
            peek = ("PEEK", "orders", "PARTITION", 0, "LIMIT", 10, "OFFSET")
            rest = f"{running.http}/v1/topics/orders/messages?partition=0&limit=10&offset="

            link.cut()  # refused: UNAVAILABLE at once, over both protocols
            error = _native_error(running.native, *peek, 0)
            assert isinstance(error, UnavailableError) and error.retriable, error
            status, body = _rest_error(rest + "0")
            assert (status, body["code"]) == (503, "UNAVAILABLE"), body
            local = client.peek("orders", partition=0, offset=local_from, limit=50)
            assert [m.value for m in local] == _values(local_from, 50)

            got: list[list[bytes | None]] = []
            with Client(running.native, request_timeout_s=60) as patient:
                reader = threading.Thread(
                    target=lambda: got.append(
                        [m.value for m in patient.peek("orders", partition=0, offset=0, limit=10)]
                    )
                )
                reader.start()
                time.sleep(2)
                assert reader.is_alive()  # trying again, the store still away
                link.restore()
                reader.join(60)
            assert got == [_values(0, 10)]

            link.hang()  # taken and never answered: UNAVAILABLE after remoteReadTimeout
            error = _native_error(running.native, *peek, bases[1])
            assert isinstance(error, UnavailableError), error
            assert "no answer within 1 s" in error.message, error.message
            status, body = _rest_error(rest + str(bases[2]))
            assert (status, body["code"]) == (503, "UNAVAILABLE"), body
            link.restore()
            assert client.archive_status("orders")["unavailable_reads"] >= 4
            found = client.peek("orders", partition=0, offset=bases[1], limit=10)
            assert [m.value for m in found] == _values(bases[1], 10)

            gone = bases[3]
            asyncio.run(store.delete(_segments(store)[gone]))
            began = time.monotonic()
            with pytest.raises(CorruptError, match="missing"):  # lost, not retried
                client.peek("orders", partition=0, offset=gone, limit=10)
            assert time.monotonic() - began < 10
            assert _values(local_from, 5) == [
                m.value for m in client.peek("orders", partition=0, offset=local_from, limit=5)
            ]
    finally:
        stop_process(running)
