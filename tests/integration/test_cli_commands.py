"""The `logq` command against a real server: readable output, --json, errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from logq.cli.main import cli
from logq.client import Client
from tests.harness import Running, server_thread


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with server_thread() as running:
        yield running


def run(server: Running, *args: str, input: str | None = None, ok: bool = True) -> str:
    result = CliRunner().invoke(cli, [*args, "--server", server.native], input=input)
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result.output


def test_topics_produce_consume_groups_stats(server: Running) -> None:
    assert "created topic orders with 3 partitions" in run(
        server, "topics", "create", "orders", "--partitions", "3"
    )
    assert "orders" in run(server, "topics", "list")
    listed = json.loads(run(server, "topics", "list", "--json"))
    assert [t["name"] for t in listed] == ["orders"]
    produced = run(
        server,
        "produce",
        "orders",
        '{"order_id": 123}',
        "--key",
        "order-123",
        "--header",
        "source=cli",
    )
    message_id = produced.strip()
    assert message_id.startswith("orders:")
    out = run(server, "produce", "orders", "--key", "k", input="one\ntwo\nthree\n")
    assert "published 3 messages to orders" in out

    replay = run(server, "consume", "orders", "--from-offset", "0", "--json")
    values = [json.loads(line)["value"] for line in replay.splitlines()]
    assert sorted(values) == sorted(['{"order_id": 123}', "one", "two", "three"])

    first = run(server, "consume", "orders", "--group", "cli", "--max", "2")
    assert len(first.splitlines()) == 2
    rest = run(server, "consume", "orders", "--group", "cli")
    assert len(rest.splitlines()) == 2  # the first two were acked: not again
    assert run(server, "consume", "orders", "--group", "cli") == ""

    unacked = run(server, "consume", "orders", "--group", "peekers", "--no-ack", "--json")
    assert len(unacked.splitlines()) == 4
    info = json.loads(run(server, "groups", "describe", "orders", "peekers", "--json"))
    assert info["in_flight"] == 4

    groups = json.loads(run(server, "groups", "list", "--json"))
    assert {g["group"] for g in groups} >= {"cli", "peekers"}
    assert "cli" in run(server, "groups", "list")
    stats = json.loads(run(server, "stats", "--json"))
    assert set(stats["queues"]) == {"orders-0", "orders-1", "orders-2"}
    assert "orders-0" in run(server, "stats")
    described = run(server, "topics", "describe", "orders")
    assert "partition" in described


def test_dlq_list_shows_origin_group_attempts_and_reason(server: Running) -> None:
    run(server, "topics", "create", "payments", "--partitions", "1")
    sent = run(server, "produce", "payments", "bad").strip()
    with Client(server.native) as client:
        (message,) = client.receive("payments", "billing", max=1)
        message.reject("card declined")
    table = run(server, "dlq", "list", "payments")
    assert sent in table and "billing" in table and "card declined" in table
    (line,) = run(server, "dlq", "list", "payments", "--json").splitlines()
    dead = json.loads(line)
    assert dead["headers"]["logq-origin-id"] == sent


def test_errors_are_one_clear_line_and_a_non_zero_exit(server: Running) -> None:
    assert "NOTOPIC" in run(server, "produce", "nowhere", "x", ok=False)
    assert "NOTOPIC" in run(server, "topics", "describe", "nowhere", ok=False)
    assert "BADARG" in run(server, "topics", "create", "bad name!", ok=False)
    run(server, "topics", "create", "dup")
    assert "EXISTS" in run(server, "topics", "create", "dup", ok=False)
    assert "expected name=value" in run(server, "produce", "dup", "x", "--header", "oops", ok=False)
    result = CliRunner().invoke(cli, ["stats", "--server", "127.0.0.1:1"])
    assert result.exit_code != 0 and "cannot reach logq" in result.output


def test_produce_with_delay_ttl_and_priority(server: Running) -> None:
    run(server, "topics", "create", "later", "--partitions", "1")
    run(server, "produce", "later", "soon", "--delay", "200ms", "--priority", "high", "--ttl", "1h")
    at = str(int(time.time() * 1000) + 200)
    run(server, "produce", "later", "scheduled", "--at", at)
    assert "give --delay or --at" in run(
        server, "produce", "later", "x", "--delay", "1s", "--at", at, ok=False
    )
    with Client(server.native) as client:
        assert client.receive("later", "g", max=10) == []  # neither is due yet
        got: list[bytes] = []
        while len(got) < 2:
            batch = client.receive("later", "g", max=10, wait="5s")
            assert batch
            got += [m.value or b"" for m in batch]
        assert sorted(got) == [b"scheduled", b"soon"]


def test_topic_and_group_settings_for_time_and_priority(server: Running) -> None:
    created = json.loads(
        run(
            server, "topics", "create", "timed", "--partitions", "1", "--ttl", "1h", "--ttl-dead-letter",
            "--max-delay", "1d", "--dedup-window", "10m", "--backoff-initial", "1s", "--backoff-multiplier", "3",
            "--json",
        )
    )  # fmt: skip
    config = created["config"]
    assert (config["ttl_ms"], config["ttl_dead_letter"], config["max_delay_ms"]) == (
        3_600_000,
        True,
        86_400_000,
    )
    assert config["dedup_window_ms"] == 600_000
    assert config["backoff"]["initial_ms"] == 1000 and config["backoff"]["multiplier"] == 3.0
    out = run(
        server, "groups", "configure", "timed", "workers", "--mode", "shared", "--backoff-initial", "200ms",
        "--starvation-share", "0.25", "--starvation-timeout", "2s", "--auto-ack",
    )  # fmt: skip
    assert (
        "group workers on timed" in out
        and "starvation_share=0.25" in out
        and "starvation_timeout_ms=2000" in out
        and "auto_ack=True" in out
    )
    assert "BADARG" in run(
        server, "groups", "configure", "timed", "workers", "--starvation-share", "0.9", ok=False
    )


def test_follow_with_a_past_to_time_stops_by_itself(server: Running) -> None:
    run(server, "topics", "create", "window", "--partitions", "1")
    run(server, "produce", "window", "inside")
    until = str(int(time.time() * 1000) + 1)
    out = run(server, "consume", "window", "--from-offset", "0", "--to-time", until, "--follow")
    assert out.strip().endswith("inside")


def test_trace_prints_a_timeline(server: Running) -> None:
    run(server, "topics", "create", "traced", "--partitions", "1")
    message_id = run(server, "produce", "traced", "hello").strip()
    run(server, "consume", "traced", "--group", "workers", "--max", "1")
    out = run(server, "trace", message_id)
    assert f"Message: {message_id}" in out
    lines = [line for line in out.splitlines() if line.startswith(("├─", "└─"))]
    assert [line.split()[2] for line in lines] == ["PUBLISHED", "DELIVERED", "ACKED"]
    assert "group=workers" in lines[1] and "attempt=1" in lines[1]
    assert "Delivery Attempts: 1" in out
    assert "Total Latency:" in out
    found = json.loads(run(server, "trace", message_id, "--json"))
    assert found["delivery_attempts"] == 1
    assert "NOMESSAGE" in run(server, "trace", "traced:0:99", ok=False)
    members = run(server, "groups", "describe", "traced", "workers")
    assert "joined" in members and "left" in members  # the consume command's member came and went
