"""The crash loop, short: a real server SIGKILLed and restarted at random
moments under idempotent producers and an acking, rejecting consumer; the
checker must find nothing lost, duplicated, reordered, redelivered after an
ack, delivered early, or missing from the DLQ. `logq bench chaos` runs the
long version (docs/operations.md)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from logq.bench.chaos import ChaosSettings, run_chaos
from logq.cli.main import cli


def test_kills_lose_nothing_acknowledged(tmp_path: Path) -> None:
    report = run_chaos(ChaosSettings(cycles=6, up_s=(0.2, 0.8), data_dir=tmp_path / "chaos"))
    assert report.ok, report.examples
    assert report.cycles == 6
    assert report.publishes_acknowledged > 1000
    assert report.stored >= report.publishes_acknowledged
    assert report.delayed > 0 and report.dead_letters > 0
    assert report.acks_confirmed + report.rejects_confirmed > 0.9 * report.stored


def test_the_chaos_command_reports_and_exits_zero() -> None:
    result = CliRunner().invoke(cli, ["bench", "chaos", "--cycles", "1", "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert '"lost": 0' in result.output and '"ok": true' in result.output
