"""`logq bench dedup-restart`, run tiny: a real server started on the data,
then restarted after a kill -9 and after SIGTERM, answers a resent dedup id
with its first position each time (checked by the bench), and the figures
come back in order."""

from __future__ import annotations

from click.testing import CliRunner

from logq.bench.dedup_restart_bench import DedupRestartSettings, run_dedup_restart_bench
from logq.cli.main import cli


def test_a_tiny_run_restarts_twice_and_measures_each() -> None:
    result = run_dedup_restart_bench(DedupRestartSettings(messages=40, partitions=2, tail=10))
    assert [r.mode for r in result.restarts] == ["closed", "kill -9", "SIGTERM"]
    for restart in result.restarts:
        assert 0 < restart.ready_s <= restart.dedup_publish_s <= restart.resend_s
        assert restart.ready_s <= restart.plain_publish_s


def test_the_command_checks_its_options() -> None:
    refused = CliRunner().invoke(cli, ["bench", "dedup-restart", "--messages", "0"])
    assert refused.exit_code != 0 and "--messages" in refused.output
