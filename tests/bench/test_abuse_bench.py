"""`logq bench abuse`, run tiny: the signed-in client keeps working while
hostile sockets attack, and the figures come back."""

from __future__ import annotations

from click.testing import CliRunner

from logq.bench.abuse_bench import AbuseBenchSettings, run_abuse_bench
from logq.cli.main import cli


def test_the_client_works_through_a_small_attack() -> None:
    result = run_abuse_bench(AbuseBenchSettings(sockets=6, seconds=2), lambda text: None)
    assert result.round_trips > 0
    assert result.round_trip_ms_p50 <= result.round_trip_ms_p99 <= result.round_trip_ms_max
    assert result.attacker_connects >= 6
    assert result.rss_bytes_before is not None and result.rss_growth_bytes is not None


def test_the_command_checks_its_options() -> None:
    refused = CliRunner().invoke(cli, ["bench", "abuse", "--seconds", "0"])
    assert refused.exit_code != 0 and "--seconds" in refused.output
