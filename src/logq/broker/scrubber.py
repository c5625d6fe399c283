"""The scrubber: verifies sealed segments in the background, throttled.

Reads verify what they touch, but damage in data nobody reads (an old
segment a replay will want next month) would wait to be found until then.
The scrubber walks the sealed segments of every topic, state log and the
trace journal after the start, one at a time, each checked whole
(`PartitionLog.scrub`: CRC32C and offset continuity of every batch,
nothing cut or rewritten; a log not opened whose directory holds only its
active segment is not opened for it, so a pass over idle partitions costs a
directory listing each, paced as `LOG_VISIT_BYTES` read), so damage is found,
logged with its offsets and counted before a reader meets it. It reads at
most `bytes_per_second` (sleeping between 1 MiB windows), in its own thread
so the storage threads stay free for clients; a pass over everything is
followed by a pause of `PASS_PAUSE_S` before the next one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from logq.log import LogError, PartitionLog

logger = logging.getLogger(__name__)

# A finished pass waits this long before the next one starts.
PASS_PAUSE_S = 3600.0
# What a visit to one log counts against `bytes_per_second`, for the
# directory listing or the look at its segment list that it costs even
# when nothing is verified: a pass over tens of thousands of idle logs is
# spread over a minute or so at the default rate (4 MiB/s: about 1,000
# logs a second) instead of taking a core, and the interpreter's lock,
# from the broker's start and its clients.
LOG_VISIT_BYTES = 4096


class ScrubStoppedError(Exception):
    """The scrubber was asked to stop; the verification under way gives up."""


class Scrubber:
    """Owns one thread; `start()` and `stop()` bound its life."""

    def __init__(self, logs: Callable[[], list[PartitionLog]], bytes_per_second: int) -> None:
        assert bytes_per_second > 0
        self._logs = logs
        self._bytes_per_second = bytes_per_second
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="logq-scrubber", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _pace(self, checked_bytes: int) -> None:
        if self._stopping.wait(checked_bytes / self._bytes_per_second):
            raise ScrubStoppedError

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self.run_pass()
                self._stopping.wait(PASS_PAUSE_S)
        except ScrubStoppedError:
            return
        except Exception:  # the scrubber must never take the server down
            logger.exception("scrubber failed; sealed segments are verified on read only")

    def run_pass(self) -> int:
        """One pass over every log (blocking, paced); the segments verified."""
        verified = 0
        for log in self._logs():
            verified += self._scrub_log(log)
        self.passes += 1
        return verified

    def _scrub_log(self, log: PartitionLog) -> int:
        """Verify the log's sealed segments (a log with none, not opened, is
        not opened for it: `PartitionLog.scrub`); how many."""
        self._pace(LOG_VISIT_BYTES)
        cursor, verified = -1, 0
        while not self._stopping.is_set():
            try:
                base = log.scrub(cursor, self._pace)
            except LogError:  # the log was closed (its topic deleted): go on with the others
                break
            if base is None:
                break
            cursor = base
            verified += 1
        return verified
