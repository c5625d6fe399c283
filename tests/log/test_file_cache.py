"""The descriptor cache shared by logs, and logs that open on first use.

Many logs on a cache far smaller than their files: readers in several
threads, a writer and a scrubber at once get the right bytes, the cache
never holds more than its cap plus the pins of the operations running, and
closing the logs gives every descriptor back. A log does nothing until it
is used; a clean one opens and closes without rewriting its checkpoint; a
log written after its checkpoint and torn by a crash is recovered (its torn
tail cut) on its first use."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

from logq.log import FileLog, FsyncPolicy, LogConfig, decode_batch, encode_batch
from logq.log.batch import iter_headers
from logq.log.checkpoint import CHECKPOINT_NAME
from logq.log.file_cache import FileCache

LOGS = 24
RECORDS = 4  # per batch
CACHE = 8
READERS = 3
OPERATIONS = 300  # per thread
CONFIG = LogConfig(segment_bytes=4096, index_interval_bytes=256, fsync=FsyncPolicy.NEVER)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir held


def _batch(log: int, sequence: int) -> bytes:
    return encode_batch([f"{log}:{sequence}:{r}".encode() * 40 for r in range(RECORDS)])


def _check(log: int, data: bytes) -> None:
    for position, header in iter_headers(data):
        decoded = decode_batch(data, position)
        sequence = header.base_offset // RECORDS
        assert decoded.values == [f"{log}:{sequence}:{r}".encode() * 40 for r in range(RECORDS)]


def test_many_logs_share_a_small_cache_while_threads_read_write_and_scrub(
    tmp_path: Path,
) -> None:
    before = _open_fds()
    cache = FileCache(CACHE)
    logs = [FileLog(tmp_path / str(n), CONFIG, files=cache) for n in range(LOGS)]
    for n, log in enumerate(logs):
        for sequence in range(30):  # several sealed segments each
            log.append(_batch(n, sequence))
    assert all(log.segment_count > 3 for log in logs)
    written = [30] * LOGS
    locks = [threading.Lock() for _ in range(LOGS)]
    failures: list[BaseException] = []
    most_open = [0]
    threads = READERS + 2  # and the writer and the scrubber

    def note_open() -> None:
        most_open[0] = max(most_open[0], cache.open_files)
        assert _open_fds() <= before + CACHE + threads * 3

    def reader(seed: int) -> None:
        chosen = random.Random(seed)
        try:
            for step in range(OPERATIONS):
                n = chosen.randrange(LOGS)
                offset = chosen.randrange(written[n] * RECORDS)
                result = logs[n].read(offset, 4096)
                assert result.first_offset <= offset < result.next_offset
                _check(n, result.data)
                if step % 25 == 0:
                    note_open()
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    def writer() -> None:
        chosen = random.Random(99)
        try:
            for _ in range(OPERATIONS):
                n = chosen.randrange(LOGS)
                with locks[n]:
                    logs[n].append(_batch(n, written[n]))
                    written[n] += 1
        except BaseException as error:
            failures.append(error)

    def scrubber() -> None:
        try:
            for _ in range(OPERATIONS // 10):
                for log in logs[:4]:
                    log.scrub(-1)
        except BaseException as error:
            failures.append(error)

    workers = [threading.Thread(target=reader, args=(seed,)) for seed in range(READERS)]
    workers += [threading.Thread(target=writer), threading.Thread(target=scrubber)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures, failures
    assert cache.open_files <= CACHE  # the overshoot of pinned files was given back
    assert most_open[0] <= CACHE + threads * 3
    assert cache.stats["evictions"] > 0
    for n, log in enumerate(logs):
        assert log.next_offset == written[n] * RECORDS
        assert not log.damaged_ranges()
        _check(n, log.read(0, 1 << 20).data)
    for log in logs:
        log.close()
    assert cache.open_files == 0
    assert _open_fds() == before


def test_a_log_does_nothing_until_used_and_closes_for_free(tmp_path: Path) -> None:
    log = FileLog(tmp_path / "0", CONFIG)
    for sequence in range(10):
        log.append(_batch(0, sequence))
    log.close()
    before = _open_fds()
    listing = sorted((tmp_path / "0").iterdir())
    lazy = [FileLog(tmp_path / str(n), CONFIG) for n in range(50)]
    assert _open_fds() == before
    assert not (tmp_path / "1").exists()  # a log never used makes no directory
    assert lazy[0].statistics()["opened"] == 0
    for log in lazy[1:]:
        log.close()
    assert not (tmp_path / "1").exists()
    assert lazy[0].next_offset == 10 * RECORDS  # opens it
    assert lazy[0].opened
    _check(0, lazy[0].read(0, 1 << 20).data)
    lazy[0].close()
    assert sorted((tmp_path / "0").iterdir()) == listing
    assert _open_fds() == before


def test_a_clean_log_opens_and_closes_without_rewriting_its_checkpoint(tmp_path: Path) -> None:
    config = LogConfig(fsync=FsyncPolicy.ALWAYS)
    log = FileLog(tmp_path, config)
    for sequence in range(5):
        log.append(_batch(0, sequence))
    log.close()
    checkpoint = os.stat(tmp_path / CHECKPOINT_NAME)
    log = FileLog(tmp_path, config)
    assert log.next_offset == 5 * RECORDS
    assert log.recovery.scanned_batches == 0
    _check(0, log.read(0, 1 << 20).data)
    log.close()
    after = os.stat(tmp_path / CHECKPOINT_NAME)
    assert (after.st_ino, after.st_mtime_ns) == (checkpoint.st_ino, checkpoint.st_mtime_ns)
    log = FileLog(tmp_path, config)  # and a write after it still moves it on
    log.append(_batch(0, 5))
    log.close()
    assert os.stat(tmp_path / CHECKPOINT_NAME).st_ino != checkpoint.st_ino
    log = FileLog(tmp_path, config)
    assert log.next_offset == 6 * RECORDS
    log.close()


def test_a_log_written_after_its_checkpoint_is_recovered_on_first_use(tmp_path: Path) -> None:
    config = LogConfig(fsync=FsyncPolicy.NEVER, checkpoint_interval_bytes=1 << 30)
    first = FileLog(tmp_path, config)
    first.append(_batch(0, 0))
    first.close()
    cache = FileCache()
    crashed = FileLog(tmp_path, config, files=cache)  # never closed: as a kill -9 leaves it
    for sequence in range(1, 6):
        crashed.append(_batch(0, sequence))
    segment = sorted(tmp_path.glob("*.log"))[-1]
    size = segment.stat().st_size
    with segment.open("r+b") as file:
        file.truncate(size - 10)  # the last batch torn
    cache.close_idle()  # what the killed process held
    log = FileLog(tmp_path, config)
    assert segment.stat().st_size == size - 10  # nothing done until it is used
    try:
        assert log.next_offset == 5 * RECORDS
        assert log.recovery.cut_bytes > 0
        assert log.recovery.scanned_batches == 4  # from the checkpoint on, not the whole log
        _check(0, log.read(0, 1 << 20).data)
        assert log.append(_batch(0, 5)).base_offset == 5 * RECORDS
    finally:
        log.close()
