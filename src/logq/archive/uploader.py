"""Uploading closed segments to the archive, in order, off the event loop.

For each partition the uploader copies the sealed segments below the
readable end that its manifest does not hold yet, oldest first: it reads
and packs a segment in a thread (segment_object.pack_segment checks every
batch), writes it under a fresh name with `put_new`, and only then has the
partition record `Copied` (durably, in its state log). A crash between the
put and the record leaves an object no manifest references: the
reconciler removes it, and the next upload makes a new one.

Uploads share two bounds: `concurrency` puts at a time across the broker,
and `bytes_per_s` (a token bucket over the bytes put). A store that fails
or is unreachable is retried with exponential backoff per partition; it
never blocks publishing or reading local data, which do not wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from logq.archive.errors import ArchiveDamagedError, ArchiveError, ArchiveUnavailableError
from logq.archive.manifest import ArchivedSegment, Copied, Manifest
from logq.archive.names import new_segment_name
from logq.archive.segment_object import Footer, pack_segment
from logq.archive.store import ArchiveStore
from logq.log import LogError, PartitionLog

logger = logging.getLogger(__name__)

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0


class ArchivedPartition(Protocol):
    """What the uploader needs of a partition."""

    @property
    def topic_name(self) -> str: ...

    @property
    def index(self) -> int: ...

    @property
    def log(self) -> PartitionLog: ...

    @property
    def manifest(self) -> Manifest: ...

    def readable_end(self) -> int: ...

    async def record_archived(self, record: Copied) -> None:
        """Append `record` to the partition's state log durably, then apply
        it to the manifest."""
        ...


@dataclass(slots=True)
class UploadStatus:
    """One partition's uploads, for `logq archive status` and metrics."""

    uploaded_segments: int = 0
    uploaded_bytes: int = 0
    last_error: str | None = None
    retry_at: float = 0.0  # monotonic seconds: no upload before
    failures: int = 0


class TokenBucket:
    """At most `rate` bytes a second on average, in bursts of one second."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._at = clock()

    def wait_for(self, amount: int) -> float:
        """Take `amount`; the seconds to wait before using it."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


@dataclass(slots=True)
class UploadStats:
    segments: int = 0
    bytes: int = 0
    failures: int = 0


class Uploader:
    """Copies partitions' sealed segments to one store (see the module doc)."""

    def __init__(
        self,
        store: ArchiveStore,
        *,
        concurrency: int = 4,
        bytes_per_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.stats = UploadStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._bucket = TokenBucket(bytes_per_s, clock)
        self._clock = clock
        self._sleep = sleep
        self._status: dict[tuple[str, int], UploadStatus] = {}
        self._busy: set[tuple[str, int]] = set()

    def status(self, topic: str, partition: int) -> UploadStatus:
        return self._status.setdefault((topic, partition), UploadStatus())

    def pending(self, partition: ArchivedPartition) -> list[int]:
        """Base offsets of the sealed segments still to upload, in order."""
        end = partition.manifest.archived_end
        readable = partition.readable_end()
        return [
            sealed.base_offset
            for sealed in partition.log.sealed_segments()
            if (end is None or sealed.base_offset >= end) and sealed.next_offset <= readable
        ]

    async def upload_due(self, partition: ArchivedPartition) -> int:
        """Upload what is due for `partition` (unless it is backing off or
        already uploading); returns the number of segments uploaded."""
        key = (partition.topic_name, partition.index)
        status = self.status(*key)
        if key in self._busy or self._clock() < status.retry_at:
            return 0
        self._busy.add(key)
        uploaded = 0
        try:
            for base in self.pending(partition):
                await self._upload(partition, base, status)
                uploaded += 1
            status.last_error = None
            status.failures = 0
        except (ArchiveUnavailableError, OSError) as error:
            status.failures += 1
            status.last_error = str(error)
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (status.failures - 1))
            status.retry_at = self._clock() + delay
            self.stats.failures += 1
            logger.warning(
                "archive: %s:%d: upload failed (%s); next try in %.0f s",
                *key,
                error,
                delay,
            )
        except (ArchiveDamagedError, LogError) as error:
            # a local segment that does not verify is never archived: the
            # scrubber reports it; the partition's uploads stop here
            status.failures += 1
            status.last_error = str(error)
            status.retry_at = self._clock() + BACKOFF_MAX_S
            self.stats.failures += 1
            logger.error("archive: %s:%d: not archived: %s", *key, error)  # noqa: TRY400 (the error says it all)
        finally:
            self._busy.discard(key)
        return uploaded

    async def _upload(self, partition: ArchivedPartition, base: int, status: UploadStatus) -> None:
        manifest = partition.manifest
        end = manifest.archived_end
        if end is not None and base != end:
            raise ArchiveError(
                f"the archive ends at offset {end} and the next local segment starts at {base}"
            )
        log = partition.log
        packed, footer = await asyncio.to_thread(_pack, log, base)
        name = new_segment_name(
            partition.topic_name, partition.index, footer.base_offset, footer.next_offset
        )
        async with self._slots:
            wait = self._bucket.wait_for(len(packed))
            if wait > 0:
                await self._sleep(wait)
            await self.store.put_new(name.key, packed)
        await partition.record_archived(
            Copied(
                ArchivedSegment(
                    name.key,
                    footer.base_offset,
                    footer.next_offset,
                    len(packed),
                    footer.first_timestamp,
                    footer.max_timestamp,
                )
            )
        )
        status.uploaded_segments += 1
        status.uploaded_bytes += len(packed)
        self.stats.segments += 1
        self.stats.bytes += len(packed)


def _pack(log: PartitionLog, base: int) -> tuple[bytes, Footer]:
    return pack_segment(log.read_sealed(base))
