"""Damage on disk between runs, met through a real server by a shared group
over several partitions: a flipped byte in a sealed segment or in the active
one after a clean stop (below the recovery checkpoint), a sealed segment cut
short, a damaged index entry. Every intact message is delivered; none of the
damaged ones is, nor recorded delivered, acked or dead-lettered; a read of a
damaged offset answers CORRUPT (a server error); the damage is logged once
with its offsets, counted in /metrics and shown with the topic."""

from __future__ import annotations

import logging
import re
import struct
import time
from pathlib import Path

import httpx
import pytest

from logq.client import Client
from logq.errors import LogqError
from logq.log import FsyncPolicy, LogConfig
from logq.log.batch import iter_headers
from tests.harness import server_thread

TOPIC = "d"
GROUP = "g"
PARTITIONS = 3
PER_PARTITION = 120
# Small segments and a dense index: each partition gets several segments.
LOG = LogConfig(fsync=FsyncPolicy.ALWAYS, segment_bytes=4096, index_interval_bytes=128)


def _publish(data: Path) -> None:
    with server_thread(data, log=LOG) as running, Client(running.native) as client:
        client.create_topic(TOPIC, partitions=PARTITIONS)
        for partition in range(PARTITIONS):
            for number in range(PER_PARTITION):
                value = f"p{partition}m{number}".encode() * 4
                client.publish(TOPIC, value, partition=partition)


def _segments(data: Path) -> list[Path]:
    return sorted((data / "topics" / TOPIC / "0").glob("*.log"))


def _layout(segment: Path) -> list[tuple[int, int, int]]:
    """(position, base offset, size) of each batch of `segment`."""
    stored = segment.read_bytes()
    return [(position, h.base_offset, h.size) for position, h in iter_headers(stored)]


