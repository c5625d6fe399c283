"""Fuzzing: `logq bench fuzz` end to end on a few inputs per target, how it
reads the fuzzer's output, and Hypothesis driving the same three targets.

The targets (logq.bench.fuzz_targets) hold the properties: garbage only ever
gets the documented error (ProtocolError, LogError, LogqError), parsed values
survive encoding, buffering stays within the parser's limits, a batch that
validates decodes, a built batch decodes to what went in, every command
reply can be encoded and no command outlives its deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logq.bench import fuzz
from logq.bench.fuzz import Failure, FuzzReport, TargetResult
from logq.bench.fuzz_targets import (
    COMMAND_NAMES,
    PARSER_LIMITS,
    VOCABULARY,
    batch_input,
    commands_input,
    encode_commands,
    parser_input,
)
from logq.cli.main import cli
from logq.log import compression, encode_batch

RUNS = 1000
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- logq bench fuzz ----------------------------------------------------------------


def test_bench_fuzz_runs_every_target_and_reports_counts(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "logq", "bench", "fuzz", "--target", "all"]
    command += ["--runs", str(RUNS), "--json", "--artifacts", str(tmp_path / "artifacts")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] is False
    found = {entry["target"]: entry for entry in report["targets"]}
    assert set(found) == {"parser", "batch", "commands"}
    for name, entry in found.items():
        print(
            f"{name}: {entry['inputs']} inputs, {entry['rejected']} refused with "
            f"{entry['expected']}, coverage {entry['coverage']}"
        )
        assert entry["failure"] is None
        assert entry["inputs"] >= RUNS
        assert entry["rejected"] + entry["accepted"] == entry["inputs"]
        assert 0 < entry["rejected"] < entry["inputs"]  # garbage, and inputs that pass
        assert entry["coverage"] > 0
    assert [entry["expected"] for entry in report["targets"]] == [
        "ProtocolError",
        "LogError",
        "LogqError",
    ]
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())


# The end of a real atheris run whose target raised KeyError.
CRASH_OUTPUT = """\
INFO: Seed: 841131787
#2	INITED cov: 2 ft: 2 corp: 1/1b exec/s: 0 rss: 40Mb
#120	NEW    cov: 14 ft: 17 corp: 3/9b lim: 4 exec/s: 0 rss: 40Mb L: 4/4 MS: 2 CopyPart-
 === Uncaught Python exception: ===
KeyError: 'boom'
Traceback (most recent call last):
  File "/tmp/target.py", line 5, in one
    raise KeyError("boom")
KeyError: 'boom'

