"""Dead-letter operations through every interface: list, redrive, purge.

Redrive hands a message back to the group that dead-lettered it with its
attempts reset; the topic's other groups, which handled it, never see it
again. All of it survives a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from click.testing import CliRunner

import logq
from logq.cli.main import cli
from logq.client import Client
from tests.harness import Running, server_thread


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with server_thread() as running:
        yield running


def dead_letter(client: Client, topic: str, values: list[bytes]) -> list[str]:
    """Publish; group `other` acks everything; group `billing` rejects everything."""
    client.create_topic(topic, partitions=2)
    client.publish_many(topic, values)
    for message in client.receive(topic, "other", max=100, wait="1s"):
        message.ack().result(5)
    rejected = client.receive(topic, "billing", max=100, wait="1s")
    for message in rejected:
        message.reject("card declined")
    return [m.id for m in rejected]


def test_redrive_hands_back_to_the_dead_lettering_group_only(server: Running) -> None:
    with Client(server.native) as client:
        origin_ids = dead_letter(client, "pay", [b"a", b"b", b"c"])
        letters = client.dlq("pay")
        assert sorted(m.headers["logq-origin-id"] for m in letters) == sorted(origin_ids)
        first = letters[0]
        assert client.redrive("pay", [first.id]) == 1
        assert client.redrive("pay", [first.id]) == 0  # already gone from the DLQ
        (again,) = client.receive("pay", "billing", max=10, wait="1s")
        assert again.id == first.headers["logq-origin-id"]
        assert again.attempt == 1  # attempts start over
        again.ack().result(5)
        assert client.receive("pay", "other", max=10, wait="200ms") == []
        remaining = client.dlq("pay")
        assert first.id not in {m.id for m in remaining} and len(remaining) == 2
        assert client.redrive("pay") == 2
        assert client.dlq("pay") == []
        back = client.receive("pay", "billing", max=10, wait="1s")
        assert len(back) == 2
        for message in back:
            message.reject("still declined")
        assert len(client.dlq("pay")) == 2
        assert client.purge_dlq("pay") == 2
        assert client.dlq("pay") == []
        assert client.describe_group("pay", "billing")["counts"]["redriven"] == 3
        assert "~dlq" not in {g["group"] for g in client.list_groups()}


def test_rest_cli_and_native_redrive_and_purge(server: Running) -> None:
    with Client(server.native) as client:
        dead_letter(client, "ship", [b"x", b"y"])
    http = httpx.Client(base_url=server.http)
    listed = http.get("/v1/topics/ship/dlq").json()["messages"]
    assert len(listed) == 2
    one = listed[0]["id"]
    assert http.post("/v1/topics/ship/dlq/redrive", json={"ids": [one]}).json() == {"redriven": 1}
    assert http.post("/v1/topics/ship/dlq/redrive", json={"ids": ["ship:0:0"]}).status_code == 400
    runner = CliRunner()
    out = runner.invoke(cli, ["dlq", "list", "ship", "--server", server.native])
    assert out.exit_code == 0 and "card declined" in out.output and "ship.dlq" in out.output
    out = runner.invoke(cli, ["dlq", "redrive", "ship", "--all", "--server", server.native])
    assert out.exit_code == 0 and "redriven 1 message of ship" in out.output
    with Client(server.native) as client:
        for message in client.receive("ship", "billing", max=10, wait="1s"):
            message.reject("again")
    r: Any = redis.Redis(port=server.port)
    assert r.execute_command("REDRIVE", "ship") == 2
    with Client(server.native) as client:
        for message in client.receive("ship", "billing", max=10, wait="1s"):
            message.reject("and again")
    out = runner.invoke(cli, ["dlq", "purge", "ship", "--yes", "--server", server.native])
    assert out.exit_code == 0 and "purged 2 dead letters of ship" in out.output
    assert http.delete("/v1/topics/ship/dlq").json() == {"purged": 0}
    assert http.get("/v1/topics/ship/dlq").json() == {"messages": []}
    assert r.execute_command("PURGE", "ship") == 0


def test_redrive_and_purge_survive_a_restart(tmp_path: Path) -> None:
    with logq.Broker(tmp_path) as broker:
        client = broker.client()
        dead_letter(client, "jobs", [b"1", b"2", b"3"])
        (letter, *_) = client.dlq("jobs")
        client.redrive("jobs", [letter.id])
    with logq.Broker(tmp_path) as broker:
        client = broker.client()
        assert len(client.dlq("jobs")) == 2
        (back,) = client.receive("jobs", "billing", max=10, wait="1s")
        assert back.id == letter.headers["logq-origin-id"] and back.attempt == 1
        assert client.purge_dlq("jobs") == 2
    with logq.Broker(tmp_path) as broker:
        assert broker.client().dlq("jobs") == []


def test_requeue_and_purging_chosen_dead_letters_through_every_interface(server: Running) -> None:
    with Client(server.native) as client:
        ids = dead_letter(client, "refunds", [b"r1", b"r2", b"r3", b"r4"])
        letters = {m.headers["logq-origin-id"]: m.id for m in client.dlq("refunds")}
        assert sorted(letters) == sorted(ids)
        first, second, third, fourth = (letters[i] for i in sorted(ids))
        # native: requeue one (a new message, seen by every group), purge one
        assert client.requeue_dlq("refunds", [first]) == 1
        assert client.requeue_dlq("refunds", [first]) == 0  # already out of the DLQ
        assert client.purge_dlq("refunds", [second]) == 1
        (again,) = client.receive("refunds", "other", max=10, wait="1s")
        assert again.attempt == 1 and "logq-origin-id" not in again.headers
        again.ack().result(5)
        # REST: requeue another, purge the last by id
        requeued = httpx.post(f"{server.http}/v1/topics/refunds/dlq/requeue", json={"ids": [third]})
        assert requeued.json() == {"requeued": 1}
        purged = httpx.post(f"{server.http}/v1/topics/refunds/dlq/purge", json={"ids": [fourth]})
        assert purged.json() == {"purged": 1}
        assert client.dlq("refunds") == []
        # CLI
        more = dead_letter(client, "refunds2", [b"x", b"y"])
        assert len(more) == 2
        runner = CliRunner()
        done = runner.invoke(
            cli, ["dlq", "requeue", "refunds2", "--all", "--server", server.native]
        )
        assert done.exit_code == 0 and "requeued 2 messages of refunds2" in done.output
        assert client.dlq("refunds2") == []
