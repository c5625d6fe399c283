"""`logq bench archive`, tiny: against moto's S3 server it starts itself,
one JSON object as the last line, with every figure and nothing lost (no
speed is asserted: the machine is shared)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from logq.cli.main import cli


def test_the_archive_bench_reports_every_figure() -> None:
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "archive",
            "--messages",
            "4000",
            "--rounds",
            "1",
            "--segment-bytes",
            "16384",
            "--local-bytes",
            "32768",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    for name in (
        "upload_mb_per_s",
        "publish_ratio",
        "cold_replay_ratio",
        "first_read_ms",
        "cache_hit_rate",
    ):
        assert figures[name] > 0, (name, figures)
    assert figures["lost"] == 0
    assert figures["trimmed_offsets"] > 0 and figures["remote_reads"] > 0
    assert figures["cache_hit_rate"] <= 1
