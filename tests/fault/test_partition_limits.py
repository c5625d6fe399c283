"""Many partitions under a low descriptor limit: idle partitions hold no
descriptor (their files go through the logs' descriptor cache), so 2,004
partitions are created, written and read under `ulimit -n` 512 with the
broker's descriptors staying under it; a set partition cap refuses the
create that would pass it (CAPACITY, nothing made); a leftover directory of
a create that a crash cut short does not come back as the new topic's data."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

import logq
from logq.client import AsyncClient
from logq.errors import CapacityError
from logq.log import FileBackend
from logq.server.config import ServerConfig
from logq.server.descriptors import derive_open_files_max
from tests.harness import start_process, stop_process

OPEN_FILES_MAX = 512  # the interpreter, the listeners, and ~250 descriptors of partition files
TOPICS = 334  # of 6 partitions: 2,004 partitions, ~4x what 3 descriptors each would allow
CAP = 12


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


async def _publish_and_read_all(address: str) -> tuple[int, int]:
    """One message to every partition, then every partition read back;
    (published, read back intact)."""
    async with AsyncClient(address) as client:
        for start in range(0, TOPICS, 50):
            names = range(start, min(start + 50, TOPICS))
            await asyncio.gather(*(client.create_topic(f"t{n}", partitions=6) for n in names))
        published = 0
        for start in range(0, TOPICS, 50):
            batches = await asyncio.gather(
                *(
                    client.publish_many(
                        f"t{n}", [{"value": f"t{n}/{p}".encode(), "partition": p} for p in range(6)]
                    )
                    for n in range(start, min(start + 50, TOPICS))
                )
            )
            published += sum(len(batch) for batch in batches)
        intact = 0
        for n in range(TOPICS):
            reads = await asyncio.gather(
                *(client.peek(f"t{n}", partition=p, offset=0) for p in range(6))
            )
            for p, messages in enumerate(reads):
                assert [m.value for m in messages] == [f"t{n}/{p}".encode()]
                intact += 1
        return published, intact


def test_thousands_of_partitions_fit_under_a_low_descriptor_limit(tmp_path: Path) -> None:
    running = start_process(tmp_path, open_files_max=OPEN_FILES_MAX)
    assert running.process is not None
    try:
        published, intact = asyncio.run(_publish_and_read_all(running.native))
        assert published == intact == TOPICS * 6
        with httpx.Client(base_url=running.http, timeout=30) as http:
            metrics = http.get("/metrics").text
            assert _metric(metrics, "logq_partitions") == TOPICS * 6
            cache = derive_open_files_max(OPEN_FILES_MAX, ServerConfig().connections_max)
            assert _metric(metrics, "logq_log_open_files_max") == cache.open_files_max
            assert _metric(metrics, "logq_log_open_files") <= cache.open_files_max
            assert _metric(metrics, "logq_log_file_evictions_total") > 0  # the cache cycled
            assert _metric(metrics, "logq_open_fds") < OPEN_FILES_MAX
        held = len(list(Path(f"/proc/{running.process.pid}/fd").iterdir()))
        assert held < OPEN_FILES_MAX
    finally:
        stop_process(running)
    log = b"".join(running.output).decode()
    assert "no partition cap" in log
    assert f"derived from the descriptor limit {OPEN_FILES_MAX}" in log
    assert "EMFILE" not in log and "Too many open files" not in log
    # and back after a restart: every partition opens on first use
    running = start_process(tmp_path, open_files_max=OPEN_FILES_MAX)
    try:
        with logq.Client(running.native) as client:
            last = TOPICS - 1
            assert [m.value for m in client.peek(f"t{last}", partition=5, offset=0)] == [
                f"t{last}/5".encode()
            ]
            assert client.publish(f"t{last}", b"after", partition=5).offset == 1
    finally:
        stop_process(running)


def test_a_set_partition_cap_refuses_a_create_and_makes_nothing(tmp_path: Path) -> None:
    env = {"LOGQ_LIMITS_PARTITIONS": str(CAP)}
    running = start_process(tmp_path, env=env, open_files_max=OPEN_FILES_MAX)
    try:
        with httpx.Client(base_url=running.http, timeout=10) as http:
            for n in range(CAP // 6):
                response = http.post("/v1/topics", json={"name": f"t{n}", "partitions": 6})
                assert response.status_code == 201, response.text
            response = http.post("/v1/topics", json={"name": "over", "partitions": 6})
            assert response.status_code == 409, response.text
            error = response.json()["error"]
            assert error["code"] == "CAPACITY"
            assert f"holds {CAP}, the limit limits.partitions is {CAP}" in error["message"]
            assert not (tmp_path / "topics" / "over").exists()
            assert http.get("/v1/topics/over").status_code == 404
            grow = http.patch("/v1/topics/t0", json={"partitions": 7})
            assert grow.json()["error"]["code"] == "CAPACITY"
            assert len(http.get("/v1/topics/t0").json()["partitions"]) == 6
            with logq.Client(running.native) as client:
                with pytest.raises(CapacityError, match=r"limits\.partitions"):
                    client.create_topic("over", partitions=6)
                client.publish("t0", b"still serving")
            metrics = http.get("/metrics").text
            assert _metric(metrics, "logq_partitions") == CAP
            assert _metric(metrics, "logq_partitions_max") == CAP
    finally:
        stop_process(running)
    log = b"".join(running.output).decode()
    assert f"partition cap {CAP} (set by limits.partitions)" in log
    assert FileBackend(tmp_path).get("topic/over") is None


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
