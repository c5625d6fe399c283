"""Creating topics up to the descriptor wall: a create that fails part way
leaves nothing behind (no directory, no open descriptor, no metadata entry)
and the broker goes on serving; a leftover directory of a create that a
crash cut short does not come back as the new topic's data."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

import logq
from tests.harness import start_process, stop_process

OPEN_FILES_MAX = 160  # the interpreter, the listeners and ~40 partitions of 3 descriptors


def test_a_create_that_runs_out_of_descriptors_leaves_nothing(tmp_path: Path) -> None:
    running = start_process(tmp_path, open_files_max=OPEN_FILES_MAX)
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
    metadata = json.loads((tmp_path / "metadata.json").read_bytes())
    assert name not in metadata["topics"]


def test_leftover_files_of_an_unfinished_create_are_not_the_new_topics(tmp_path: Path) -> None:
    with logq.Broker(tmp_path) as broker:
        client = broker.client()
        client.create_topic("t", partitions=1)
        client.publish("t", b"old")
    # as if a create crashed after its files and before the metadata: the
    # topic's directory is there, the metadata does not name it
    metadata_path = tmp_path / "metadata.json"
    metadata = json.loads(metadata_path.read_bytes())
    del metadata["topics"]["t"]
    metadata_path.write_text(json.dumps(metadata))
    with logq.Broker(tmp_path) as broker:
        client = broker.client()
        client.create_topic("t", partitions=1)
        assert client.publish("t", b"new").id == "t:0:0"
        assert [m.value for m in client.peek("t", partition=0, offset=0)] == [b"new"]
