"""The one writer and the commit journal: group commit, order, loss and failure.

Power loss is played by cutting a log's file back to what its own fsyncs
made durable (its unsynced tail, which the page cache would have lost): the
commit journal must give every acknowledged batch back at the next open.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from logq.broker.commit import Commits
from logq.log import FileLog, LogConfig, MemoryLog, decode_batch, encode_batch
from logq.log.batch import iter_headers
from logq.log.commit_journal import SUFFIX, CommitJournal, ReplayReport
from logq.log.errors import BatchTooLargeError
from logq.log.writer import Writer

CONFIG = LogConfig(segment_bytes=1 << 20, checkpoint_interval_bytes=1 << 30)


def batch(value: bytes, count: int = 1) -> bytes:
    return encode_batch([value] * count, timestamp_ms=1_000)


def values(log: FileLog | MemoryLog) -> list[bytes]:
    found: list[bytes] = []
    offset = log.first_offset
    while offset < log.next_offset:
        result = log.read(offset, 1 << 20)
        for position, _ in iter_headers(result.data):
            found.extend(v or b"" for v in decode_batch(result.data, position).values)
        offset = result.next_offset
    return found


def new_journal(directory: Path) -> CommitJournal:
    """A journal ready for writes (what opening a broker does)."""
    journal = CommitJournal(directory)
    journal.replay(lambda name: None)
    return journal


def open_logs(root: Path, count: int) -> dict[str, FileLog]:
    return {f"p{i}": FileLog(root / f"p{i}", CONFIG) for i in range(count)}


def cut_to_synced(log: FileLog) -> None:
    """What a power loss leaves of the active segment: what its own fsyncs covered."""
    active = log._active
    synced = log._synced_offset
    found = active.find_position(synced, active.size) if synced < active.next_offset else None
    position = found[0] if found is not None else active.size
    os.truncate(active.log_path, position)


async def write_all(writer: Commits, logs: dict[str, FileLog], rounds: int) -> list[object]:
    futures = [
        writer.write(log, name.encode(), batch(f"{name}-{n}".encode()))
        for n in range(rounds)
        for name, log in logs.items()
    ]
    return list(await asyncio.gather(*futures, return_exceptions=True))


def test_writes_to_many_logs_share_one_journal_fsync(tmp_path: Path) -> None:
    async def main() -> None:
        logs = open_logs(tmp_path, 6)
        writer = Commits(Writer(new_journal(tmp_path / "commit")))
        writer.start(asyncio.get_running_loop())
        outcomes = await write_all(writer, logs, 50)
        assert all(not isinstance(o, BaseException) for o in outcomes)
        stats = dict(writer.stats)
        await writer.close()
        assert stats["writes"] == 300
        # the first write wakes the thread; everything sent meanwhile is one group
        assert stats["journal_fsyncs"] <= stats["groups"] < 300
        assert stats["log_fsyncs"] == 0
        for name, log in logs.items():
            assert values(log) == [f"{name}-{n}".encode() for n in range(50)]
            assert log.durable_offset == 50
            log.close()

    asyncio.run(main())


def test_a_batch_acknowledged_through_the_journal_survives_a_lost_file_tail(
    tmp_path: Path,
) -> None:
    async def write() -> None:
        logs = open_logs(tmp_path, 3)
        journal = new_journal(tmp_path / "commit")
        writer = Commits(Writer(journal, flush_bytes=1 << 40, flush_interval_s=3600))
        writer.start(asyncio.get_running_loop())
        outcomes = await write_all(writer, logs, 20)
        assert all(not isinstance(o, BaseException) for o in outcomes)
        # the power goes: no flush ran, so the files keep only what they synced
        await writer.close(flush=False)
        for log in logs.values():
            assert log._synced_offset == 0
            cut_to_synced(log)

    asyncio.run(write())
    logs = open_logs(tmp_path, 3)
    assert all(log.next_offset == 0 for log in logs.values())
    report = CommitJournal(tmp_path / "commit").replay(logs.get)
    assert report.rewritten == 60
    assert not report.gaps and not report.damaged
    for name, log in logs.items():
        assert values(log) == [f"{name}-{n}".encode() for n in range(20)]
        log.close()
    # the replay made the logs' files durable: a second one has nothing to give
    logs = open_logs(tmp_path, 3)
    again = CommitJournal(tmp_path / "commit").replay(logs.get)
    assert again.rewritten == 0
    assert all(log.next_offset == 20 for log in logs.values())


def test_replay_skips_what_the_files_hold_and_cuts_a_torn_journal_tail(tmp_path: Path) -> None:
    async def write() -> None:
        logs = open_logs(tmp_path, 2)
        writer = Commits(
            Writer(new_journal(tmp_path / "commit"), flush_bytes=1 << 40, flush_interval_s=3600)
        )
        writer.start(asyncio.get_running_loop())
        await write_all(writer, logs, 10)
        await writer.close(flush=False)  # a kill -9: no flush

    asyncio.run(write())
    journal_file = max((tmp_path / "commit").glob(f"*{SUFFIX}"))
    size = journal_file.stat().st_size
    with journal_file.open("ab") as file:
        file.write(b"\x40\x00\x00\x00torn")  # a group whose write was cut by the crash
    logs = open_logs(tmp_path, 2)
    report = CommitJournal(tmp_path / "commit").replay(logs.get)
    assert report.entries == 20 and report.rewritten == 0  # kill -9 loses no page cache
    assert report.cut_bytes == 8
    assert journal_file.stat().st_size == size  # the torn group is cut; appends go on there
    for name, log in logs.items():
        assert values(log) == [f"{name}-{n}".encode() for n in range(10)]


def test_a_flush_makes_files_durable_and_removes_the_journal_files(tmp_path: Path) -> None:
    async def main() -> None:
        logs = open_logs(tmp_path, 2)
        writer = Commits(
            Writer(new_journal(tmp_path / "commit"), flush_bytes=1, flush_interval_s=3600)
        )
        writer.start(asyncio.get_running_loop())
        await write_all(writer, logs, 5)
        await writer.flush()
        for log in logs.values():
            assert log._synced_offset == 5
        assert len(list((tmp_path / "commit").glob(f"*{SUFFIX}"))) == 1
        await writer.close()

    asyncio.run(main())


class SlowToSync(FileLog):
    """A log whose file fsync waits until the test lets it go on."""

    def __init__(self, directory: Path, config: LogConfig) -> None:
        super().__init__(directory, config)
        self.syncing = threading.Event()
        self.go_on = threading.Event()

    def sync(self, up_to_offset: int | None = None) -> None:
        self.syncing.set()
        self.go_on.wait(30)
        super().sync(up_to_offset)


def test_commit_groups_do_not_wait_behind_a_flush(tmp_path: Path) -> None:
    async def main() -> None:
        slow = SlowToSync(tmp_path / "slow", CONFIG)
        other = FileLog(tmp_path / "other", CONFIG)
        writer = Commits(
            Writer(new_journal(tmp_path / "commit"), flush_bytes=1 << 40, flush_interval_s=3600)
        )
        writer.start(asyncio.get_running_loop())
        await writer.write(slow, b"slow", batch(b"a"))
        flushed = asyncio.ensure_future(writer.flush())
        assert await asyncio.to_thread(slow.syncing.wait, 30)
        # the flush is fsyncing `slow`'s file: new writes are committed meanwhile
        result = await asyncio.wait_for(writer.write(other, b"other", batch(b"b")), 30)
        assert not isinstance(result, BaseException)
        assert other.durable_offset == 1
        assert not flushed.done()
        slow.go_on.set()
        await asyncio.wait_for(flushed, 30)
        assert slow._synced_offset == 1
        # the journal file that held `slow`'s copy is gone; the one holding `other`'s stays
        assert len(list((tmp_path / "commit").glob(f"*{SUFFIX}"))) == 1
        await writer.close(flush=False)
        slow.close()
        other.close()
        again = {"other": FileLog(tmp_path / "other", CONFIG)}
        assert new_journal_report(tmp_path / "commit", again).entries == 1

    asyncio.run(main())


def new_journal_report(directory: Path, logs: dict[str, FileLog]) -> ReplayReport:
    journal = CommitJournal(directory)
    report = journal.replay(logs.get)
    journal.close()
    for log in logs.values():
        log.close()
    return report


def test_writes_to_one_log_keep_their_order_and_a_refused_one_fails_alone(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        log = FileLog(tmp_path / "p", LogConfig(batch_bytes_max=4096))
        writer = Commits(Writer(new_journal(tmp_path / "commit")))
        writer.start(asyncio.get_running_loop())
        futures = []
        for n in range(30):
            payload = b"x" * 8192 if n == 7 else str(n).encode()
            futures.append(writer.write(log, b"p", batch(payload)))
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        assert isinstance(outcomes[7], BatchTooLargeError)
        assert values(log) == [str(n).encode() for n in range(30) if n != 7]
        await writer.close()
        log.close()

    asyncio.run(main())


def test_large_batches_fsync_their_own_log(tmp_path: Path) -> None:
    async def main() -> None:
        log = FileLog(tmp_path / "p", CONFIG)
        writer = Commits(Writer(new_journal(tmp_path / "commit"), large_batch_bytes=1024))
        writer.start(asyncio.get_running_loop())
        await writer.write(log, b"p", batch(b"y" * 2000))
        assert writer.stats["log_fsyncs"] == 1 and writer.stats["journal_fsyncs"] == 0
        assert log._synced_offset == 1
        await writer.close()
        log.close()

    asyncio.run(main())


def test_memory_logs_are_written_inline(tmp_path: Path) -> None:
    async def main() -> None:
        log = MemoryLog(CONFIG)
        writer = Commits(Writer(None, inline=True))
        writer.start(asyncio.get_running_loop())
        future = writer.write(log, b"p", batch(b"m"))
        assert future.done() and future.result().base_offset == 0
        await writer.close()

    asyncio.run(main())


def test_a_failed_journal_fsync_fails_the_group_and_stores_none_of_it(tmp_path: Path) -> None:
    """A journal that cannot be written (its file gone read-only under it, as a
    failing disk does) answers every write of the group with the error, and
    the logs are cut back: none of those batches is ever read or replayed."""

    async def main() -> None:
        logs = open_logs(tmp_path, 2)
        journal = new_journal(tmp_path / "commit")
        writer = Commits(Writer(journal))
        writer.start(asyncio.get_running_loop())
        await write_all(writer, logs, 3)
        # the disk fails: the journal's descriptor now refuses writes
        read_only = os.open(journal.directory / "failing", os.O_RDONLY | os.O_CREAT)
        saved = journal._fd
        os.dup2(read_only, saved)
        os.close(read_only)
        outcomes = await write_all(writer, logs, 2)
        assert all(isinstance(o, OSError) for o in outcomes)
        for log in logs.values():
            assert log.next_offset == 3 and log.durable_offset == 3
        assert writer.stats["failed_groups"] >= 1

    asyncio.run(main())


@pytest.mark.parametrize("rounds", [1, 40])
def test_a_deleted_log_is_not_given_back_to_a_new_one_of_the_same_name(
    tmp_path: Path, rounds: int
) -> None:
    async def main() -> None:
        log = FileLog(tmp_path / "p", CONFIG)
        writer = Commits(
            Writer(new_journal(tmp_path / "commit"), flush_bytes=1 << 40, flush_interval_s=3600)
        )
        writer.start(asyncio.get_running_loop())
        for n in range(rounds):
            await writer.write(log, b"p", batch(str(n).encode()))
        await writer.flush()  # what deleting a topic does before removing its files
        log.close()
        for path in (tmp_path / "p").iterdir():
            path.unlink()
        await writer.close(flush=False)  # a crash right after

    asyncio.run(main())
    fresh = FileLog(tmp_path / "p", CONFIG)
    report = CommitJournal(tmp_path / "commit").replay(lambda name: fresh)
    assert report.entries == 0 and fresh.next_offset == 0


def test_a_batch_given_back_keeps_the_epoch_it_was_written_in(tmp_path: Path) -> None:
    async def write() -> None:
        log = FileLog(tmp_path / "p", CONFIG)
        log.set_leader_epoch(3)
        writer = Commits(
            Writer(new_journal(tmp_path / "commit"), flush_bytes=1 << 40, flush_interval_s=3600)
        )
        writer.start(asyncio.get_running_loop())
        for n in range(4):
            await writer.write(log, b"p", batch(str(n).encode()))
        await writer.close(flush=False)
        cut_to_synced(log)

    asyncio.run(write())
    log = FileLog(tmp_path / "p", CONFIG)
    assert log.next_offset == 0
    report = CommitJournal(tmp_path / "commit").replay(lambda name: log)
    assert report.rewritten == 4
    assert log.end_offset_for_epoch(3) == (3, 4)
    data = log.read(0, 1 << 20).data
    assert [header.leader_epoch for _, header in iter_headers(data)] == [3, 3, 3, 3]


def test_writes_nobody_waits_for_share_the_next_fsync(tmp_path: Path) -> None:
    """A group of writes not asked to sync (leases) is journaled without an
    fsync; the next group that syncs makes them durable with its own."""

    async def main() -> None:
        lazy, synced = (FileLog(tmp_path / name, CONFIG) for name in ("lazy", "synced"))
        writer = Commits(Writer(new_journal(tmp_path / "commit")))
        writer.start(asyncio.get_running_loop())
        for n in range(5):  # each taken by a kick: five groups of one write
            written = writer.write(lazy, b"lazy", batch(f"l{n}".encode()), sync=False)
            writer.kick()
            await written
        assert writer.stats["journal_fsyncs"] == 0
        assert writer.stats["groups"] == 5
        assert lazy.durable_offset == 0  # written, in the journal, not yet fsynced
        assert values(lazy) == [f"l{n}".encode() for n in range(5)]
        await writer.write(synced, b"synced", batch(b"s"))
        assert writer.stats["journal_fsyncs"] == 1
        assert lazy.durable_offset == 5  # the same journal fsync covered them
        assert synced.durable_offset == 1
        await writer.close()
        for log in (lazy, synced):
            log.close()

    asyncio.run(main())


def test_writes_nobody_waits_for_wait_for_the_next_group(tmp_path: Path) -> None:
    """Writes not asked to sync do not wake the writer: they go with the next
    write that is waited for, in order, in one group and one fsync."""

    async def main() -> None:
        log = FileLog(tmp_path / "log", CONFIG)
        writer = Commits(Writer(new_journal(tmp_path / "commit")))
        writer.start(asyncio.get_running_loop())
        leases = [writer.write(log, b"log", batch(f"l{n}".encode()), sync=False) for n in range(5)]
        assert writer.stats["groups"] == 0
        assert not any(lease.done() for lease in leases)
        await writer.write(log, b"log", batch(b"ack"))
        assert all(lease.done() for lease in leases)
        assert writer.stats["groups"] == 1
        assert writer.stats["journal_fsyncs"] == 1
        assert log.durable_offset == 6
        assert values(log) == [*(f"l{n}".encode() for n in range(5)), b"ack"]
        await writer.close()
        log.close()

    asyncio.run(main())


def test_enough_writes_nobody_waits_for_wake_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue of writes nobody waits for is bounded: the LAZY_WRITES_MAX-th
    wakes the writer, with no kick and no waited-for write."""
    monkeypatch.setattr("logq.log.writer.LAZY_WRITES_MAX", 3)

    async def main() -> None:
        log = FileLog(tmp_path / "log", CONFIG)
        writer = Commits(Writer(new_journal(tmp_path / "commit")))
        writer.start(asyncio.get_running_loop())
        leases = [writer.write(log, b"log", batch(f"l{n}".encode()), sync=False) for n in range(3)]
        await asyncio.wait_for(asyncio.gather(*leases), 30)
        assert writer.stats["groups"] == 1
        assert writer.stats["journal_fsyncs"] == 0
        await writer.close()
        log.close()

    asyncio.run(main())
