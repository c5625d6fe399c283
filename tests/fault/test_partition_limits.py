"""Creating topics up to the descriptor wall: the partition cap derived
from the descriptor limit refuses the create that would pass it (CAPACITY,
nothing made); with the cap set past what descriptors allow, a create that
fails part way leaves nothing behind (no directory, no open descriptor, no
metadata record) and the broker goes on serving; a leftover directory of a
create that a crash cut short does not come back as the new topic's data."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import logq
from logq.errors import CapacityError
from logq.log import FileBackend
from logq.server.config import ServerConfig
from logq.server.descriptors import derive_partitions_max
from tests.harness import start_process, stop_process

OPEN_FILES_MAX = 160  # the interpreter, the listeners and ~40 partitions of 3 descriptors
# past what the descriptors allow, so that creates meet the descriptor wall itself
PAST_THE_WALL = {"LOGQ_LIMITS_PARTITIONS": "100000"}


def test_the_derived_partition_cap_refuses_a_create_and_makes_nothing(tmp_path: Path) -> None:
    cap = derive_partitions_max(OPEN_FILES_MAX, ServerConfig().connections_max).partitions_max
    assert 6 <= cap < OPEN_FILES_MAX // 3  # under the wall, with room for a topic
    running = start_process(tmp_path, open_files_max=OPEN_FILES_MAX)
    try:
        with httpx.Client(base_url=running.http, timeout=10) as http:
            created = 0
            while created + 6 <= cap:
                response = http.post("/v1/topics", json={"name": f"t{created}", "partitions": 6})
                assert response.status_code == 201, response.text
                created += 6
            response = http.post("/v1/topics", json={"name": "over", "partitions": 6})
            assert response.status_code == 409, response.text
            error = response.json()["error"]
            assert error["code"] == "CAPACITY"
            assert f"holds {created}, the limit limits.partitions is {cap}" in error["message"]
            assert not (tmp_path / "topics" / "over").exists()
            assert http.get("/v1/topics/over").status_code == 404
            grow = http.patch("/v1/topics/t0", json={"partitions": 6 + cap})
            assert grow.json()["error"]["code"] == "CAPACITY"
            assert len(http.get("/v1/topics/t0").json()["partitions"]) == 6
            with logq.Client(running.native) as client:
                with pytest.raises(CapacityError, match=r"limits\.partitions"):
                    client.create_topic("over", partitions=6)
                client.publish("t0", b"still serving")
            metrics = http.get("/metrics").text
            assert f"logq_partitions {float(created)}" in metrics
            assert f"logq_partitions_max {float(cap)}" in metrics
    finally:
        stop_process(running)
    log = b"".join(running.output).decode()
    assert f"partition cap {cap} (derived from the descriptor limit {OPEN_FILES_MAX}" in log
    assert FileBackend(tmp_path).get("topic/over") is None
    assert FileBackend(tmp_path).get("topic/t0") is not None


def test_a_create_that_runs_out_of_descriptors_leaves_nothing(tmp_path: Path) -> None:
    running = start_process(tmp_path, env=PAST_THE_WALL, open_files_max=OPEN_FILES_MAX)
    try:
        with httpx.Client(base_url=running.http, timeout=10) as http:
            created: list[str] = []
            failed = None
            for n in range(OPEN_FILES_MAX):
                response = http.post("/v1/topics", json={"name": f"t{n}", "partitions": 6})
                if response.status_code != 201:
                    failed = (f"t{n}", response)
                    break
                created.append(f"t{n}")
            assert failed is not None, "the descriptor limit was never reached"
            name, response = failed
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "STORAGE"
            assert not (tmp_path / "topics" / name).exists()
            listed = [t["name"] for t in http.get("/v1/topics").json()["topics"]]
            assert sorted(listed) == sorted(created)
            # the half-made topic's descriptors were given back: a smaller topic fits
            assert (
                http.post("/v1/topics", json={"name": "small", "partitions": 1}).status_code == 201
            )
            with logq.Client(running.native) as client:
                client.publish("small", b"still serving")
    finally:
        stop_process(running)
    assert FileBackend(tmp_path).get(f"topic/{name}") is None
    assert FileBackend(tmp_path).list("topic/") == sorted(f"topic/{t}" for t in [*created, "small"])


def test_leftover_files_of_an_unfinished_create_are_not_the_new_topics(tmp_path: Path) -> None:
    with logq.Broker(tmp_path) as broker:
        client = broker.client()
        client.create_topic("t", partitions=1)
        client.publish("t", b"old")
    # as if a create crashed after its files and before its record: the
    # topic's directory is there, no record names it
    backend = FileBackend(tmp_path)
    found = backend.get("topic/t")
    assert found is not None
    backend.delete("topic/t", found[0])
    assert (tmp_path / "topics" / "t" / "0").is_dir()
    with logq.Broker(tmp_path) as broker:
        client = broker.client()
        client.create_topic("t", partitions=1)
        assert client.publish("t", b"new").id == "t:0:0"
        assert [m.value for m in client.peek("t", partition=0, offset=0)] == [b"new"]
