"""`logq bench partitions`, run tiny: a real server measured after each
step, its stop and restarts in wall-clock and CPU seconds."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from logq.cli.main import cli


def test_a_tiny_run_measures_each_step_in_wall_clock_and_cpu_seconds(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["bench", "partitions", "--topics", "2", "--step", "1", "--dir", str(tmp_path), "--json"],
    )
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout.strip().splitlines()[-1])["steps"]
    assert [step["partitions"] for step in steps] == [6, 12]
    for step in steps:
        for restart in ("restart_after_sigterm", "restart_after_kill"):
            # a start imports and runs code: it takes CPU time
            assert step[f"{restart}_cpu_s"] > 0
            assert step[f"{restart}_s"] > 0
        assert step["stop_s"] > 0 and step["stop_cpu_s"] >= 0