def _damage(data: Path, kind: str) -> tuple[range, int]:
    """Damage partition 0 as `kind` says; returns the offsets that are lost
    and an offset whose lookup meets the damage."""
    segments = _segments(data)
    assert len(segments) >= 3
    sealed = segments[1]
    layout = _layout(sealed)
    if kind in {"sealed", "active"}:
        target = sealed if kind == "sealed" else segments[-1]
        position, base, size = _layout(target)[len(_layout(target)) // 2]
        stored = bytearray(target.read_bytes())
        stored[position + size // 2] ^= 0xFF  # inside the body: the CRC fails
        target.write_bytes(bytes(stored))
        return range(base, base + 1), base
    if kind == "truncated":
        position, base, _ = layout[3]
        with sealed.open("r+b") as file:
            file.truncate(position + 10)
        return range(base, int(segments[2].name.partition(".")[0])), base
    index = sealed.with_suffix(".index")
    entries = bytearray(index.read_bytes())
    middle = (len(entries) // 8 // 2) * 8
    relative, _ = struct.unpack_from("<II", entries, middle)
    _, later = struct.unpack_from("<II", entries, middle + 8)
    struct.pack_into("<II", entries, middle, relative, later)  # points at a later batch
    index.write_bytes(bytes(entries))
    return range(0), int(sealed.name.partition(".")[0]) + relative


def _receive_all(client: Client, group: str = GROUP) -> list[str]:
    got: list[str] = []
    empty = 0
    while empty < 2:
        messages = client.receive(TOPIC, group, max=50)
        if not messages:
            empty += 1
            continue
        empty = 0
        got += [m.id for m in messages]
        client.ack(TOPIC, group, [m.id for m in messages])
    return got


def _metric(text: str, name: str, labels: str) -> float:
    found = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize(
    ("kind", "mode"),
    [
        ("sealed", "shared"),
        ("active", "shared"),
        ("truncated", "shared"),
        ("index", "shared"),
        ("truncated", "ordered"),
    ],
)
def test_a_group_gets_every_intact_message_and_nothing_damaged(
    tmp_path: Path, kind: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    _publish(data)  # a clean stop: the recovery rescans none of it
    lost, probe = _damage(data, kind)
    caplog.set_level(logging.WARNING)
    with (
        server_thread(data, log=LOG) as running,
        Client(running.native) as client,
        httpx.Client(base_url=running.http, timeout=10) as http,
    ):
        # a group sought to the damage gets everything from there on, once
        client.put_group(TOPIC, "sought", mode="shared")
        client.seek(TOPIC, "sought", {"offset": probe, "partition": 0})
        sought = [m for m in _receive_all(client, "sought") if m.startswith(f"{TOPIC}:0:")]
        expected = [f"{TOPIC}:0:{o}" for o in range(probe, PER_PARTITION) if o not in lost]
        assert sorted(sought) == sorted(expected)
        (first, *_) = client.describe_group(TOPIC, "sought")["partitions"]
        assert (first["in_flight"], first["lag"], first["committed"]) == (0, 0, PER_PARTITION)
        client.put_group(TOPIC, GROUP, mode=mode)
        got = _receive_all(client)
        everything = {f"{TOPIC}:{p}:{o}" for p in range(PARTITIONS) for o in range(PER_PARTITION)}
        damaged = {f"{TOPIC}:0:{o}" for o in lost}
        assert sorted(got) == sorted(everything - damaged)  # each intact message once
        group = client.describe_group(TOPIC, GROUP)
        assert group["counts"]["lost_to_damage"] == len(lost)
        assert group["counts"]["dead_lettered"] == 0
        assert group["counts"]["acked"] == len(got)
        topic = http.get(f"/v1/topics/{TOPIC}").json()
        assert topic["in_dlq"] == 0
        metrics = http.get("/metrics").text
        ranges = _metric(metrics, "logq_damaged_ranges", f'topic="{TOPIC}"')
        assert ranges == (1 if lost else 0)
        lost_total = _metric(
            metrics, "logq_lost_to_damage_total", f'group="{GROUP}",topic="{TOPIC}"'
        )
        assert lost_total == len(lost)
        if not lost:
            assert topic["damaged"] == []
            for offset in range(PER_PARTITION):  # each peek starts where it was asked
                (first,) = client.peek(TOPIC, partition=0, offset=offset, limit=1)
                assert first.id == f"{TOPIC}:0:{offset}"
            assert any("indexes rebuilt" in r.getMessage() for r in caplog.records)
            return
        assert [(d["partition"], d["start"], d["end"]) for d in topic["damaged"]] == [
            (0, lost.start, lost.stop)
        ]
        with pytest.raises(LogqError) as refused:
            client.peek(TOPIC, partition=0, offset=lost.start, limit=5)
        assert refused.value.code == "CORRUPT"
        response = http.get(f"/v1/messages/{TOPIC}:0:{lost.start}")
        assert response.status_code >= 500
        assert response.json()["error"]["code"] == "CORRUPT"
        trace = client.trace(f"{TOPIC}:0:{lost.start}")
        kinds = [event["event"] for event in trace["events"]]
        assert "LOST TO DAMAGE" in kinds
        assert not {"DELIVERED", "ACKED", "DEAD-LETTERED"} & set(kinds)
        logged = [r.getMessage() for r in caplog.records if "lost to damage" in r.getMessage()]
        assert len(logged) == 1
        assert f"offsets {lost.start}..{lost.stop - 1}" in logged[0]


def test_the_scrubber_finds_damage_before_any_reader(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    _publish(data)
    lost, _ = _damage(data, "sealed")
    caplog.set_level(logging.WARNING)
    with (
        server_thread(data, log=LOG, scrub_bytes_per_second=64 << 20) as running,
        httpx.Client(base_url=running.http, timeout=10) as http,
    ):
        deadline = time.monotonic() + 30
        ranges = 0.0
        while time.monotonic() < deadline:
            ranges = _metric(http.get("/metrics").text, "logq_damaged_ranges", f'topic="{TOPIC}"')
            if ranges:
                break
            time.sleep(0.1)  # the scrubber works in real time on a real server
        assert ranges == 1
        metrics = http.get("/metrics").text
        assert _metric(metrics, "logq_verified_bytes_total", f'topic="{TOPIC}"') > 0
        topic = http.get(f"/v1/topics/{TOPIC}").json()
        assert [(d["start"], d["end"]) for d in topic["damaged"]] == [(lost.start, lost.stop)]
        logged = [r.getMessage() for r in caplog.records if "lost to damage" in r.getMessage()]
        assert len(logged) == 1


def test_the_scrubber_verifies_the_trace_journal_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The trace journal is read only by trace queries: damage in its sealed
    segments is found by the scrubber, logged and counted (`~trace`)."""
    data = tmp_path / "data"
    _publish(data)
    with server_thread(data, log=LOG) as running, Client(running.native) as client:
        client.put_group(TOPIC, GROUP, mode="shared")
        while messages := client.receive(TOPIC, GROUP, max=5):  # a trace batch each
            client.ack(TOPIC, GROUP, [m.id for m in messages])
    sealed = sorted((data / "trace").glob("*.log"))[:-1]
    assert sealed
    position, _, size = _layout(sealed[0])[0]
    stored = bytearray(sealed[0].read_bytes())
    stored[position + size // 2] ^= 0xFF
    sealed[0].write_bytes(bytes(stored))
    caplog.set_level(logging.WARNING)
    with (
        server_thread(data, log=LOG, scrub_bytes_per_second=64 << 20) as running,
        httpx.Client(base_url=running.http, timeout=10) as http,
    ):
        deadline = time.monotonic() + 30
        found = 0.0
        while time.monotonic() < deadline and not found:
            found = _metric(http.get("/metrics").text, "logq_damaged_ranges", 'topic="~trace"')
            time.sleep(0.1)  # the scrubber works in real time on a real server
        assert found == 1
    logged = [r.getMessage() for r in caplog.records if "lost to damage" in r.getMessage()]
    assert any(sealed[0].name in text for text in logged)
