"""One writer for every log: writes arrive from the event loop, leave as groups.

The owner (the broker's event loop) hands each write (a log, its id, a
batch, a callback) to the writer; it never hops to a thread itself. The writer's thread takes
everything that arrived while it was busy as one commit group: it writes
each batch to its log's file, puts a copy of the small ones in the commit
journal (commit_journal.py) and fsyncs that once for the whole group; a log
that took a large batch fsyncs its own file instead (copying megabytes costs
more than an fsync). It then answers the whole group with one call handed back to
the owner's thread (`hand_back`), which runs every write's callback. Logs that need no commit (memory; `fsync: interval|never`) are just
written, the interval policy flushed when due.

Every few MiB of journal, or seconds, the writer flushes: it starts a new
journal file and hands the logs written since the last flush to its flusher
thread, which fsyncs their files and then removes the journal files they
made redundant. So the journal stays small and a restart replays at most
that much, and commit groups never wait behind a flush's fsyncs (a log's
file is fsynced while the writer goes on appending to it: the new journal
file holds the copies of whatever the fsync may miss). One flush runs at a
time; a flush asked for while one runs waits for it.

A write nobody waits for (a lease's record: `sync=False`) does not wake
the writer: it waits in the queue for the next write that is waited for,
for `LAZY_WRITES_MAX` of its kind, or for the owner's `kick()` (the
broker's timer), so handing messages out costs no thread wake-up of its
own. A group of such writes alone is journaled without an fsync.

Order: writes to one log are stored in the order they were handed over.
Failure: a write that fails (a refused batch, a full disk) fails alone; a
failed journal write or fsync fails every write of the group that waited
on it and cuts their logs back to what was durable before, so nothing
answered with an error is ever stored or comes back at a restart.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from logq.log.batch import LENGTH_PREFIX_SIZE, STAMPED_HEAD, STAMPED_HEAD_SIZE
from logq.log.commit_journal import CommitJournal
from logq.log.errors import LogClosedError, LogError
from logq.log.storage import AppendResult, PartitionLog

logger = logging.getLogger(__name__)

# A batch at least this large is made durable by an fsync of its own log's
# file rather than copied into the commit journal.
LARGE_BATCH_BYTES = 64 * 1024
# The commit journal is flushed (logs fsynced, old journal files removed)
# after this many bytes or seconds, whichever comes first.
FLUSH_BYTES = 16 * 1024 * 1024
FLUSH_INTERVAL_S = 2.0
# Writes nobody waits for queued before the writer is woken for them.
LAZY_WRITES_MAX = 256

Outcome = AppendResult | BaseException
Done = Callable[[Outcome], None]
HandBack = Callable[[Callable[[], None]], None]


@dataclass(slots=True)
class _Write:
    log: PartitionLog
    log_id: bytes
    batch: bytes
    done: Done
    sync: bool = True
    outcome: Outcome | None = None


class Writer:
    """The broker's single writer (see the module doc)."""

    def __init__(
        self,
        journal: CommitJournal | None,
        *,
        large_batch_bytes: int = LARGE_BATCH_BYTES,
        flush_bytes: int = FLUSH_BYTES,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        inline: bool = False,
    ) -> None:
        """`inline`: no thread; each write runs in the caller (for logs in
        memory, where a write never blocks)."""
        self._journal = journal
        self._inline = inline
        self._large = large_batch_bytes
        self._flush_bytes = flush_bytes
        self._flush_interval_s = flush_interval_s
        self._clock = clock
        self._condition = threading.Condition()
        self._queue: list[_Write] = []
        self._woken = False  # the writer was told the queue holds work
        self._flush_waiters: list[Callable[[], None]] = []
        self._stopping = False
        self._flush_on_stop = True
        self._thread: threading.Thread | None = None
        self._hand_back: HandBack | None = None
        self._dirty: dict[int, PartitionLog] = {}  # logs with journal copies since the flush
        # where the unsynced writes of lazy groups end, per log: durable with the next fsync
        self._unsynced: dict[int, tuple[PartitionLog, tuple[int, int, int]]] = {}
        self._dirty_lock = threading.Lock()  # the flusher gives back the logs it failed
        self._flushing: threading.Thread | None = None  # the flush in flight
        self._last_flush = clock()
        self.stats: dict[str, int] = dict.fromkeys(
            ("groups", "writes", "journal_fsyncs", "log_fsyncs", "flushes", "failed_groups"), 0
        )

    @property
    def journal(self) -> CommitJournal | None:
        return self._journal

    # -- the loop's side ------------------------------------------------------------

    def start(self, hand_back: HandBack) -> None:
        """Start the thread; `hand_back(call)` must run `call` on the owner's
        thread (for asyncio: `loop.call_soon_threadsafe`)."""
        self._hand_back = hand_back
        if self._inline:
            return
        self._thread = threading.Thread(target=self._run, name="logq-writer", daemon=True)
        self._thread.start()

    def write(
        self, log: PartitionLog, log_id: bytes, batch: bytes, done: Done, *, sync: bool = True
    ) -> None:
        """Store `batch` in `log`; `done(outcome)` runs on the owner's thread
        once it is durable as the log's policy asks, or has failed. Not
        `sync`: nobody waits for it (a lease): it waits for the next write
        that is waited for, or `kick()`, to be written; a group of such
        writes alone is written to the journal without an fsync; the next
        group that fsyncs, or the next flush, makes it durable, and `done`
        runs once it is written."""
        assert self._hand_back is not None, "the writer was not started"
        item = _Write(log, log_id, batch, done, sync)
        if self._inline:
            if self._stopping:
                raise LogClosedError("the writer is closed")
            self._commit([item])
            _resolve([item])
            return
        with self._condition:
            if self._stopping:
                raise LogClosedError("the writer is closed")
            self._queue.append(item)
            if not self._woken and (sync or len(self._queue) >= LAZY_WRITES_MAX):
                self._woken = True
                self._condition.notify()

    def kick(self) -> None:
        """Have the writer take the writes nobody waits for that are queued
        (the owner's timer calls this, so none waits longer than a tick)."""
        if self._inline or not self._queue:
            return
        with self._condition:
            if self._queue and not self._woken:
                self._woken = True
                self._condition.notify()

    def flush(self, done: Callable[[], None]) -> None:
        """`done()` runs once every log written so far is durable in its own
        file and the journal holds no copy of it (before a log is deleted)."""
        if self._journal is None or self._inline:
            done()
            return
        with self._condition:
            self._flush_waiters.append(done)
            self._condition.notify()

    def close(self, *, flush: bool = True) -> None:
        """Finish every write handed over, flush (unless not `flush`: then the
        journal is left for the next open to replay, as after a crash), and
        stop the thread (blocking)."""
        thread = self._thread
        with self._condition:
            self._stopping = True
            self._flush_on_stop = flush
            self._condition.notify()
        if thread is not None:
            thread.join()
        self._thread = None

    # -- the thread's side -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._condition:
                while not (self._woken or self._flush_waiters or self._stopping):
                    timeout = self._flush_timeout()
                    if not self._condition.wait(timeout) and self._flush_timeout() == 0:
                        break
                group, self._queue = self._queue, []
                self._woken = False
                waiters, self._flush_waiters = self._flush_waiters, []
                stopping = self._stopping and not group
            if group:
                self._commit(group)
                self._answer(group)
            if stopping:
                self._wait_for_flush()
                if self._flush_on_stop:
                    self._flush()
                for waiter in waiters:
                    self._call_soon(waiter)
                return
            if waiters or self._flush_due():
                self._start_flush(waiters)

    def _flush_timeout(self) -> float | None:
        if not self._dirty:
            return None
        return max(0.0, self._last_flush + self._flush_interval_s - self._clock())

    def _flush_due(self) -> bool:
        journal = self._journal
        if journal is None or not self._dirty:
            return False
        return (
            journal.bytes_since_rotation >= self._flush_bytes
            or self._clock() - self._last_flush >= self._flush_interval_s
        )

    def _commit(self, group: list[_Write]) -> None:
        """Write a group, make it durable, note each write's outcome."""
        self.stats["groups"] += 1
        self.stats["writes"] += len(group)
        direct = {id(item.log) for item in group if len(item.batch) >= self._large}
        journaled: dict[int, tuple[PartitionLog, list[_Write]]] = {}
        synced: dict[int, tuple[PartitionLog, list[_Write]]] = {}
        entries: list[tuple[bytes, bytes]] = []
        for item in group:
            log = item.log
            try:
                result = log.write(item.batch)
            except (LogError, OSError) as error:
                item.outcome = error
                continue
            item.outcome = result
            if log.needs_commit and self._journal is not None:
                if id(log) in direct:
                    synced.setdefault(id(log), (log, []))[1].append(item)
                else:
                    journaled.setdefault(id(log), (log, []))[1].append(item)
                    stored = _stored(item.batch, result.base_offset, log.leader_epoch)
                    entries.append((item.log_id, stored))
            elif log.needs_commit:
                synced.setdefault(id(log), (log, []))[1].append(item)
            else:  # memory, or a policy that makes it durable later (interval: when due)
                self._quietly(log.flush_if_due)
        if entries:
            self._commit_journal(entries, journaled, lazy=not any(i.sync for i in group))
        for log, items in synced.values():
            try:
                log.sync()
                self.stats["log_fsyncs"] += 1
            except (LogError, OSError) as error:
                self._fail(log, items, error)

    def _commit_journal(
        self,
        entries: list[tuple[bytes, bytes]],
        journaled: dict[int, tuple[PartitionLog, list[_Write]]],
        *,
        lazy: bool = False,
    ) -> None:
        """Append the group's copies to the journal and fsync it (unless
        `lazy`: then their logs are durable from the next fsync on)."""
        journal = self._journal
        assert journal is not None
        points = {key: log.write_point() for key, (log, _) in journaled.items()}
        try:
            journal.append(entries)
            if not lazy:
                journal.sync()
                self.stats["journal_fsyncs"] += 1
        except OSError as error:
            self.stats["failed_groups"] += 1
            for log, items in journaled.values():
                self._fail(log, items, error)
            return
        with self._dirty_lock:
            for key, (log, _) in journaled.items():
                self._dirty[key] = log
        if lazy:
            for key, (log, _) in journaled.items():
                self._unsynced[key] = (log, points[key])
            return
        unsynced, self._unsynced = self._unsynced, {}
        for key, (log, point) in unsynced.items():
            if key not in journaled:
                with contextlib.suppress(LogError):  # closed meanwhile: its close synced it
                    log.mark_durable(point)
        for key, (log, _) in journaled.items():
            log.mark_durable(points[key])

    def _fail(self, log: PartitionLog, items: list[_Write], error: BaseException) -> None:
        """Nothing of `items` is acknowledged: cut `log` back to its durable end."""
        for item in items:
            item.outcome = error
        try:
            log.truncate_to(log.durable_offset)
        except (LogError, OSError) as cut_error:
            logger.error(  # noqa: TRY400 (the error says it all; no traceback)
                "log %r: could not cut back a failed write: %s", items[0].log_id, cut_error
            )

    def _start_flush(self, waiters: list[Callable[[], None]]) -> None:
        """Start a new journal file, and fsync the logs the older files hold
        copies for on the flusher thread, then drop those files; `waiters`
        are called once that is done."""
        self._wait_for_flush()
        self._last_flush = self._clock()
        sequence = self._rotate()
        if sequence is None:
            for waiter in waiters:
                self._call_soon(waiter)
            return
        self._unsynced.clear()  # the flush fsyncs their logs' own files
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, {}
        thread = threading.Thread(
            target=self._flush_logs,
            args=(dirty, sequence, waiters),
            name="logq-flusher",
            daemon=True,
        )
        self._flushing = thread
        thread.start()

    def _wait_for_flush(self) -> None:
        thread, self._flushing = self._flushing, None
        if thread is not None:
            thread.join()

    def _flush(self) -> None:
        """Flush on the writer's own thread (the last one, at close)."""
        self._last_flush = self._clock()
        sequence = self._rotate()
        if sequence is not None:
            self._unsynced.clear()  # fsynced below, in their own files
            with self._dirty_lock:
                dirty, self._dirty = self._dirty, {}
            self._flush_logs(dirty, sequence, [])

    def _rotate(self) -> int | None:
        """A new journal file for the groups to come; None: nothing to flush,
        or no file could be started (the next flush tries again)."""
        journal = self._journal
        if journal is None or not self._dirty:
            return None
        try:
            return journal.rotate()
        except OSError as error:
            logger.warning("commit journal: could not start a new file: %s", error)
            return None

    def _flush_logs(
        self, dirty: dict[int, PartitionLog], sequence: int, waiters: list[Callable[[], None]]
    ) -> None:
        """Fsync `dirty`, then remove the journal files before `sequence`
        (unless a log could not be fsynced: it stays for the next flush)."""
        journal = self._journal
        assert journal is not None
        failed: dict[int, PartitionLog] = {}
        for key, log in dirty.items():
            try:
                log.sync()
            except LogClosedError:
                continue  # closed (deleted, or the broker closes it): its close synced it
            except (LogError, OSError) as error:
                logger.warning("commit journal: a log could not be flushed: %s", error)
                failed[key] = log
        if failed:
            with self._dirty_lock:
                for key, log in failed.items():
                    self._dirty.setdefault(key, log)
        else:
            try:
                journal.remove_before(sequence)
            except OSError as error:
                logger.warning("commit journal: old files not removed: %s", error)
        self.stats["flushes"] += 1
        for waiter in waiters:
            self._call_soon(waiter)

    def _answer(self, group: list[_Write]) -> None:
        self._call_soon(lambda: _resolve(group))

    def _call_soon(self, call: Callable[[], None]) -> None:
        hand_back = self._hand_back
        if hand_back is None:
            return
        with contextlib.suppress(RuntimeError):  # the owner's loop closed: nobody waits
            hand_back(call)

    @staticmethod
    def _quietly(function: Callable[[], None]) -> None:
        try:
            function()
        except (LogError, OSError) as error:
            logger.warning("interval flush failed: %s", error)


def _stored(batch: bytes, base_offset: int, leader_epoch: int) -> bytes:
    """The batch as its log stored it: its base offset and epoch written in
    (the writer is the log's only writer, so its epoch is the one stamped)."""
    return (
        STAMPED_HEAD.pack(base_offset, len(batch) - LENGTH_PREFIX_SIZE, leader_epoch)
        + batch[STAMPED_HEAD_SIZE:]
    )


def _resolve(group: list[_Write]) -> None:
    for item in group:
        outcome = item.outcome
        if outcome is not None:
            item.done(outcome)
