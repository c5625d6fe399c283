"""Leader epochs on a full disk (a real small tmpfs): whatever the next batch
depends on must reach the epoch file first, so a change that cannot be
written is refused whole, and a truncation that cannot finish its
bookkeeping still leaves the epoch cache matching the data."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from logq.log import FileLog, LogConfig, encode_batch
from logq.log.config import KIB
from tests.fault.mounts import tmpfs

CONFIG = LogConfig(
    segment_bytes=64 * KIB, index_interval_bytes=64, retention_ms=None, retention_bytes=None
)


def _fill_disk(path: Path) -> None:
    """Write `path` until the disk is full."""
    with path.open("wb", buffering=0) as file:
        while True:
            try:
                file.write(bytes(64 * KIB))
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break
    with path.open("ab", buffering=0) as file:  # the last partial page too
        while True:
            try:
                file.write(b"x")
            except OSError:
                return


def test_epochs_on_a_full_disk(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "size=1m") as mount:
        log = FileLog(mount / "log", CONFIG)
        try:
            for epoch, counts in [(1, [2, 2]), (2, [1, 1]), (3, [2])]:
                log.set_leader_epoch(epoch)
                for count in counts:
                    log.append(encode_batch([b"v"] * count))
            assert log.end_offset_for_epoch(2) == (2, 6)
            _fill_disk(mount / "filler")

            with pytest.raises(OSError):
                log.set_leader_epoch(4)
            assert log.leader_epoch == 3
            log.set_leader_epoch(3)  # no change: nothing to write

            with pytest.raises(OSError):
                log.truncate_to(5)  # the data is cut; its checkpoint cannot be written
            assert log.next_offset == 5
            assert log.end_offset_for_epoch(2) == (2, 5)
            assert log.end_offset_for_epoch(3) == (2, 5)
            # The batch's bytes would fit in the segment's last page; the
            # epoch file naming epoch 3's new start cannot be written first.
            with pytest.raises(OSError):
                log.append(encode_batch([b"w"]))
            assert log.next_offset == 5

            (mount / "filler").unlink()
            log.append(encode_batch([b"w"]))
            assert log.end_offset_for_epoch(3) == (3, 6)
            log.close()
            log = FileLog(mount / "log", CONFIG)
            assert log.leader_epoch == 3
            answers = [log.end_offset_for_epoch(epoch) for epoch in range(5)]
            assert answers == [(-1, -1), (1, 4), (2, 5), (3, 6), (3, 6)]
        finally:
            log.close()
