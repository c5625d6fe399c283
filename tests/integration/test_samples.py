"""The Python samples of the README and of the client's docstrings, run as written.

Each sample runs in a fresh interpreter, as its text stands, against a real
`logq serve` (its address in place of 127.0.0.1:7070, and in LOGQ_SERVER)
and against an embedded broker on a data dir (`logq.Client` and
`logq.AsyncClient` then make clients of that broker). The samples of the
embedded broker itself run as they are, in a fresh working directory.

Afterwards the group a sample consumed from must show as many messages
acked as it printed, as many delivered, and none in flight (after the
embedded broker is opened again, too); a sample that publishes must have
stored all it sent. The interpreter must have said nothing on stderr: no
"Task was destroyed", no coroutine never awaited, no exception ignored.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

import logq
from logq import embedded
from logq.client import AsyncProducer, async_client, sync_client
from tests.harness import Running, server_process

README = Path(__file__).resolve().parents[2] / "README.md"
ADDRESS = "127.0.0.1:7070"

# Runs a sample in a fresh interpreter; with SAMPLE_DATA_DIR set, the
# sample's clients are clients of an embedded broker on that dir, and what
# the broker says of the sample's topic and group is printed as a CHECK line
# before it closes.
RUNNER = """
import json, os, sys
import logq

data_dir = os.environ.get("SAMPLE_DATA_DIR")
if data_dir:
    broker = logq.Broker(data_dir).start()
    logq.Client = lambda *args, **kwargs: broker.client()
    logq.AsyncClient = lambda *args, **kwargs: broker.async_client()
exec(compile(os.environ["SAMPLE_CODE"], "<sample>", "exec"), {"__name__": "__main__"})
if data_dir:
    observer = broker.client()
    topic, group = os.environ["SAMPLE_TOPIC"], os.environ.get("SAMPLE_GROUP")
    found = {"messages": observer.describe_topic(topic)["messages"]}
    if group:
        found["group"] = observer.describe_group(topic, group)
    print("CHECK " + json.dumps(found))
    broker.close()
"""


@dataclass(frozen=True)
class Sample:
    name: str
    code: str
    topic: str
    count: int  # messages it consumes (and prints) from `group`, or else stores
    group: str | None = None  # the group it consumes from, if any


def readme_blocks() -> list[str]:
    text = README.read_text()
    blocks = []
    start = text.find("```python\n")
    while start != -1:
        start += len("```python\n")
        end = text.index("```\n", start)
        blocks.append(text[start:end])
        start = text.find("```python\n", end)
    return blocks


def readme_block(opening: str) -> str:
    (block,) = [block for block in readme_blocks() if block.startswith(opening)]
    return block


def docstring_example(documented: object) -> str:
    """The first indented block of a docstring: the example, dedented."""
    lines = (inspect.getdoc(documented) or "").splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("    "))
    block: list[str] = []
    for line in lines[first:]:
        if line and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def producer_sample() -> str:
    """AsyncProducer's example uses a client and an event loop: given both."""
    return (
        "import asyncio\n"
        "import logq\n\n"
        "async def main() -> None:\n"
        f"    async with logq.AsyncClient({ADDRESS!r}) as client:\n"
        '        await client.create_topic("jobs", exist_ok=True)\n'
        + textwrap.indent(docstring_example(AsyncProducer), " " * 8)
        + "\nasyncio.run(main())\n"
    )


CLIENT_SAMPLES = [
    Sample("readme", readme_block("import logq\n\nwith logq.Client("), "jobs", 101, "workers"),
    Sample("async-client", docstring_example(async_client), "orders", 50, "workers"),
    Sample("sync-client", docstring_example(sync_client), "orders", 1, "workers"),
    Sample("async-producer", producer_sample(), "jobs", 100),
]
EMBEDDED_SAMPLES = [
    Sample("readme", readme_block("import logq\n\nwith logq.Broker("), "jobs", 1, "workers"),
    Sample("embedded", docstring_example(embedded), "jobs", 1, "workers"),
]


def run_sample(sample: Sample, cwd: Path, env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", RUNNER],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env={
            **os.environ,
            **env,
            "SAMPLE_CODE": sample.code,
            "SAMPLE_TOPIC": sample.topic,
            **({"SAMPLE_GROUP": sample.group} if sample.group else {}),
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == "", done.stderr  # no task destroyed, no warning, nothing ignored
    return done.stdout.splitlines()


def check_consumed(printed: int, described: dict[str, Any]) -> None:
    counts = described["counts"]
    assert counts["acked"] == printed, counts
    assert counts["delivered"] == printed, counts
    assert described["in_flight"] == 0, described


def check_stored(sample: Sample, messages: int) -> None:
    if sample.group is None:
        assert messages == sample.count


def check_committed(data_dir: Path, sample: Sample, printed: int) -> None:
    """Opened again, the broker has every ack: committed to the end, none in flight."""
    assert sample.group is not None
    with logq.Broker(data_dir) as broker:
        described = broker.client().describe_group(sample.topic, sample.group)
    assert sum(partition["committed"] for partition in described["partitions"]) == printed
    assert described["in_flight"] == 0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    with server_process(tmp_path / "server") as running:
        yield running


@pytest.mark.parametrize("sample", CLIENT_SAMPLES, ids=lambda sample: sample.name)
def test_a_client_sample_against_a_server(sample: Sample, server: Running, tmp_path: Path) -> None:
    code = sample.code.replace(repr(ADDRESS), repr(server.native))
    code = code.replace(f'"{ADDRESS}"', repr(server.native))
    lines = run_sample(replace(sample, code=code), tmp_path, {"LOGQ_SERVER": server.native})
    with logq.Client(server.native) as client:
        check_stored(sample, client.describe_topic(sample.topic)["messages"])
        if sample.group is not None:
            assert len(lines) == sample.count
            check_consumed(len(lines), client.describe_group(sample.topic, sample.group))


@pytest.mark.parametrize("sample", CLIENT_SAMPLES, ids=lambda sample: sample.name)
def test_a_client_sample_against_the_embedded_broker(sample: Sample, tmp_path: Path) -> None:
    data_dir = tmp_path / "embedded"
    lines = run_sample(sample, tmp_path, {"SAMPLE_DATA_DIR": str(data_dir)})
    (check,) = [json.loads(line[len("CHECK ") :]) for line in lines if line.startswith("CHECK ")]
    check_stored(sample, check["messages"])
    if sample.group is not None:
        printed = len(lines) - 1
        assert printed == sample.count
        check_consumed(printed, check["group"])
        check_committed(data_dir, sample, printed)


@pytest.mark.parametrize("sample", EMBEDDED_SAMPLES, ids=lambda sample: sample.name)
def test_an_embedded_broker_sample(sample: Sample, tmp_path: Path) -> None:
    lines = run_sample(sample, tmp_path, {})
    assert len(lines) == sample.count
    (data_dir,) = [path for path in tmp_path.iterdir() if path.is_dir()]  # the one it made
    check_committed(data_dir, sample, len(lines))
