"""`logq bench fuzz`: coverage-guided fuzzing of the codecs and the commands.

Each target of `logq.bench.fuzz_targets` runs in a child process under
atheris (libFuzzer for Python): `python -m logq.bench.fuzz TARGET STATS --
LIBFUZZER-FLAGS CORPUS`. The child instruments logq's modules as it imports
them, so libFuzzer learns which inputs reach new branches, and keeps two
counters (inputs tried, inputs refused with the documented error) in a small
memory-mapped file: libFuzzer ends the process with exit(), which runs no
Python exit handler. The parent reads libFuzzer's status lines (coverage,
features, corpus, executions a second), the counters, and on a failure the
traceback and the file libFuzzer saved the input to.

atheris is a benchmark dependency (`logq[bench]`), imported only here, in
the child.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import mmap
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TARGETS = ("parser", "batch", "commands")
COUNTERS = struct.Struct("<qq")  # inputs tried, inputs refused with the documented error
ERROR_EXIT = 77  # libFuzzer's exit code for a failing input (-error_exitcode)
TAIL_LINES = 400
HEX_BYTES_MAX = 4096

_STATUS = re.compile(
    r"^#(?P<runs>\d+)\s+(?P<event>\w+)\s+(?:cov: (?P<cov>\d+) ft: (?P<ft>\d+) )?"
    r"(?:corp: (?P<corp>\d+)/\S+ )?.*?exec/s: (?P<rate>\d+)"
)
_WRITTEN = re.compile(r"Test unit written to (?P<path>\S+)")
_FAILURE_KINDS = (
    ("ALARM: working on the last Unit", "timeout"),
    ("ERROR: libFuzzer: timeout", "timeout"),
    ("ERROR: libFuzzer: out-of-memory", "out-of-memory"),
    ("ERROR: libFuzzer: fuzz target exited", "exception"),
    ("ERROR: libFuzzer: deadly signal", "crash"),
)
_UNCAUGHT = "=== Uncaught Python exception: ==="


@dataclass(frozen=True, slots=True)
class FuzzSettings:
    targets: tuple[str, ...]
    runs: int | None  # inputs per target (None: until `seconds` pass)
    seconds: float | None  # per target
    artifacts: Path  # where a failing input is saved
    corpus: Path | None = None  # kept between runs, one folder per target
    timeout_s: int = 20  # one input running longer than this is a hang
    rss_limit_mb: int = 2048


@dataclass(slots=True)
class Failure:
    kind: str  # exception, timeout, out-of-memory, crash, exited
    error: str  # the exception's last line, or libFuzzer's summary
    file: str | None  # the saved input
    hex: str  # the input, as hex (the first HEX_BYTES_MAX bytes)
    traceback: str


@dataclass(slots=True)
class TargetResult:
    target: str
    expected: str  # the documented error
    inputs: int
    rejected: int  # refused with the documented error
    accepted: int
    coverage: int | None  # libFuzzer's covered edges
    features: int | None
    corpus: int | None
    exec_per_s: int | None
    seconds: float
    failure: Failure | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FuzzReport:
    results: list[TargetResult]

    @property
    def failed(self) -> bool:
        return any(result.failure is not None for result in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "targets": [result.as_dict() for result in self.results],
            "failed": self.failed,
        }


def atheris_available() -> bool:
    return importlib.util.find_spec("atheris") is not None


def run_fuzz(settings: FuzzSettings, progress: Callable[[str], None]) -> FuzzReport:
    """Fuzz each target in turn; a failing target does not stop the others."""
    settings.artifacts.mkdir(parents=True, exist_ok=True)
    return FuzzReport([_run_target(target, settings, progress) for target in settings.targets])


def _run_target(
    target: str, settings: FuzzSettings, progress: Callable[[str], None]
) -> TargetResult:
    from logq.bench.fuzz_targets import TABLE  # noqa: PLC0415 (seeds only: no atheris)

    spec = TABLE[target]
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="logq-fuzz-")))
        corpus = settings.corpus / target if settings.corpus is not None else scratch / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        for seed in spec.seeds():
            path = corpus / f"seed-{hashlib.sha1(seed).hexdigest()[:16]}"
            if not path.exists():
                path.write_bytes(seed)
        stats = scratch / "counters"
        stats.write_bytes(bytes(COUNTERS.size))
        flags = [
            f"-artifact_prefix={settings.artifacts}/{target}-",
            f"-timeout={settings.timeout_s}",
            f"-rss_limit_mb={settings.rss_limit_mb}",
            f"-max_len={spec.max_len}",
            f"-error_exitcode={ERROR_EXIT}",
            "-print_final_stats=1",
        ]
        if settings.runs is not None:
            flags.append(f"-runs={settings.runs}")
        if settings.seconds is not None:
            flags.append(f"-max_total_time={max(1, round(settings.seconds))}")
        if spec.dictionary:
            dictionary = scratch / "dictionary"
            dictionary.write_text("".join(f'"{_escape(token)}"\n' for token in spec.dictionary))
            flags.append(f"-dict={dictionary}")
        command = [sys.executable, "-m", "logq.bench.fuzz", target, str(stats), "--", *flags]
        command.append(str(corpus))
        progress(f"{target}: fuzzing ({' '.join(flags[1:])})")
        started = time.monotonic()
        returncode, lines = _follow(command, target, progress)
        seconds = time.monotonic() - started
        tried, rejected = COUNTERS.unpack(stats.read_bytes()[: COUNTERS.size])
    status = _last_status(lines)
    result = TargetResult(
        target=target,
        expected=spec.expected,
        inputs=tried,
        rejected=rejected,
        accepted=tried - rejected,
        coverage=status.get("cov"),
        features=status.get("ft"),
        corpus=status.get("corp"),
        exec_per_s=status.get("rate"),
        seconds=round(seconds, 2),
    )
    if returncode != 0:
        result.failure = _failure(returncode, lines)
    return result


def _escape(token: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in token)


def _follow(
    command: list[str], target: str, progress: Callable[[str], None]
) -> tuple[int, list[str]]:
    """Run the child; pass a status line on every few seconds; keep the tail."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    lines: list[str] = []
    last_note = time.monotonic()
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=environment,
        text=True,
        errors="replace",
    ) as child:
        assert child.stdout is not None
        for raw in child.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            if len(lines) > 2 * TAIL_LINES:
                del lines[:TAIL_LINES]
            match = _STATUS.match(line)
            if match and time.monotonic() - last_note >= 5:
                last_note = time.monotonic()
                progress(
                    f"{target}: {int(match['runs']):,} inputs, cov {match['cov'] or '?'}, "
                    f"{int(match['rate']):,}/s"
                )
        returncode = child.wait()
    return returncode, lines


