"""Retention of an archived partition: three horizons instead of one.

- `local_retention` (time, bytes): how much stays on the broker's disk. Only
  segments already archived may go: nothing un-archived is ever deleted for
  local retention, whatever the disk holds.
- `retention` (time, bytes): what readers and groups see. The topic's start
  moves up past segments (archived or local) that fall out of it.
- `archive_retention` (time, ≥ retention): segments below the topic's start
  stay in the archive for audit reads (`include_deleted`) until they fall out
  of this too; then they are retired (and their objects deleted after a
  grace period).

`plan` is pure: given the partition's segments and the settings, it says
where each horizon stands now. Applying the same plan twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from logq.archive.manifest import ArchivedSegment
from logq.log import SealedSegment


@dataclass(frozen=True, slots=True)
class Horizons:
    retention_ms: int | None
    retention_bytes: int | None
    local_retention_ms: int | None
    local_retention_bytes: int | None
    archive_retention_ms: int | None  # None: as long as retention


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    start_offset: int  # the topic's start: readers see nothing below it
    retire_before: int  # archived segments wholly below it leave the archive
    local_delete_before: int  # local sealed segments wholly below it go


@dataclass(frozen=True, slots=True)
class _Span:
    base_offset: int
    next_offset: int
    size: int
    max_timestamp: int


def plan(
    archived: Sequence[ArchivedSegment],
    local: Sequence[SealedSegment],
    local_first_offset: int,
    active_bytes: int,
    start_offset: int,
    now_ms: int,
    horizons: Horizons,
) -> RetentionPlan:
    """Where the horizons stand (see the module doc). `local` are the sealed
    local segments; the active one (`active_bytes`) is never deleted here."""
    archived_end = archived[-1].next_offset if archived else None
    spans: list[_Span] = [
        _Span(s.base_offset, s.next_offset, s.size, s.max_timestamp) for s in archived
    ]
    for segment in local:
        if archived_end is None or segment.base_offset >= archived_end:
            spans.append(
                _Span(
                    segment.base_offset,
                    segment.next_offset,
                    segment.size_bytes,
                    segment.max_timestamp,
                )
            )
    # the topic's start: past what retention (time, bytes) lets go
    start = max(start_offset, spans[0].base_offset if spans else local_first_offset)
    total = sum(span.size for span in spans) + active_bytes
    for span in spans:
        if span.next_offset <= start:
            total -= span.size
            continue
        old = (
            horizons.retention_ms is not None
            and span.max_timestamp < now_ms - horizons.retention_ms
        )
        big = horizons.retention_bytes is not None and total - span.size >= horizons.retention_bytes
        if not (old or big):
            break
        start = span.next_offset
        total -= span.size
    # the archive keeps what lies below the start for audit, until archive retention
    retire_before = archived[0].base_offset if archived else 0
    audit_ms = horizons.archive_retention_ms
    for old_segment in archived:
        if old_segment.next_offset > start:
            break
        if audit_ms is not None and old_segment.max_timestamp >= now_ms - audit_ms:
            break
        retire_before = old_segment.next_offset
    # local disk: archived segments past local retention, or below the start
    local_before = local_first_offset
    local_total = sum(segment.size_bytes for segment in local) + active_bytes
    for segment in local:
        if archived_end is None or segment.next_offset > archived_end:
            break  # not archived yet: it stays
        below_start = segment.next_offset <= start
        old = (
            horizons.local_retention_ms is not None
            and segment.max_timestamp < now_ms - horizons.local_retention_ms
        )
        big = (
            horizons.local_retention_bytes is not None
            and local_total - segment.size_bytes >= horizons.local_retention_bytes
        )
        if not (below_start or old or big):
            break
        local_before = segment.next_offset
        local_total -= segment.size_bytes
    return RetentionPlan(start, retire_before, local_before)
