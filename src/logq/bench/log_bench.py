"""`logq bench log`: the storage engine alone, in-process, against the disk.

Measures, in one run and on one directory: the machine's raw durable
sequential bandwidth (1 MiB writes, each followed by fdatasync), appends of
small-record batches with `fsync: always` from several threads (group
commit), appends of ~1 MiB batches (to compare with the raw figure), and
reads of everything back from the page cache. Batches are encoded before the
clock starts: encoding is the producer's work, not the log's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from logq.log import FileLog, LogConfig, decode_batch, encode_batch
from logq.log.batch import iter_headers
from logq.log.config import MIB, FsyncPolicy

RAW_BLOCK_BYTES = 1 * MIB


@dataclass(frozen=True, slots=True)
class LogBenchSettings:
    records: int = 2_000_000
    batch_records: int = 1000
    record_bytes: int = 100
    large_batch_bytes: int = 1 * MIB
    large_total_bytes: int = 512 * MIB
    raw_total_bytes: int = 256 * MIB
    writers: int = 8
    fsync: str = FsyncPolicy.ALWAYS.value
    directory: str | None = None


@dataclass(frozen=True, slots=True)
class LogBenchResult:
    records: int
    batch_records: int
    record_bytes: int
    writers: int
    fsync: str
    append_records_per_s: float
    append_bytes_per_s: float
    append_fsyncs: int
    read_records_per_s: float
    read_bytes_per_s: float
    decode_records_per_s: float
    large_batch_bytes: int
    append_durable_bytes_per_s: float
    raw_durable_bytes_per_s: float
    durable_ratio: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


Progress = Callable[[str], None]


def measure_raw_durable(directory: Path, total_bytes: int) -> float:
    """Sequential 1 MiB writes, each made durable with fdatasync: bytes/s."""
    path = directory / "raw-bandwidth.bin"
    block = os.urandom(RAW_BLOCK_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written = 0
        started = time.perf_counter()
        while written < total_bytes:
            written += os.write(fd, block)
            os.fdatasync(fd)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink()
    return written / elapsed


def _make_batches(record_bytes: int, batch_records: int, variants: int = 4) -> list[bytes]:
    """A few distinct pre-encoded batches (distinct bytes defeat any dedup)."""
    batches = []
    for variant in range(variants):
        values = [os.urandom(record_bytes) for _ in range(batch_records)]
        keys = [f"key-{variant}-{index % 64}".encode() for index in range(batch_records)]
        batches.append(
            encode_batch(values, keys=keys, timestamp_ms=int(time.time() * 1000) + variant)
        )
    return batches


def _append_concurrently(
    log: FileLog, batches: list[bytes], batch_count: int, writers: int
) -> float:
    """Append `batch_count` batches from `writers` threads; elapsed seconds."""
    remaining = [batch_count]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            while True:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                log.append(batches[index % len(batches)])
        except BaseException as error:  # reported to the caller below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def _read_all(log: FileLog) -> tuple[float, int, int, list[bytes]]:
    """Read the whole log in 1 MiB reads; (seconds, records, bytes, sample)."""
    offset = log.first_offset
    records = size = 0
    sample: list[bytes] = []
    started = time.perf_counter()
    while offset < log.next_offset:
        result = log.read(offset, RAW_BLOCK_BYTES)
        records += result.next_offset - max(offset, result.first_offset)
        size += len(result.data)
        offset = result.next_offset
        if len(sample) < 200:
            sample.append(result.data)
    return time.perf_counter() - started, records, size, sample


def _decode_rate(sample: list[bytes]) -> float:
    records = 0
    started = time.perf_counter()
    for data in sample:
        for position, _ in iter_headers(data):
            records += len(decode_batch(data, position).values)
    elapsed = time.perf_counter() - started
    return records / elapsed if elapsed else 0.0


def run_log_bench(
    settings: LogBenchSettings, progress: Progress = lambda _: None
) -> LogBenchResult:
    parent = Path(settings.directory) if settings.directory else Path.cwd() / "data"
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=".logq-bench-", dir=parent))
    try:
        progress(f"raw durable bandwidth: {settings.raw_total_bytes // MIB} MiB in 1 MiB writes")
        raw = measure_raw_durable(workdir, settings.raw_total_bytes)

        config = LogConfig(fsync=FsyncPolicy(settings.fsync), retention_ms=None)
        batch_count = max(1, settings.records // settings.batch_records)
        progress(
            f"append: {batch_count} batches of {settings.batch_records} x "
            f"{settings.record_bytes} B, {settings.writers} writers, fsync {settings.fsync}"
        )
        small = _make_batches(settings.record_bytes, settings.batch_records)
        log = FileLog(workdir / "small", config)
        append_seconds = _append_concurrently(log, small, batch_count, settings.writers)
        appended_records = batch_count * settings.batch_records
        appended_bytes = batch_count * len(small[0])
        fsyncs = int(log.statistics()["fsyncs"])

        progress("read: the whole log back from the page cache")
        read_seconds, read_records, read_bytes, sample = _read_all(log)
        assert read_records == appended_records, (read_records, appended_records)
        log.close()
        decode_rate = _decode_rate(sample)

        per_large = max(1, settings.large_batch_bytes // (settings.record_bytes + 20))
        large = _make_batches(settings.record_bytes, per_large, variants=2)
        large_count = max(1, settings.large_total_bytes // len(large[0]))
        progress(f"append: {large_count} batches of {len(large[0]) // 1024} KiB")
        log = FileLog(workdir / "large", config)
        large_seconds = _append_concurrently(log, large, large_count, settings.writers)
        log.close()
        large_rate = large_count * len(large[0]) / large_seconds
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return LogBenchResult(
        records=appended_records,
        batch_records=settings.batch_records,
        record_bytes=settings.record_bytes,
        writers=settings.writers,
        fsync=settings.fsync,
        append_records_per_s=appended_records / append_seconds,
        append_bytes_per_s=appended_bytes / append_seconds,
        append_fsyncs=fsyncs,
        read_records_per_s=read_records / read_seconds,
        read_bytes_per_s=read_bytes / read_seconds,
        decode_records_per_s=decode_rate,
        large_batch_bytes=len(large[0]),
        append_durable_bytes_per_s=large_rate,
        raw_durable_bytes_per_s=raw,
        durable_ratio=large_rate / raw,
    )
