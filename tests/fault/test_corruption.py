"""Damaged data found on start, through a real server: a torn tail is
reported and cut at the last good batch, a flipped batch that good ones
follow is reported as damage and only its offsets are lost, and the broker
starts and goes on; a flipped byte the recovery does not scan (below its checkpoint) is
refused on read with a catalogue error, never served, while the other
partitions serve on. (tests/log/test_kill9.py covers the log itself.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from logq.client import Client
from logq.errors import LogqError
from tests.harness import Running, server_process, start_process, stop_process

TOPIC = "c"


def _publish(native: str, count: int) -> list[str]:
    with Client(native) as client:
        client.create_topic(TOPIC, partitions=2)
        return [client.publish(TOPIC, f"m{i}".encode() * 10, partition=0).id for i in range(count)]


def _segment(data: Path, partition: int) -> Path:
    (segment,) = sorted((data / "topics" / TOPIC / str(partition)).glob("*.log"))
    return segment


def _flip(path: Path, position: int) -> None:
    with path.open("r+b") as file:
        file.seek(position)
        byte = file.read(1)
        file.seek(position)
        file.write(bytes([byte[0] ^ 0xFF]))


def _output_with(running: Running, text: str, timeout_s: float = 10.0) -> str:
    """The server's output once it holds `text` (or all of it, at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        output = b"".join(running.output).decode(errors="replace")
        if text in output or time.monotonic() > deadline:
            return output
        time.sleep(0.05)


def _values(native: str, partition: int) -> list[bytes | None]:
    with Client(native) as client:
        return [m.value for m in client.peek(TOPIC, partition=partition, limit=1000)]


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_a_damaged_tail_is_reported_cut_and_the_broker_goes_on(tmp_path: Path, damage: str) -> None:
    data = tmp_path / "data"
    running = start_process(data)
    _publish(running.native, 40)
    stop_process(running, kill=True)  # the tail is past the recovery checkpoint
    # as once the commit journal was flushed: no copy of the tail is left
    # to give back what the damage takes (tests/log/test_writer.py shows that)
    for copy in (data / "commit").iterdir():
        copy.unlink()
    segment = _segment(data, 0)
    size = segment.stat().st_size
    batch = size // 40  # every batch has the same size here
    if damage == "flipped":
        # inside the 31st batch: good batches follow, so it is damage, not a
        # torn tail; the nine after it were acknowledged and stay
        _flip(segment, 30 * batch + batch // 2)
        with server_process(data) as restarted, Client(restarted.native) as client:
            # the partition opens (and recovers) on its first use: the report comes then
            before = [m.value for m in client.peek(TOPIC, partition=0, offset=0, limit=30)]
            output = _output_with(restarted, "offsets 30..30 lost to damage")
            assert "damaged batches lie between good ones" in output
            assert before == [f"m{i}".encode() * 10 for i in range(30)]
            with pytest.raises(LogqError) as refused:
                client.peek(TOPIC, partition=0, offset=30, limit=1000)
            assert refused.value.code == "CORRUPT"
            after = [m.value for m in client.peek(TOPIC, partition=0, offset=31, limit=1000)]
            assert after == [f"m{i}".encode() * 10 for i in range(31, 40)]
            assert client.publish(TOPIC, b"after", partition=0).offset == 40
        return
    with segment.open("r+b") as file:
        file.truncate(size - batch // 2)  # a torn 40th batch
    with server_process(data) as restarted:
        assert _values(restarted.native, 0) == [f"m{i}".encode() * 10 for i in range(39)]
        assert "recovery cut" in _output_with(restarted, "recovery cut")
        with Client(restarted.native) as client:
            assert client.publish(TOPIC, b"after", partition=0).offset == 39


def test_damage_below_the_checkpoint_is_never_served(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with server_process(data) as running:
        _publish(running.native, 40)
        with Client(running.native) as client:
            client.publish(TOPIC, b"other", partition=1)
    # A clean stop checkpointed everything: the recovery trusts it and does not rescan.
    segment = _segment(data, 0)
    _flip(segment, segment.stat().st_size // 2)
    with server_process(data) as restarted, Client(restarted.native) as client:
        with pytest.raises(LogqError) as refused:
            client.peek(TOPIC, partition=0, limit=1000)
        assert refused.value.code == "CORRUPT"
        assert "internal error" not in refused.value.message
        assert [m.value for m in client.peek(TOPIC, partition=1)] == [b"other"]
        assert client.ping()