==20404== ERROR: libFuzzer: fuzz target exited
SUMMARY: libFuzzer: fuzz target exited
MS: 4 ShuffleBytes-ShuffleBytes-InsertByte-CMP- DE: "ab"-; base unit: 86f7e437
0x61,0x62,
ab
artifact_prefix='{prefix}'; Test unit written to {path}
Base64: YWI=
stat::number_of_executed_units: 146
"""


def test_a_failure_is_read_from_the_fuzzer_output(tmp_path: Path) -> None:
    saved = tmp_path / "parser-crash-da23"
    saved.write_bytes(b"ab")
    lines = CRASH_OUTPUT.format(prefix=tmp_path / "parser-", path=saved).splitlines()
    failure = fuzz._failure(77, lines)
    assert failure.kind == "exception"
    assert failure.error == "KeyError: 'boom'"
    assert failure.file == str(saved)
    assert failure.hex == "6162"
    assert failure.traceback.startswith("KeyError: 'boom'\nTraceback")
    assert fuzz._last_status(lines) == {"runs": 120, "cov": 14, "ft": 17, "corp": 3, "rate": 0}
    timeout = ["ALARM: working on the last Unit for 21 seconds", "==1== ERROR: libFuzzer: timeout"]
    assert fuzz._failure(77, timeout).kind == "timeout"


def test_the_command_prints_a_failing_input_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = TargetResult("batch", "LogError", 10, 4, 6, 50, 60, 5, 100, 1.0)
    failing.failure = Failure("exception", "KeyError: 'x'", str(tmp_path / "crash"), "00ff", "")
    passing = TargetResult("parser", "ProtocolError", 10, 4, 6, 50, 60, 5, 100, 1.0)
    report = FuzzReport([passing, failing])
    monkeypatch.setattr("logq.cli.bench_fuzz.run_fuzz", lambda settings, progress: report)
    monkeypatch.setattr("logq.cli.bench_fuzz.atheris_available", lambda: True)
    result = CliRunner().invoke(cli, ["bench", "fuzz", "--runs", "10", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout.splitlines()[0])["failed"] is True
    assert "input (hex): 00ff" in result.output
    assert f"input saved to {tmp_path / 'crash'}" in result.output


def test_replay_runs_one_saved_input(tmp_path: Path) -> None:
    chain = tmp_path / "chain"
    chain.write_bytes(b"\x02*1\r\n" + b"|0\r\n" * 2000 + b"$1\r\nx\r\n")
    result = CliRunner().invoke(
        cli, ["bench", "fuzz", "--target", "parser", "--replay", str(chain)]
    )
    assert result.exit_code == 0, result.output
    assert "parser: refused with the documented error" in result.output
    batch = tmp_path / "batch"
    batch.write_bytes(b"\x00" + encode_batch([b"ok"]))
    result = CliRunner().invoke(cli, ["bench", "fuzz", "--target", "batch", "--replay", str(batch)])
    assert "batch: accepted" in result.output


# -- Hypothesis on the same targets ------------------------------------------------

_TYPE_BYTES = [bytes([kind]) for kind in b"*$%|~>:(,#=!_+-"]
_RESP_WORDS = st.sampled_from(
    [*_TYPE_BYTES, b"\r\n", b"0", b"1", b"2", b"-1", b"3", b"99999999999", b"t", b"f", b"txt:"]
)


@SETTINGS
@given(st.binary(max_size=600))
def test_parser_target_on_garbage(data: bytes) -> None:
    parser_input(data)


@SETTINGS
@given(st.integers(0, 255), st.lists(_RESP_WORDS, max_size=120))
def test_parser_target_on_frames_of_resp_tokens(control: int, words: list[bytes]) -> None:
    parser_input(bytes([control]) + b"".join(words))


@SETTINGS
@given(
    st.sampled_from([b"$", b"!", b"=", b"*", b"%", b"~"]),
    st.integers(min_value=0, max_value=2**62),
    st.integers(min_value=1, max_value=700),
)
def test_a_claimed_length_never_buffers_past_the_limits(
    kind: bytes, length: int, chunk: int
) -> None:
    # bytes that claim a huge length and then keep coming: the parser holds at
    # most max_buffer_bytes, refusing the claim or the flood with ProtocolError
    frame = kind + b"%d\r\n" % length + b"x" * (3 * PARSER_LIMITS.max_buffer_bytes)
    assert parser_input(bytes([(chunk % 64) << 2]) + frame[:8000]) is True


def _batches() -> st.SearchStrategy[bytes]:
    record = st.tuples(
        st.one_of(st.none(), st.binary(max_size=40)),
        st.one_of(st.none(), st.binary(max_size=10)),
        st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2)),
    )
    return st.builds(
        lambda records, codec, lane: encode_batch(
            [value for value, _, _ in records],
            keys=[key for _, key, _ in records],
            headers=[headers for _, _, headers in records],
            codec=codec,
            lane=lane,
        ),
        st.lists(record, min_size=1, max_size=12),
        st.sampled_from([compression.NONE, compression.ZSTD, compression.LZ4]),
        st.integers(0, 7),
    )


@SETTINGS
@given(st.integers(0, 2), st.binary(max_size=400))
def test_batch_target_on_garbage(mode: int, data: bytes) -> None:
    batch_input(bytes([mode]) + data)


@SETTINGS
@given(_batches(), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4))
def test_batch_target_on_damaged_batches(batch: bytes, damage: list[tuple[int, int]]) -> None:
    damaged = bytearray(batch)
    for position, value in damage:
        damaged[position % len(damaged)] = value
    for mode in (0, 1):
        batch_input(bytes([mode]) + bytes(damaged))
    assert batch_input(b"\x00" + batch) is False  # what encode_batch writes validates


_ARGUMENTS = st.one_of(st.sampled_from(VOCABULARY), st.binary(max_size=24))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(COMMAND_NAMES), st.lists(_ARGUMENTS, max_size=8)),
        min_size=1,
        max_size=4,
    )
)
def test_commands_target_on_generated_commands(commands: list[tuple[str, list[bytes]]]) -> None:
    commands_input(encode_commands([(name, *args) for name, args in commands]))


@SETTINGS
@given(st.binary(max_size=200))
def test_commands_target_on_garbage(data: bytes) -> None:
    commands_input(data)
