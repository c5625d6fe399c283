"""`logq bench compare` runs every workload against logq and every peer.

The peers are real servers from Debian's packages, installed when missing
and started on free ports by `bench/peers.sh`, exactly as a user would.
Sizes are tiny: this proves each workload works on each system, never a
speed (benchmarks are not tests).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from logq.bench.compare.report import SYSTEMS
from logq.bench.compare.workloads import WORKLOADS

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "bench" / "peers.sh"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, int]]:
    ports = {
        "LOGQ_PG_PORT": _free_port(),
        "LOGQ_REDIS_PORT": _free_port(),
        "LOGQ_NATS_PORT": _free_port(),
        "LOGQ_RABBITMQ_PORT": _free_port(),
        "LOGQ_RABBITMQ_DIST_PORT": _free_port(),
    }
    # the peers run as their own system users: their data dir must be reachable
    directory = Path(tempfile.mkdtemp(prefix="logq-peers-"))
    directory.chmod(0o755)
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}}
    env["LOGQ_PEERS_DIR"] = str(directory / "data")
    subprocess.run([str(PEERS), "install"], check=True, env=env, timeout=900)
    try:
        subprocess.run([str(PEERS), "start"], check=True, env=env, timeout=300)
        yield ports
    finally:
        subprocess.run([str(PEERS), "stop"], check=False, env=env, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


def test_every_workload_runs_against_every_system(peers: dict[str, int], tmp_path: Path) -> None:
    out = tmp_path / "results"
    command = [
        sys.executable, "-m", "logq", "bench", "compare",
        "--seconds", "0.2", "--max-messages", "2000", "--partitions", "2",
        "--publishers", "2", "--workers", "2", "--many-partitions", "8",
        "--idle-connections", "8", "--busy-connections", "2",
        "--postgresql", f"postgresql://postgres@127.0.0.1:{peers['LOGQ_PG_PORT']}/postgres",
        "--redis", f"redis://127.0.0.1:{peers['LOGQ_REDIS_PORT']}",
        "--nats", f"nats://127.0.0.1:{peers['LOGQ_NATS_PORT']}",
        "--rabbitmq", f"amqp://guest:guest@127.0.0.1:{peers['LOGQ_RABBITMQ_PORT']}/",
        "--out", str(out), "--json",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    document = json.loads(done.stdout)
    assert document["skipped"] == {}
    machine = document["machine"]
    assert machine["cores"] >= 1
    assert machine["disk"]["fdatasync_4k_ms"]["p50"] > 0
    found = {(r["system"], r["workload"]): r for r in document["results"]}
    expected = [w for w in WORKLOADS if w != "partitions-1000"]
    expected += ["partitions-1000-publish", "partitions-1000-consume"]
    for system in SYSTEMS:
        for workload in expected:
            result = found[(system, workload)]
            assert result["settings"], (system, workload)
            if workload == "rest-publish" and system != "logq":
                assert result["note"] == "no REST publish"
                continue
            assert (result["msgs_per_s"] or 0) > 0, (system, workload, result["note"])
            assert result["messages"] > 0, result
            if workload.startswith(("publish-", "latency-", "single-")):
                assert 0 < result["p50_ms"] <= result["p99_ms"], result
    peers_ahead = {(r["peer"], r["workload"]) for r in document["ratios"]}
    assert ("redis", "publish-1000") in peers_ahead
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")
    assert (
        "| workload | logq | postgresql | redis | nats | rabbitmq |"
        in (out / "compare.md").read_text()
    )
    assert json.loads((out / "compare.json").read_text()) == document


def test_a_missing_peer_is_skipped_with_the_reason(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    command = [
        sys.executable, "-m", "logq", "bench", "compare", "single-publish",
        "--systems", "logq,redis", "--seconds", "0.1",
        "--redis", f"redis://127.0.0.1:{port}", "--out", str(tmp_path), "--no-chart",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "skipping redis: no Redis at" in done.stderr
    assert "skipped redis" in done.stdout
    document = json.loads((tmp_path / "compare.json").read_text())
    assert [r["system"] for r in document["results"]] == ["logq"]
    assert "no Redis at" in document["skipped"]["redis"]
