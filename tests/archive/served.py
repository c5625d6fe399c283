"""A served broker archiving to a directory store (file://), for the fault
tests: its config, publishing in small batches, waiting for the archive to
catch up, reading a partition whole."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from logq.client import Client
from tests.harness import Running, start_process

SEGMENT_BYTES = 65536
LOCAL_BYTES = 128 * 1024


def write_config(path: Path, store: Path, **archive: object) -> Path:
    """A config file archiving to `store` (extra `archive:` keys as given)."""
    extra = "".join(f", {key}: {value}" for key, value in archive.items())
    path.write_text(
        f"broker: {{segmentBytes: {SEGMENT_BYTES}}}\n"
        f"archive: {{url: 'file://{store}', tickMs: 100{extra}}}\n"
    )
    return path


def start(data: Path, config: Path) -> Running:
    return start_process(data, "--config", str(config))


def value(number: int) -> bytes:
    return f"msg-{number:06d}-".encode() * 40


def publish(client: Client, topic: str, first: int, count: int, batch: int = 20) -> int:
    """Publish values `first`.. in batches; returns how many were acknowledged."""
    done = 0
    while done < count:
        size = min(batch, count - done)
        client.publish_many(topic, [value(first + done + n) for n in range(size)])
        done += size
    return done


def wait_archived(client: Client, topic: str, timeout_s: float = 60) -> dict[str, Any]:
    """Until every sealed segment is archived and the disk was trimmed."""
    deadline = time.monotonic() + timeout_s
    while True:
        part = client.archive_status(topic)["partitions"][0]
        if part["local_from"] > 0 and part["upload_lag_bytes"] == 0:
            return dict(part)
        assert time.monotonic() < deadline, part
        time.sleep(0.1)


def read_all(client: Client, topic: str) -> list[bytes]:
    """Partition 0 from offset 0 to its end, by peeking."""
    found: list[bytes] = []
    while True:
        page = client.peek(topic, partition=0, offset=len(found), limit=500)
        if not page:
            return found
        assert [m.offset for m in page] == list(range(len(found), len(found) + len(page)))
        found.extend(m.value or b"" for m in page)


def segment_objects(store: Path, topic: str) -> list[Path]:
    return sorted((store / "topics" / topic / "0").glob("*.seg"))
