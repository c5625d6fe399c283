"""The broker's side of tiered storage: its archive, wired to its partitions.

The archive itself (logq/archive) knows objects, manifests and segments;
this component gives it the broker's partitions: each partition of a topic
with `archive: true` gets a TieredLog over its local log (so every reader
reaches the archive), its manifest from what its state log recovered, and
its manifest records written through the broker's writer to that state
log. A task of its own runs the periodic work (uploads, horizons, deletion
after the grace, the reconciler), so a slow or unreachable store never
holds up the broker's timer, publishes or local reads.

The archive's modules (the object store client, manifests, the reader) are
imported when a broker makes its archive: a broker without one, and every
restart of it, does not load them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from logq.archive.settings import ArchiverSettings
from logq.archive.tiered_log import TieredLog
from logq.broker.settings import TopicSettings
from logq.log import PartitionLog

if TYPE_CHECKING:
    from logq.archive.archiver import PartitionStatus
    from logq.archive.retention import Horizons

logger = logging.getLogger(__name__)

CACHE_DIRECTORY = "archive-cache"


@dataclass(frozen=True, slots=True)
class ArchiveConfig:
    """`archive:` in the config file, `--archive URL`, `LOGQ_ARCHIVE`."""

    url: str
    endpoint: str | None = None
    region: str | None = None
    settings: ArchiverSettings = field(default_factory=ArchiverSettings)
    tick_ms: int = 10_000  # how often each archived partition is looked at
    reconcile_interval_ms: int = 3_600_000
    cache_directory: Path | None = None  # default: <data dir>/archive-cache


def horizons(settings: TopicSettings) -> Horizons:
    from logq.archive.retention import Horizons  # noqa: PLC0415 (see the module doc)

    return Horizons(
        retention_ms=settings.retention_ms,
        retention_bytes=settings.retention_bytes,
        local_retention_ms=settings.local_retention_ms,
        local_retention_bytes=settings.local_retention_bytes,
        archive_retention_ms=settings.archive_retention_ms,
    )


class BrokerArchive:
    """See the module doc."""

    def __init__(
        self,
        config: ArchiveConfig,
        data_dir: Path | None,
        *,
        write_record: Callable[[str, int, bytes], Awaitable[object]],
        describe: Callable[[str, int], dict[str, object]],
        settings_of: Callable[[str], TopicSettings | None],
        now_ms: Callable[[], int],
    ) -> None:
        directory = config.cache_directory or (
            data_dir / CACHE_DIRECTORY if data_dir is not None else None
        )
        if directory is None:
            raise ValueError("an archive needs a data directory for its cache (or cache_directory)")
        from logq.archive.archiver import Archiver  # noqa: PLC0415 (see the module doc)
        from logq.archive.store import ArchiveLocation, open_store  # noqa: PLC0415

        self.config = config
        self.archiver = Archiver(
            open_store(ArchiveLocation(config.url, config.endpoint, config.region)),
            directory,
            config.settings,
            write_record=write_record,
            describe=describe,
            now_ms=now_ms,
        )
        self._settings_of = settings_of
        self._now_ms = now_ms
        self._task: asyncio.Task[None] | None = None
        self._reconciled_ms = now_ms()

    @property
    def description(self) -> str:
        return self.archiver.store.description

    def wrap(
        self,
        topic: str,
        index: int,
        log: PartitionLog,
        readable_end: Callable[[], int],
        snapshot: bytes,
        records: list[bytes],
    ) -> PartitionLog:
        """The partition's log as its readers should see it: the local log
        over the archive (its manifest as the state log recovered it)."""
        local = log.local if isinstance(log, TieredLog) else log
        partition = self.archiver.attach(
            topic, index, local, readable_end, snapshot or None, records
        )
        return TieredLog(local, partition, asyncio.get_running_loop())

    def snapshot(self, topic: str, index: int) -> bytes:
        return self.archiver.snapshot(topic, index) or b""

    def status(self, topic: str | None = None) -> list[PartitionStatus]:
        return self.archiver.status(topic)

    async def delete_topic(self, topic: str) -> None:
        try:
            removed = await self.archiver.delete_topic(topic)
        except Exception as error:  # the reconciler removes what is left
            logger.warning("archive: objects of deleted topic %r left for later: %s", topic, error)
            return
        logger.info("archive: %d objects of deleted topic %r removed", removed, topic)

    # -- the periodic work ----------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_ms / 1000)
            try:
                await self.tick()
            except Exception:
                logger.exception("archive: the periodic work failed")

    async def tick(self) -> None:
        """One round over every archived partition, and the reconciler when due."""
        for (topic, _), partition in list(self.archiver.partitions.items()):
            settings = self._settings_of(topic)
            if settings is not None:
                await self.archiver.tick(partition, horizons(settings))
        now = self._now_ms()
        if now - self._reconciled_ms >= self.config.reconcile_interval_ms:
            self._reconciled_ms = now
            try:
                report = await self.archiver.reconcile()
            except Exception as error:
                logger.warning("archive: reconciliation failed: %s", error)
            else:
                if report.removed:
                    logger.info("archive: %d orphaned objects removed", len(report.removed))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.archiver.close()
