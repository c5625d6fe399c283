"""A child process for the crash tests: appends forever, reporting durability.

    python tests/log/appender.py DIR SEED

Opens a FileLog in DIR with `fsync: always` and small segments, and appends
from three threads (so group commit is in play). Each batch's values are
derived from (seed, thread, counter), so the parent can rebuild nothing: it
compares bytes it reads back with the CRC32C reported here (the log writes
the base offset into the first 8 bytes; the rest is stored as it came). A line
`<base> <last> <crc32c of the batch after its base offset>` is printed only after `append`
returned, that is once the batch is durable.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from crc32c import crc32c

from logq.log import FileLog, FsyncPolicy, LogConfig, encode_batch

CONFIG = LogConfig(
    segment_bytes=64 * 1024,
    index_interval_bytes=512,
    checkpoint_interval_bytes=16 * 1024,
    fsync=FsyncPolicy.ALWAYS,
)


def main() -> None:
    directory, seed = Path(sys.argv[1]), int(sys.argv[2])
    log = FileLog(directory, CONFIG)
    lock = threading.Lock()

    def writer(thread: int) -> None:
        counter = 0
        while True:
            counter += 1
            count = 1 + (seed + thread + counter) % 20
            values = [f"{seed}-{thread}-{counter}-{i}".encode() * (1 + i % 5) for i in range(count)]
            batch = encode_batch(values, timestamp_ms=1_700_000_000_000 + counter)
            result = log.append(batch)
            with lock:
                sys.stdout.write(f"{result.base_offset} {result.last_offset} {crc32c(batch[8:])}\n")
                sys.stdout.flush()

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
