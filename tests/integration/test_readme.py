"""The README's first session, run as written against a real `logq serve`.

Each `$ command` of the walkthrough block runs in bash with the venv's
`logq` on PATH; its output must match the lines shown under it (`…` stands
for anything). Ports are the test server's instead of 7070/8080. The
Python samples run in test_samples.py (and the time and priority snippet
here, after a client is made for it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Running, server_process

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- walkthrough:"


def walkthrough() -> list[tuple[str, list[str]]]:
    text = README.read_text()
    block = text[text.index(MARKER) :]
    block = block[block.index("```console\n") + len("```console\n") :]
    block = block[: block.index("```\n")]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def matches(expected: list[str], actual: list[str]) -> bool:
    pattern = "\n".join(re.escape(line).replace("…", ".*") for line in expected)
    return re.fullmatch(pattern, "\n".join(actual), flags=re.DOTALL) is not None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with server_process(tmp_path_factory.mktemp("readme")) as running:
        yield running


def test_the_walkthrough_works_as_shown(server: Running) -> None:
    http_port = server.http.rsplit(":", 1)[1]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "LOGQ_SERVER": server.native,
        "COLUMNS": "100",
    }
    steps = walkthrough()
    assert len(steps) >= 8
    for shown, expected in steps:
        command = shown.replace("localhost:8080", f"localhost:{http_port}")
        done = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        actual = [line.rstrip() for line in done.stdout.splitlines()]
        assert matches(expected, actual), (
            f"$ {command}\nexpected:\n" + "\n".join(expected) + "\ngot:\n" + "\n".join(actual)
        )


def test_the_time_and_priority_example_runs(server: Running) -> None:
    text = README.read_text()
    start = text.index("```python\nclient.publish(") + len("```python\n")
    snippet = text[start : text.index("```\n", start)]
    code = (
        "import logq\n"
        f"client = logq.Client({server.native!r})\n"
        "client.create_topic('jobs', partitions=3, exist_ok=True)\n"
        f"{snippet}"
        "print('ok')\n"
        "client.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
