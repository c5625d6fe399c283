"""The archive of a broker: what each archived partition holds, and the work
that keeps it (uploads, retention, deletion, reconciliation) and reads it.

The broker attaches each partition of a topic with `archive: true` at open,
with the manifest its state log recovered (the snapshot's copy, then the
records after it). Every change of a manifest is a record the broker writes
to that partition's state log (`write_record`) before the manifest takes
it, so a restart, or a broker that takes the partition over, finds the
same manifest. After a change, a copy of the manifest (with the groups'
committed positions the broker gives) is put in the store under its version
number, for a broker that lost its disk (`restore`).

`tick` runs the periodic work of one partition: upload what is due, move
the horizons (retention.py), delete local segments that are archived and
past local retention, and delete the objects of retired segments once their
grace is over. `reconcile` removes what no manifest references.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from logq.archive.errors import (
    ArchiveDamagedError,
    ArchivedObjectMissingError,
    ArchiveError,
    ArchiveUnavailableError,
    ObjectExistsError,
    ObjectNotFoundError,
)
from logq.archive.manifest import (
    ArchivedSegment,
    Copied,
    Manifest,
    ManifestState,
    Purged,
    Record,
    Retired,
    StartMoved,
    decode_record,
    decode_state,
    encode_record,
    encode_state,
)
from logq.archive.names import manifest_key, parse_manifest_key, topic_prefix
from logq.archive.reader import ArchiveReader, ChunkCache
from logq.archive.reconcile import ReconcileReport, reconcile
from logq.archive.retention import Horizons, plan
from logq.archive.settings import ArchiverSettings
from logq.archive.store import ArchiveStore
from logq.archive.uploader import Uploader, UploadStatus
from logq.log import LogError, OffsetOutOfRangeError, PartitionLog, read_header

logger = logging.getLogger(__name__)

# (topic, partition, record bytes): hand the record to the partition's state
# log now; the awaitable resolves once it is durable
WriteRecord = Callable[[str, int, bytes], Awaitable[object]]
# (topic, partition): what the store's copy of a manifest carries besides it,
# for a broker that restores the topic: `settings` (the topic's), `groups`
# (each group's settings and committed position in the partition)
Describe = Callable[[str, int], dict[str, object]]


@dataclass(slots=True)
class ArchivedPartition:
    """One partition as the archive keeps it."""

    topic_name: str
    index: int
    log: PartitionLog
    manifest: Manifest
    readable: Callable[[], int]
    archiver: Archiver
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def readable_end(self) -> int:
        return self.readable()

    async def record_archived(self, record: Copied) -> None:
        await self.archiver.record(self, record)

    # what the partition's TieredLog asks of the archive (tiered_log.RemoteReads)

    def start_offset(self, local_first: int) -> int:
        return self.archiver.start_offset(self.topic_name, self.index, local_first)

    async def read(self, offset: int, max_bytes: int) -> bytes | None:
        return await self.archiver.read(self.topic_name, self.index, offset, max_bytes)

    async def offset_for_time(
        self, timestamp_ms: int, *, include_deleted: bool = False
    ) -> int | None:
        offset = self.manifest.offset_for_time(timestamp_ms, include_deleted=include_deleted)
        segment = (
            self.manifest.segment_for(offset, include_deleted=include_deleted)
            if offset is not None
            else None
        )
        if offset is None or segment is None:
            return offset
        try:
            footer = await self.archiver.reader.footer(segment)
        except ObjectNotFoundError:
            raise self.archiver.missing(self, segment, offset, include_deleted) from None
        narrowed = footer.offset_for_time(timestamp_ms)
        return max(offset, narrowed) if narrowed is not None else offset


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    topic: str
    partition: int
    archived_segments: int
    archived_bytes: int
    archived_from: int | None
    archived_to: int | None
    start_offset: int
    local_from: int
    local_to: int
    upload_lag_bytes: int
    upload_lag_ms: int  # age of the newest message in the oldest segment not yet archived
    retiring: int
    last_error: str | None


class Archiver:
    """See the module doc."""

    def __init__(
        self,
        store: ArchiveStore,
        cache_directory: Path,
        settings: ArchiverSettings,
        *,
        write_record: WriteRecord,
        describe: Describe,
        now_ms: Callable[[], int],
    ) -> None:
        self.store = store
        self.settings = settings
        self._write_record = write_record
        self._describe = describe
        self._now_ms = now_ms
        self.uploader = Uploader(
            store,
            concurrency=settings.upload_concurrency,
            bytes_per_s=settings.upload_bytes_per_s,
        )
        self.reader = ArchiveReader(
            store,
            ChunkCache(cache_directory, settings.cache_bytes),
            chunk_bytes=settings.chunk_bytes,
            requests_max=settings.remote_reads_max,
            request_timeout_s=settings.remote_read_timeout_ms / 1000,
        )
        self.partitions: dict[tuple[str, int], ArchivedPartition] = {}
        self.errors = 0
        self.damaged_reads = 0  # reads refused because an object failed its checks or is gone
        self.unavailable_reads = 0  # reads refused because the store was out of reach
        self.orphans_removed = 0

    # -- partitions -----------------------------------------------------------------------

    def attach(
        self,
        topic: str,
        index: int,
        log: PartitionLog,
        readable_end: Callable[[], int],
        snapshot: bytes | None,
        records: Sequence[bytes],
    ) -> ArchivedPartition:
        """Take a partition in, with its manifest as its state log recovered it."""
        manifest = Manifest.restored(decode_state(snapshot)) if snapshot else Manifest()
        for raw in records:
            manifest.apply(decode_record(raw))
        partition = ArchivedPartition(topic, index, log, manifest, readable_end, self)
        self.partitions[(topic, index)] = partition
        return partition

    def detach_topic(self, topic: str) -> None:
        for key in [key for key in self.partitions if key[0] == topic]:
            del self.partitions[key]

    def get(self, topic: str, index: int) -> ArchivedPartition | None:
        return self.partitions.get((topic, index))

    def snapshot(self, topic: str, index: int) -> bytes | None:
        """The manifest as a state snapshot carries it (None: not archived)."""
        partition = self.partitions.get((topic, index))
        return encode_state(partition.manifest.state()) if partition is not None else None

    def holds(self, key: str) -> bool:
        return any(partition.manifest.holds(key) for partition in self.partitions.values())

    # -- records ----------------------------------------------------------------------------

    async def record(self, partition: ArchivedPartition, record: Record) -> None:
        """Hand `record` to the partition's state log and apply it in the same
        turn (so a state snapshot taken later includes it, one taken earlier
        does not), wait until it is durable (undoing it if it cannot be),
        then put the manifest's copy in the store (best effort)."""
        refused = partition.manifest.check(record)
        if refused is not None:
            raise ArchiveError(f"{partition.topic_name}:{partition.index}: {refused}")
        before = partition.manifest.state()
        durable = self._write_record(partition.topic_name, partition.index, encode_record(record))
        partition.manifest.apply(record)
        try:
            await durable
        except BaseException:
            partition.manifest = Manifest.restored(before)
            raise
        try:
            await self._put_copy(partition)
        except ArchiveError as error:
            logger.warning("archive: the manifest copy was not written: %s", error)

    async def _put_copy(self, partition: ArchivedPartition) -> None:
        manifest = partition.manifest
        document = {
            "version": manifest.version,
            "topic": partition.topic_name,
            "partition": partition.index,
            "start_offset": manifest.start_offset,
            "segments": [
                {
                    "key": s.key,
                    "base_offset": s.base_offset,
                    "next_offset": s.next_offset,
                    "size": s.size,
                    "first_timestamp": s.first_timestamp,
                    "max_timestamp": s.max_timestamp,
                }
                for s in manifest.segments
            ],
            **self._describe(partition.topic_name, partition.index),
        }
        key = manifest_key(partition.topic_name, partition.index, manifest.version)
        with contextlib.suppress(ObjectExistsError):  # copied already (a repeat after a restart)
            await self.store.put_new(key, json.dumps(document).encode())

    # -- periodic work ----------------------------------------------------------------------

    async def tick(self, partition: ArchivedPartition, horizons: Horizons) -> None:
        """Upload what is due, then move the horizons (see the module doc)."""
        async with partition.lock:
            try:
                await asyncio.to_thread(self._roll_if_quiet, partition.log)
            except (LogError, OSError) as error:
                logger.warning("archive: %s:%d: %s", partition.topic_name, partition.index, error)
            await self.uploader.upload_due(partition)
            try:
                await self._apply_horizons(partition, horizons)
                await self._purge(partition)
            except (ArchiveError, OSError) as error:
                self.errors += 1
                logger.warning("archive: %s:%d: %s", partition.topic_name, partition.index, error)

    def _roll_if_quiet(self, log: PartitionLog) -> None:
        """Seal the active segment once its first message is older than
        `quiet_roll_ms` (blocking): a partition that stopped taking messages
        gets its last data archived too."""
        sealed = log.sealed_segments()
        active_base = sealed[-1].next_offset if sealed else log.first_offset
        if log.next_offset <= active_base:
            return  # empty
        first = log.read(active_base, 1).data
        if not first:
            return
        if read_header(first).first_timestamp < self._now_ms() - self.settings.quiet_roll_ms:
            log.roll()

    async def _apply_horizons(self, partition: ArchivedPartition, horizons: Horizons) -> None:
        log = partition.log
        manifest = partition.manifest
        sealed = await asyncio.to_thread(log.sealed_segments)
        local_bytes = log.size_bytes - sum(segment.size_bytes for segment in sealed)
        now = self._now_ms()
        where = plan(
            manifest.segments,
            sealed,
            log.first_offset,
            local_bytes,
            manifest.start_offset,
            now,
            horizons,
        )
        if where.start_offset > manifest.start_offset:
            await self.record(partition, StartMoved(where.start_offset))
        first = manifest.first_offset
        if first is not None and where.retire_before > first:
            await self.record(partition, Retired(where.retire_before, now))
        if where.local_delete_before > log.first_offset:
            await asyncio.to_thread(log.delete_before, where.local_delete_before)

    async def _purge(self, partition: ArchivedPartition) -> None:
        due = partition.manifest.due_for_purge(self._now_ms(), self.settings.purge_grace_ms)
        if not due:
            return
        for key in due:
            await self.store.delete(key)
        await self.record(partition, Purged(due))

    async def reconcile(self) -> ReconcileReport:
        report = await reconcile(
            self.store,
            "topics",
            self.holds,
            now_ms=self._now_ms(),
            min_age_ms=self.settings.orphan_age_ms,
            partition_held=lambda topic, index: (topic, index) in self.partitions,
        )
        self.orphans_removed += len(report.removed)
        return report

    # -- reads -----------------------------------------------------------------------------

    def start_offset(self, topic: str, index: int, local_first: int) -> int:
        """Where the topic's readers start: the archive's start when it holds
        data below the local disk's."""
        partition = self.partitions.get((topic, index))
        if partition is None or partition.manifest.first_offset is None:
            return local_first
        return min(
            local_first, max(partition.manifest.start_offset, partition.manifest.first_offset)
        )

    def audit_start(self, topic: str, index: int, local_first: int) -> int:
        """Where audit reads (`include_deleted`) start: the first offset any
        archived object holds, or the local disk's start."""
        partition = self.partitions.get((topic, index))
        first = partition.manifest.first_offset if partition is not None else None
        return local_first if first is None else min(first, local_first)

    async def read(
        self, topic: str, index: int, offset: int, max_bytes: int, *, include_deleted: bool = False
    ) -> bytes | None:
        """Whole batches from the one holding `offset`, from the archive (None:
        the archive does not hold it, or not for this reader)."""
        partition = self.partitions.get((topic, index))
        if partition is None:
            return None
        segment = partition.manifest.segment_for(offset, include_deleted=include_deleted)
        if segment is None:
            return None
        try:
            return await self.reader.read(segment, offset, max_bytes)
        except ObjectNotFoundError:
            raise self.missing(partition, segment, offset, include_deleted) from None
        except ArchiveDamagedError as error:
            # the reader answers CORRUPT; the operator learns of it here
            self.damaged_reads += 1
            logger.error(  # noqa: TRY400 (the error says it all)
                "archive: %s:%d offset %d: a damaged object: %s", topic, index, offset, error
            )
            raise
        except ArchiveUnavailableError as error:  # the reader answers UNAVAILABLE
            self.unavailable_reads += 1
            logger.warning("archive: %s:%d offset %d: %s", topic, index, offset, error)
            raise

    def missing(
        self,
        partition: ArchivedPartition,
        segment: ArchivedSegment,
        offset: int,
        include_deleted: bool,
    ) -> LogError:
        """What a read answers when the store has no object of `segment`:
        out of range if retention retired it meanwhile (its objects go after
        the grace), else the offsets are lost until it is put back (CORRUPT)."""
        if partition.manifest.segment_for(offset, include_deleted=include_deleted) != segment:
            return OffsetOutOfRangeError(f"offset {offset} left the archive during the read")
        self.damaged_reads += 1
        error = ArchivedObjectMissingError(
            f"offsets {segment.base_offset}..{segment.next_offset - 1} are lost: the archived"
            f" object {segment.key} the manifest names is missing from {self.store.description}"
        )
        logger.error(
            "archive: %s:%d offset %d: %s", partition.topic_name, partition.index, offset, error
        )
        return error

    # -- topics ----------------------------------------------------------------------------

    async def delete_topic(self, topic: str) -> int:
        """Delete every object of a deleted topic; returns how many."""
        self.detach_topic(topic)
        keys = [info.key async for info in self.store.list(topic_prefix(topic))]
        for key in keys:
            await self.store.delete(key)
        return len(keys)

    async def archived_topics(self) -> dict[str, dict[int, int]]:
        """Topics with a manifest copy in the store: partition -> newest version."""
        found: dict[str, dict[int, int]] = {}
        async for info in self.store.list("topics"):
            parsed = parse_manifest_key(info.key)
            if parsed is not None:
                topic, partition, version = parsed
                versions = found.setdefault(topic, {})
                versions[partition] = max(version, versions.get(partition, 0))
        return found

    async def manifest_copy(self, topic: str, partition: int, version: int) -> dict[str, object]:
        raw = await self.store.get(manifest_key(topic, partition, version))
        document = json.loads(raw)
        if not isinstance(document, dict):
            raise ArchiveError(f"the manifest copy of {topic}:{partition} is not an object")
        return document

    def status(self, topic: str | None = None) -> list[PartitionStatus]:
        found: list[PartitionStatus] = []
        for (name, index), partition in sorted(self.partitions.items()):
            if topic is not None and name != topic:
                continue
            manifest = partition.manifest
            upload: UploadStatus = self.uploader.status(name, index)
            end = manifest.archived_end
            waiting = [
                s for s in partition.log.sealed_segments() if end is None or s.base_offset >= end
            ]
            lag = sum(s.size_bytes for s in waiting)
            lag_ms = max(0, self._now_ms() - waiting[0].max_timestamp) if waiting else 0
            found.append(
                PartitionStatus(
                    topic=name,
                    partition=index,
                    archived_segments=len(manifest.segments),
                    archived_bytes=sum(s.size for s in manifest.segments),
                    archived_from=manifest.first_offset,
                    archived_to=end,
                    start_offset=self.start_offset(name, index, partition.log.first_offset),
                    local_from=partition.log.first_offset,
                    local_to=partition.log.next_offset,
                    upload_lag_bytes=lag,
                    upload_lag_ms=lag_ms,
                    retiring=len(manifest.retiring),
                    last_error=upload.last_error,
                )
            )
        return found

    async def close(self) -> None:
        await self.reader.close()


def restored_state(document: dict[str, object]) -> ManifestState:
    """A manifest from its copy in the store (what `logq archive restore` starts from)."""
    segments = document.get("segments")
    if not isinstance(segments, list):
        raise ArchiveError("a manifest copy without its segments")
    start = document.get("start_offset", 0)
    version = document.get("version", 0)
    return ManifestState(
        [
            ArchivedSegment(
                str(s["key"]),
                int(s["base_offset"]),
                int(s["next_offset"]),
                int(s["size"]),
                int(s["first_timestamp"]),
                int(s["max_timestamp"]),
            )
            for s in segments
        ],
        int(start) if isinstance(start, int) else 0,
        [],
        int(version) if isinstance(version, int) else 0,
    )
