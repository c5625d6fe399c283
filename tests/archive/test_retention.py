"""The three horizons of an archived partition: local disk, the topic's
start, and the audit archive."""

from __future__ import annotations

from logq.archive.manifest import ArchivedSegment
from logq.archive.retention import Horizons, plan
from logq.log import SealedSegment

HOUR = 3_600_000


def archived(*bounds: tuple[int, int, int]) -> list[ArchivedSegment]:
    return [ArchivedSegment(f"k{b}", b, n, 100, t, t) for b, n, t in bounds]


def local(*bounds: tuple[int, int, int]) -> list[SealedSegment]:
    return [SealedSegment(b, n, 100, t) for b, n, t in bounds]


def horizons(**given: int | None) -> Horizons:
    values: dict[str, int | None] = {
        "retention_ms": None,
        "retention_bytes": None,
        "local_retention_ms": None,
        "local_retention_bytes": None,
        "archive_retention_ms": None,
    }
    values.update(given)
    return Horizons(**values)


def test_local_disk_keeps_what_is_not_archived_whatever_its_age() -> None:
    now = 100 * HOUR
    segments = local((0, 10, 0), (10, 20, HOUR), (20, 30, 2 * HOUR))
    result = plan(archived((0, 10, 0)), segments, 0, 50, 0, now, horizons(local_retention_ms=HOUR))
    assert result.local_delete_before == 10  # only the archived one goes
    assert result.start_offset == 0  # readers still see everything (archive + local)


def test_local_retention_by_bytes_counts_the_active_segment() -> None:
    segments = local((0, 10, 0), (10, 20, 0), (20, 30, 0))
    done = archived((0, 10, 0), (10, 20, 0), (20, 30, 0))
    result = plan(done, segments, 0, 100, 0, 0, horizons(local_retention_bytes=200))
    assert result.local_delete_before == 20  # 400 bytes held, 200 kept: two go


def test_the_start_moves_by_retention_and_audit_keeps_the_rest() -> None:
    now = 100 * HOUR
    done = archived((0, 10, 0), (10, 20, 50 * HOUR), (20, 30, 99 * HOUR))
    settings = horizons(retention_ms=10 * HOUR, archive_retention_ms=80 * HOUR)
    result = plan(done, local((20, 30, 99 * HOUR)), 20, 0, 0, now, settings)
    assert result.start_offset == 20
    assert result.retire_before == 10  # 0-10 is past the audit horizon; 10-20 kept for audit
    assert result.local_delete_before == 20


def test_without_an_audit_horizon_what_falls_out_of_retention_is_retired() -> None:
    now = 100 * HOUR
    done = archived((0, 10, 0), (10, 20, 50 * HOUR))
    result = plan(done, local(), 20, 0, 0, now, horizons(retention_ms=10 * HOUR))
    assert result.start_offset == 20 and result.retire_before == 20


def test_planning_twice_changes_nothing() -> None:
    now = 100 * HOUR
    done = archived((0, 10, 0), (10, 20, 50 * HOUR), (20, 30, 99 * HOUR))
    settings = horizons(retention_bytes=150, archive_retention_ms=60 * HOUR)
    first = plan(done, local((20, 30, 99 * HOUR)), 20, 0, 0, now, settings)
    again = plan(done, local((20, 30, 99 * HOUR)), 20, 0, first.start_offset, now, settings)
    assert first == again
    assert first.start_offset == 10  # 300 bytes held, at least 150 kept: one goes
