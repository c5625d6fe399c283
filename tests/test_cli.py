"""The `logq` command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import server_process

LOGQ = str(Path(sys.executable).parent / "logq")


def test_version() -> None:
    result = subprocess.run([LOGQ, "--version"], capture_output=True, text=True, check=True)
    assert "logq" in result.stdout


def test_bench_log_runs_on_a_tiny_size(tmp_path: Path) -> None:
    command = [
        LOGQ, "bench", "log", "--records", "2000", "--batch-records", "100",
        "--large-total-mb", "2", "--raw-total-mb", "2", "--writers", "2",
        "--dir", str(tmp_path), "--json",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    figures = json.loads(result.stdout)
    for key in (
        "append_records_per_s",
        "read_records_per_s",
        "raw_durable_bytes_per_s",
        "append_durable_bytes_per_s",
    ):
        assert figures[key] > 0, key
    assert figures["records"] == 2000
    assert list(tmp_path.iterdir()) == []  # the bench cleans up after itself


def test_bench_log_table_for_people(tmp_path: Path) -> None:
    command = [
        LOGQ, "bench", "log", "--records", "1000", "--large-total-mb", "1",
        "--raw-total-mb", "1", "--dir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "records/s" in result.stdout
    assert "durable append / raw" in result.stdout


def test_bad_option_is_a_clear_error(tmp_path: Path) -> None:
    command = [LOGQ, "bench", "log", "--records", "0", "--dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "--records" in result.stderr


def test_broker_benches_run_on_a_tiny_size() -> None:
    for scenario in ("produce", "consume", "shared"):
        command = [
            LOGQ,
            "bench",
            scenario,
            "--messages",
            "3000",
            "--batch",
            "100",
            "--partitions",
            "2",
            "--json",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
        figures = json.loads(result.stdout)
        assert figures["scenario"] == scenario
        assert figures["messages"] == 3000
        assert figures["msgs_per_s"] > 0


def test_broker_bench_against_a_given_server(tmp_path: Path) -> None:
    with server_process(tmp_path) as server:
        command = [
            LOGQ,
            "bench",
            "produce",
            "--messages",
            "1000",
            "--batch",
            "100",
            "--server",
            server.native,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    assert "msg/s" in result.stdout


def test_delay_bench_runs_on_a_tiny_size() -> None:
    command = [
        LOGQ,
        "bench",
        "delay",
        "--messages",
        "300",
        "--batch",
        "50",
        "--spread",
        "0.3",
        "--lead",
        "0.2",
        "--json",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    figures = json.loads(result.stdout)
    assert figures["messages"] == 300
    assert figures["early"] == 0
    assert figures["rss_bytes"] > 0
    for key in ("pending_delayed", "lateness_ms_p50", "lateness_ms_p99"):
        assert key in figures


def test_priority_bench_runs_on_a_tiny_size() -> None:
    command = [
        LOGQ,
        "bench",
        "priority",
        "--backlog",
        "2000",
        "--high",
        "5",
        "--interval-ms",
        "1",
        "--json",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    figures = json.loads(result.stdout)
    assert figures["low_backlog"] == 2000
    assert figures["high_messages"] == 5
    assert figures["high_wait_ms_p99"] >= figures["high_wait_ms_p50"] >= 0


def test_priority_bench_with_single_message_receives_counts_lows_served_past_the_bound() -> None:
    command = [
        LOGQ, "bench", "priority", "--backlog", "2000", "--high", "60", "--high-batch", "30",
        "--interval-ms", "1", "--max", "1", "--json",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    figures = json.loads(result.stdout)
    assert figures["high_messages"] == 60 and figures["receive_max"] == 1
    # bursts of 30 high messages: low gets one only after ten high ones went out
    assert figures["low_served_while_high_waited"] > 0
    assert figures["high_run_before_low_min"] >= 10


def test_delay_bench_with_distinct_pending_delays_runs_on_a_tiny_size() -> None:
    command = [LOGQ, "bench", "delay", "--distinct", "--pending", "50", "--plain", "40", "--json"]
    figures = json.loads(
        subprocess.run(command, capture_output=True, text=True, check=True, timeout=180).stdout
    )
    (result,) = figures["results"]
    assert result["pending"] == 50 and result["early"] == 0
    assert result["held_back"] + result["near_delivered"] >= 50
    assert result["held_back_after_restart"] == 50 - result["near_delivered"]
    for key in ("plain_msgs_per_s", "plain_msgs_per_s_no_delays", "restart_s", "rss_bytes_after"):
        assert result[key] > 0
    for key in ("restart_cpu_s", "rss_bytes_after_restart"):  # read from /proc on Linux
        assert result[key] > 0
    assert result["plain_cpu_us_per_msg"] >= 0 and result["plain_cpu_us_per_msg_no_delays"] >= 0


@pytest.mark.parametrize("argv", [["serve", "--help"], ["--help"], ["bench", "--help"]])
def test_the_command_needs_only_the_runtime_dependencies(argv: list[str]) -> None:
    # A plain `pip install logq` (a container image) has none of the extras:
    # the command must still load and list every command (help imports each
    # command's module), each benchmark importing its own extras when it runs.
    extras = ["httpx", "asyncpg", "redis", "nats", "aio_pika", "matplotlib", "atheris"]
    code = (
        "import sys\n"
        f"for name in {extras!r}: sys.modules[name] = None\n"
        "from logq.cli.main import main\n"
        f"sys.argv = ['logq', *{argv!r}]\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Usage:" in result.stdout


# What a broker without an archive or a config file never uses: a start
# that loaded them would pay their import (compiled anew at each start
# where no bytecode is cached) for nothing.
NOT_LOADED_BY_SERVE = (
    "yaml",
    "obstore",
    "logq.archive.archiver",
    "logq.archive.store",
    "logq.archive.manifest",
    "logq.archive.reader",
    "logq.server.http_openapi",
)


def test_a_running_broker_loads_no_module_it_does_not_use(tmp_path: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from logq.cli.serve import serve_command\n"
        "from logq.server.app import serve\n"
        "from logq.server.config import ServerConfig\n"
        "from logq.broker import BrokerConfig\n"
        "async def main():\n"
        "    stop = asyncio.Event()\n"
        "    config = ServerConfig(host='127.0.0.1', native_port=0, http_port=0,\n"
        f"        broker=BrokerConfig(data_dir=Path({str(tmp_path / 'data')!r})))\n"
        "    def ready(addresses):\n"
        f"        print(sorted(m for m in {NOT_LOADED_BY_SERVE!r} if m in sys.modules))\n"
        "        stop.set()\n"
        "    await serve(config, on_ready=ready, stop=stop, handle_signals=False)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
