"""The broker's side of the one writer (log/writer.py): futures on the loop.

The writer is plain threaded code; this adapter starts it with the loop's
`call_soon_threadsafe`, so each commit group comes back as one callback on
the loop, and turns each write into a future.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from logq.log import AppendResult, PartitionLog
from logq.log.commit_journal import CommitJournal
from logq.log.writer import Outcome, Writer


class Commits:
    """Writes to any log, committed in groups by the broker's one writer."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def stats(self) -> dict[str, int]:
        return self._writer.stats

    @property
    def journal(self) -> CommitJournal | None:
        return self._writer.journal

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

        def hand_back(call: Callable[[], None]) -> None:
            loop.call_soon_threadsafe(call)

        self._writer.start(hand_back)

    def write(
        self, log: PartitionLog, log_id: bytes, batch: bytes, *, sync: bool = True
    ) -> asyncio.Future[AppendResult]:
        """Hand the batch over now; the future resolves once it is durable
        (not `sync`: once it is written; durable with the next commit group
        that fsyncs, Writer.write)."""
        assert self._loop is not None, "not started"
        future: asyncio.Future[AppendResult] = self._loop.create_future()

        def done(outcome: Outcome) -> None:
            if future.done():
                return  # its caller went away; the write stands
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        self._writer.write(log, log_id, batch, done, sync=sync)
        return future

    def kick(self) -> None:
        """Have the writer take the writes nobody waits for (Writer.kick)."""
        self._writer.kick()

    async def flush(self) -> None:
        """Every log written so far durable in its own file, no journal copy left."""
        assert self._loop is not None, "not started"
        future: asyncio.Future[None] = self._loop.create_future()

        def done() -> None:
            if not future.done():
                future.set_result(None)

        self._writer.flush(done)
        await future

    async def close(self, *, flush: bool = True) -> None:
        await asyncio.to_thread(self._writer.close, flush=flush)
