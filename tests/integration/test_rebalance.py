"""Live consumer groups through real clients and a real server.

The rebalance scenario of `logq bench rebalance` (3 consumer processes on
12 partitions under load, a 4th joins, then one is SIGKILLed), kept small.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from logq.bench.rebalance_bench import RebalanceBenchSettings, run_rebalance_bench
from logq.client import Client
from tests.harness import Running, server_thread


def test_cooperative_rebalance_under_load() -> None:
    settings = RebalanceBenchSettings(rate=2_000, warmup_s=1.0, phase_s=1.5, lease_s=1.0)
    result = run_rebalance_bench(settings, lambda text: None)
    assert result.published > 5_000
    assert result.lost == 0
    assert result.processed == result.published
    assert result.processed_twice_concurrently == 0
    assert result.moved_partitions == 6  # 3 to the newcomer, then the killed one's 3
    assert [r["reason"] for r in result.rebalances] == ["consumer-3 joined", "consumer-0 left"]
    # the consumers whose partitions stayed never stopped (no longer gap than
    # 100 ms, or than thrice what the machine gives with no rebalance when it
    # is loaded: a stop-the-world rebalance would be a whole lease, 1 s);
    # moved ones resumed quickly
    assert result.unmoved_gap_ms_max < max(100, 3 * result.baseline_gap_ms_max), result
    assert result.moved_resume_ms_max < 1_000, result


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with server_thread() as running:
        yield running


def test_join_heartbeat_leave_and_describe(server: Running) -> None:
    with Client(server.native) as client:
        client.create_topic("members", partitions=6)
        client.put_group("members", "g", mode="ordered", assignor="sticky")
        client.publish("members", b"x", partition=0)
        first = client.join("members", "g", "a", session_timeout="5s")
        assert first["partitions"] == [0, 1, 2, 3, 4, 5]
        second = client.join("members", "g", "b")
        assert len(second["partitions"]) == 3
        assert client.heartbeat("members", "g", "a")["generation"] == second["generation"]
        info = client.describe_group("members", "g")
        assert {m["name"]: len(m["partitions"]) for m in info["members"]} == {"a": 3, "b": 3}
        assert info["partitions"][0]["lag"] == 1
        assert {"in_flight", "owner", "lag"} <= set(info["partitions"][0])
        assert [r["reason"] for r in info["rebalances"]] == ["a joined", "b joined"]
        assert client.leave("members", "g", "b")
        assert client.describe_group("members", "g")["assignment"] == {"a": [0, 1, 2, 3, 4, 5]}


def test_a_consumer_is_a_member_until_it_closes(server: Running) -> None:
    with Client(server.native) as client:
        client.create_topic("closing", partitions=2)
        client.put_group("closing", "g", mode="ordered")
        client.publish("closing", b"x", partition=1)
        with client.consume("closing", "g", consumer="c1") as consumer:
            message = consumer.next(timeout_s=5)
            assert message is not None
            message.ack()
            assert client.describe_group("closing", "g")["assignment"] == {"c1": [0, 1]}
        assert client.describe_group("closing", "g")["members"] == []


def test_replay_a_window_through_the_client(server: Running) -> None:
    with Client(server.native) as client:
        client.create_topic("history", partitions=1)
        first = client.publish("history", b"a")
        client.publish("history", b"b")
        moment = client.get_message(first.id).timestamp_ms
        found = client.replay("history", "again", from_time=moment, mode="shared")
        assert found["settings"]["mode"] == "shared" and found["lag"] == 2
        client.publish("history", b"c")  # after the replay was made: not part of it
        taken = client.receive("history", "again", max=10)
        assert [m.value for m in taken] == [b"a", b"b"]
