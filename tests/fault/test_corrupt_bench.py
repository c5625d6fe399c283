"""The damage harness, short: a real broker's directory damaged one file at
a time (byte flips, cuts, stale copies, removed indexes), each start checked
for damaged bytes served, acknowledged messages lost, settlements without
delivery and damage left unreported. `logq bench corrupt` runs the long
version (docs/operations.md)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from click.testing import CliRunner

from logq.bench.corrupt_damage import apply, file_kind
from logq.cli.main import cli

TRIALS = 24


def test_damaged_starts_serve_nothing_damaged_and_report_the_damage(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "corrupt",
            "--trials",
            str(TRIALS),
            "--prepared",
            "1",
            "--jobs",
            "3",
            "--seed",
            "7",
            "--dir",
            str(tmp_path),
            "--json",
        ],
    )
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["trials"] == TRIALS
    assert sum(report["by_damage"].values()) == TRIALS
    assert report["violations"] == {}, report["failures"]
    assert result.exit_code == 0, result.output
    assert report["reported"] + sum(report["exempt"].values()) == TRIALS


def test_each_damage_changes_one_file_as_described(tmp_path: Path) -> None:
    root, stale = tmp_path / "data", tmp_path / "stale"
    for directory in (root / "topics" / "t" / "0", stale / "topics" / "t" / "0"):
        directory.mkdir(parents=True)
    segment = root / "topics" / "t" / "0" / "00000000000000000000.log"
    segment.write_bytes(bytes(range(200)))
    (root / "topics" / "t" / "0" / "00000000000000000000.index").write_bytes(b"\1" * 16)
    (root / "topics" / "t" / "0" / "recovery-checkpoint.json").write_text("new")
    (stale / "topics" / "t" / "0" / "recovery-checkpoint.json").write_text("old")
    seen = set()
    for seed in range(40):
        copy = tmp_path / f"copy-{seed}"
        shutil.copytree(root, copy)
        damage = apply(random.Random(seed), copy, stale)
        seen.add(damage.kind)
        before = (root / damage.path).read_bytes()
        path = copy / damage.path
        if damage.kind == "delete-index":
            assert not path.exists()
        elif damage.kind == "stale":
            assert path.read_text() == "old"
        elif damage.kind == "truncate":
            assert path.read_bytes() == before[: damage.position]
        else:
            after = path.read_bytes()
            assert [i for i in range(len(before)) if before[i] != after[i]] == [damage.position]
    assert seen == {"flip", "truncate", "stale", "delete-index"}
    assert file_kind(Path("topics/t/0.state/00000000000000000000.timeindex")) == "state-timeindex"
    assert file_kind(Path("commit/00000000000000000001.wal")) == "commit-journal"
    assert file_kind(Path("meta/topic/t.b")) == "meta-slot"
    assert file_kind(Path("lock")) is None


def test_an_index_of_a_segment_holding_no_batch_needs_no_report(tmp_path: Path) -> None:
    from logq.bench.corrupt import _exemption  # noqa: PLC0415 (the harness's own rule)
    from logq.bench.corrupt_damage import Damage  # noqa: PLC0415

    state = tmp_path / "topics" / "t" / "0.state"
    state.mkdir(parents=True)
    (state / "00000000000000000025.log").write_bytes(b"")  # just rolled to
    (state / "00000000000000000000.log").write_bytes(b"x" * 100)
    empty = Path("topics/t/0.state/00000000000000000025.index")
    held = Path("topics/t/0.state/00000000000000000000.timeindex")
    assert _exemption(tmp_path, Damage("delete-index", "state-index", empty, 0, 0, "")) != ""
    assert _exemption(tmp_path, Damage("delete-index", "timeindex", held, 16, 0, "")) == ""
