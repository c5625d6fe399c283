"""The crash loop, short: a real server SIGKILLed and restarted at random
moments under idempotent producers and an acking, rejecting consumer; the
checker must find nothing lost, duplicated, reordered, redelivered after an
ack, delivered early, or missing from the DLQ; then the same with redrives
killed between their steps, with dedup ids sent again by fresh producers,
and with due times and TTLs of their own. `logq bench chaos` runs the long
versions (docs/operations.md)."""

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


def test_a_redrive_killed_after_its_hold_is_finished_by_the_restart(tmp_path: Path) -> None:
    """Every redrive kills the broker once its letters are held: the restart
    hands them back, once each (the checker finds none both in the DLQ and
    back, none in neither, none delivered after its ack)."""
    settings = ChaosSettings(
        cycles=3,
        up_s=(0.5, 1.0),
        redrive=True,
        crash_points="redrive.held=1",
        seed=11,
        data_dir=tmp_path / "chaos",
    )
    report = run_chaos(settings)
    assert report.ok, report.examples
    assert report.fault_kills >= 1 and report.returned > 0
    assert report.dead_letters > report.dlq_left


def test_redrives_killed_between_their_steps_lose_and_double_nothing(tmp_path: Path) -> None:
    settings = ChaosSettings(
        cycles=4,
        up_s=(0.3, 0.8),
        redrive=True,
        crash_chance=0.3,
        seed=12,
        data_dir=tmp_path / "chaos",
    )
    report = run_chaos(settings)
    assert report.ok, report.examples
    assert report.redrive_calls > 0 and report.returned > 0


def test_dedup_ids_sent_again_across_kills_store_once(tmp_path: Path) -> None:
    report = run_chaos(
        ChaosSettings(cycles=4, up_s=(0.3, 0.8), dedup=True, seed=13, data_dir=tmp_path / "c")
    )
    assert report.ok, report.examples
    assert report.dedup_resent > 0 and report.publishes_acknowledged > 500


def test_due_times_and_ttls_of_their_own_hold_across_kills(tmp_path: Path) -> None:
    report = run_chaos(
        ChaosSettings(cycles=4, up_s=(0.3, 0.8), delays=True, seed=14, data_dir=tmp_path / "c")
    )
    assert report.ok, report.examples
    assert report.delayed > 0 and report.with_ttl > 0
