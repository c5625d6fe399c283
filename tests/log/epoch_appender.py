"""A child process for the epoch crash test: appends forever, raising the
leader epoch every few batches, and prints `<next offset> <epoch>` after
each append returned (durable: `fsync: always`).

    python tests/log/epoch_appender.py DIR SEED
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from logq.log import FileLog, FsyncPolicy, LogConfig, encode_batch

CONFIG = LogConfig(
    segment_bytes=16 * 1024,
    index_interval_bytes=512,
    checkpoint_interval_bytes=8 * 1024,
    fsync=FsyncPolicy.ALWAYS,
    retention_ms=None,
)


def main() -> None:
    directory, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    log = FileLog(directory, CONFIG)
    while True:
        if rng.random() < 0.2:
            log.set_leader_epoch(log.leader_epoch + rng.randint(1, 2))
        count = rng.randint(1, 6)
        result = log.append(encode_batch([rng.randbytes(rng.randint(1, 300))] * count))
        sys.stdout.write(f"{result.next_offset} {log.leader_epoch}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
