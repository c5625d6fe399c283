"""The client through broker restarts and hangs, short: sync and async
producers and a consume loop while a real server is SIGKILLed (down up to
a few seconds, longer than the client's old retries lasted) and SIGSTOPped;
no future may fail, nothing may be stored twice or out of order per key,
and the consume loop must live throughout. `logq bench chaos --client`
runs the long version (docs/operations.md)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from logq.bench.chaos_client import ClientChaosSettings, run_client_chaos
from logq.cli.main import cli


def test_the_clients_ride_out_kills_and_stops(tmp_path: Path) -> None:
    settings = ClientChaosSettings(
        kills=3,
        down_s=(1.0, 4.0),
        stops=1,
        stop_s=2.0,
        up_s=(0.5, 1.5),
        seed=7,
        data_dir=tmp_path / "chaos",
    )
    report = run_client_chaos(settings)
    assert report.ok, report.examples
    assert (report.kills, report.stops) == (3, 1)
    assert report.acknowledged == report.sent == report.stored > 1000
    assert report.consumed >= report.stored


def test_the_client_chaos_command_reports_and_exits_zero(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "chaos",
            "--client",
            "--cycles",
            "1",
            "--down-min",
            "1",
            "--down-max",
            "1",
            "--stops",
            "0",
            "--seed",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.output.strip().splitlines()[-1])
    assert found["ok"] and found["kills"] == 1 and found["sync_futures_failed"] == 0
