"""Removing what no manifest references: the archive's garbage collector.

Objects are orphaned by uploads interrupted after their put (a crash before
the manifest recorded them), by retried uploads (each try has its own name),
by deletions that crashed half-way, and by topics deleted while the store
was down. The reconciler lists a prefix and deletes every segment object
that the manifest does not reference, once it is older than a safety bound
(an upload still in flight, whose manifest record is on its way, is never
older than that). Manifest copies older than the newest few are removed
too, and every copy of a partition the archive no longer holds (a topic
deleted while the store was down, or a deletion cut short by a crash),
once it is as old as the same bound. Keys it does not recognise are left alone: it deletes only what this
archive wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from logq.archive.names import parse_manifest_key, parse_segment_key
from logq.archive.store import ArchiveStore

MANIFEST_COPIES_KEPT = 3


@dataclass(slots=True)
class ReconcileReport:
    listed: int = 0
    removed: list[str] = field(default_factory=list)
    young: int = 0  # unreferenced, but within the safety bound: left for a later pass


async def reconcile(
    store: ArchiveStore,
    prefix: str,
    referenced: Callable[[str], bool],
    *,
    now_ms: int,
    min_age_ms: int,
    partition_held: Callable[[str, int], bool] | None = None,
) -> ReconcileReport:
    """Delete the objects under `prefix` that `referenced(key)` disowns and
    that are older than `min_age_ms`, and the manifest copies of partitions
    `partition_held(topic, partition)` disowns (see the module doc)."""
    report = ReconcileReport()
    manifests: dict[tuple[str, int], list[tuple[int, str]]] = {}
    doomed: list[str] = []
    async for info in store.list(prefix):
        report.listed += 1
        manifest = parse_manifest_key(info.key)
        if manifest is not None:
            topic, partition, version = manifest
            if partition_held is None or partition_held(topic, partition):
                manifests.setdefault((topic, partition), []).append((version, info.key))
            elif now_ms - info.modified_ms < min_age_ms:
                report.young += 1
            else:
                doomed.append(info.key)
            continue
        if parse_segment_key(info.key) is None or referenced(info.key):
            continue
        if now_ms - info.modified_ms < min_age_ms:
            report.young += 1
            continue
        doomed.append(info.key)
    for copies in manifests.values():
        copies.sort()
        doomed.extend(key for _, key in copies[:-MANIFEST_COPIES_KEPT])
    for key in doomed:
        await store.delete(key)
        report.removed.append(key)
    return report