def _last_status(lines: list[str]) -> dict[str, int]:
    for line in reversed(lines):
        match = _STATUS.match(line)
        if match:
            return {
                key: int(value)
                for key, value in match.groupdict().items()
                if value and key != "event"
            }
    return {}


def _failure(returncode: int, lines: list[str]) -> Failure:
    kind = "exited"
    for marker, name in _FAILURE_KINDS:
        if any(marker in line for line in lines):
            kind = name
            break
    traceback = _traceback(lines)
    error = traceback.strip().splitlines()[-1] if traceback.strip() else ""
    if not error:
        summaries = [line for line in lines if "ERROR: libFuzzer" in line or "ALARM" in line]
        error = summaries[-1].strip() if summaries else f"the fuzzer exited with {returncode}"
    file: str | None = None
    data = b""
    for line in reversed(lines):
        match = _WRITTEN.search(line)
        if match:
            file = match["path"]
            with contextlib.suppress(OSError):
                data = Path(file).read_bytes()
            break
    return Failure(kind, error, file, data[:HEX_BYTES_MAX].hex(), traceback)


def _traceback(lines: list[str]) -> str:
    """The Python traceback atheris printed for the failing input."""
    for index in range(len(lines) - 1, -1, -1):
        if _UNCAUGHT in lines[index]:
            found: list[str] = []
            for line in lines[index + 1 :]:
                if line.startswith(("INFO:", "==", "WARNING:", "MS:")):
                    break
                found.append(line)
            return "\n".join(found).strip("\n")
    return ""


def replay(target: str, data: bytes) -> bool:
    """Run one saved input through `target` in this process (no atheris)."""
    from logq.bench.fuzz_targets import run_one  # noqa: PLC0415

    return run_one(target, data)


# -- the child ------------------------------------------------------------------------


@contextlib.contextmanager
def _counters(path: str) -> Iterator[memoryview]:
    with open(path, "r+b") as file, mmap.mmap(file.fileno(), COUNTERS.size) as mapped:
        view = memoryview(mapped)
        try:
            yield view
        finally:
            view.release()


def _child(argv: list[str]) -> None:
    if len(argv) < 3 or argv[0] not in TARGETS or argv[2] != "--":
        sys.exit(f"usage: python -m logq.bench.fuzz {{{','.join(TARGETS)}}} STATS -- FLAGS...")
    target, stats, libfuzzer_argv = argv[0], argv[1], argv[3:]
    try:
        import atheris  # noqa: PLC0415 (a benchmark dependency, only the child needs it)
    except ImportError:
        sys.exit("atheris is not installed: pip install 'logq[bench]'")
    with atheris.instrument_imports(include=["logq"], exclude=["logq.bench"]):
        from logq.bench import fuzz_targets  # noqa: PLC0415

    run = fuzz_targets.TABLE[target].run
    counts = [0, 0]
    with _counters(stats) as view:

        def one_input(data: bytes) -> None:
            counts[0] += 1
            COUNTERS.pack_into(view, 0, *counts)
            if run(data):
                counts[1] += 1
                COUNTERS.pack_into(view, 0, *counts)

        atheris.Setup([sys.argv[0], *libfuzzer_argv], one_input)
        atheris.Fuzz()  # runs until -runs or -max_total_time, then exits the process


if __name__ == "__main__":
    _child(sys.argv[1:])
