"""kill -9 of a served, archiving broker at random moments of its uploads
and deletions (local trims, retire and purge, topic deletion), many times.
After each restart every acknowledged message reads back from offset 0, in
order, through the archive (so no local segment went before it was
archived, and no reader met a partial or wrong object); at the end, once
the reconciler has run, the store holds no object that no manifest
references."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from logq.client import Client
from logq.errors import LogqError, TopicNotFoundError
from tests.archive.served import (
    LOCAL_BYTES,
    publish,
    read_all,
    start,
    value,
    wait_archived,
    write_config,
)
from tests.harness import Running, stop_process

CYCLES = 6
ROLL_RETENTION_BYTES = 384 * 1024


@dataclass
class Counts:
    acknowledged: int = 0  # every message below this was acknowledged
    attempted: int = 0  # no message at or past this was ever sent


def _load(address: str, counts: dict[str, Counts], cycle: int, stop: threading.Event) -> None:
    """Publish to `keep` and `roll`, and make and delete a topic, until the kill."""
    client = Client(address, request_timeout_s=3, delivery_timeout_s=3, connect_timeout_s=1)
    try:
        _publish_until(client, counts, f"gone-{cycle}", stop)
    except (LogqError, OSError):
        pass  # the kill
    finally:
        with contextlib.suppress(LogqError, OSError):
            client.close(timeout_s=1)


def _publish_until(
    client: Client, counts: dict[str, Counts], gone: str, stop: threading.Event
) -> None:
    client.create_topic(gone, partitions=1, archive=True, local_retention_bytes=LOCAL_BYTES)
    publish(client, gone, 0, 400)
    deleted = False
    while not stop.is_set():
        for topic in ("keep", "roll"):
            sent = counts[topic]
            sent.attempted = sent.acknowledged + 20
            sent.acknowledged += publish(client, topic, sent.acknowledged, 20)
        if not deleted and counts["keep"].acknowledged % 200 == 0:
            client.delete_topic(gone)
            deleted = True


def _check_reads(client: Client, counts: dict[str, Counts]) -> None:
    keep = counts["keep"]
    found = read_all(client, "keep")
    assert keep.acknowledged <= len(found) <= keep.attempted, (len(found), keep)
    assert found == [value(n) for n in range(len(found))]
    keep.acknowledged = keep.attempted = len(found)
    roll = counts["roll"]
    first = client.describe_topic("roll")["partitions"][0]["first_offset"]
    rest: list[bytes] = []
    while page := client.peek("roll", partition=0, offset=first + len(rest), limit=500):
        rest.extend(m.value or b"" for m in page)
    end = first + len(rest)
    assert roll.acknowledged <= end <= roll.attempted, (first, end, roll)
    assert rest == [value(n) for n in range(first, end)]
    roll.acknowledged = roll.attempted = end
    part = client.archive_status("keep")["partitions"][0]
    if part["archived_to"] is not None:  # archive and disk meet: nothing between them went
        assert part["archived_to"] + 1 >= part["local_from"], part
    else:
        assert part["local_from"] == 0, part


def _delete_leftovers(client: Client) -> None:
    for topic in client.list_topics():
        if str(topic["name"]).startswith("gone-"):
            with contextlib.suppress(TopicNotFoundError):
                client.delete_topic(str(topic["name"]))


def _referenced(store: Path) -> set[str]:
    """Every segment key the newest manifest copy of each live partition names."""
    keys: set[str] = set()
    for topic in ("keep", "roll"):
        copies = sorted((store / "topics" / topic / "0" / "manifest").glob("*.json"))
        document = json.loads(copies[-1].read_text())
        keys.update(str(segment["key"]) for segment in document["segments"])
    return keys


def _settled(client: Client, store: Path) -> tuple[set[str], set[str]]:
    """(objects in the store, objects the manifests reference) once they agree
    (a bound for a loaded machine: uploads, purges and reconciliation take turns)."""
    deadline = time.monotonic() + 180
    while True:
        held = {str(p.relative_to(store)) for p in (store / "topics").rglob("*") if p.is_file()}
        segments = {key for key in held if key.endswith(".seg")}
        parts = client.archive_status()["partitions"]
        manifests = {key for key in held if "/manifest/" in key}
        if (
            segments == _referenced(store)
            and all(p["retiring"] == 0 for p in parts)
            and all(key.split("/")[1] in ("keep", "roll") for key in held)
            and len(manifests) <= 2 * 3
        ):
            return held, segments
        assert time.monotonic() < deadline, (sorted(held), parts)
        time.sleep(0.2)


def test_kills_inside_uploads_and_deletions_lose_and_leave_nothing(tmp_path: Path) -> None:
    store = tmp_path / "archive"
    config = write_config(
        tmp_path / "logq.yaml",
        store,
        purgeGrace=0,
        orphanAge="1s",
        reconcileIntervalMs=300,
    )
    data = tmp_path / "data"
    chance = random.Random()
    counts = {"keep": Counts(), "roll": Counts()}
    running: Running = start(data, config)
    try:
        with Client(running.native) as client:
            client.create_topic(
                "keep", partitions=1, archive=True, local_retention_bytes=LOCAL_BYTES
            )
            client.create_topic(
                "roll",
                partitions=1,
                archive=True,
                local_retention_bytes=LOCAL_BYTES,
                retention_bytes=ROLL_RETENTION_BYTES,
            )
        for cycle in range(CYCLES):
            stop = threading.Event()
            worker = threading.Thread(
                target=_load, args=(running.native, counts, cycle, stop), daemon=True
            )
            worker.start()
            time.sleep(chance.uniform(0.5, 2.5))
            stop_process(running, kill=True)
            stop.set()
            worker.join(60)
            assert not worker.is_alive()
            running = start(data, config)
            with Client(running.native) as client:
                _check_reads(client, counts)
        with Client(running.native) as client:
            _delete_leftovers(client)
            publish(client, "keep", counts["keep"].acknowledged, 400)
            counts["keep"].acknowledged += 400
            counts["keep"].attempted = counts["keep"].acknowledged
            wait_archived(client, "keep")
            _settled(client, store)
            assert read_all(client, "keep") == [
                value(n) for n in range(counts["keep"].acknowledged)
            ]
    finally:
        stop_process(running)
    assert counts["keep"].acknowledged > 1000
