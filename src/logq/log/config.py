"""Settings of one partition log, each with its unit last and its bounds.

Every limit is validated when the config is built, and the error names the
setting, the value given and the allowed range.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum

from logq.log.errors import InvalidConfigError

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
DAY_MS = 24 * 3600 * 1000


class FsyncPolicy(StrEnum):
    ALWAYS = "always"  # an append returns once its bytes are on disk (group commit)
    INTERVAL = "interval"  # a flush at most every fsync_interval_ms
    NEVER = "never"  # the OS decides; only rolls, checkpoints and close flush


# (minimum, maximum) of each integer setting; None means no upper bound.
_BOUNDS: dict[str, tuple[int, int | None]] = {
    "segment_bytes": (4 * KIB, 4 * GIB),  # positions in the offset index are 32-bit
    "segment_ms": (1, None),
    "index_interval_bytes": (64, 64 * MIB),
    "batch_bytes_max": (1 * KIB, 256 * MIB),
    "batch_records_max": (1, 1_000_000),
    "fsync_interval_ms": (1, 3_600_000),
    "checkpoint_interval_bytes": (1, None),
    "read_bytes_max": (1 * KIB, 256 * MIB),
}


@dataclass(frozen=True, slots=True)
class LogConfig:
    """How one partition log cuts, indexes, flushes and forgets its data."""

    # A segment is rolled when it would pass this size (a larger batch gets
    # a segment of its own)...
    segment_bytes: int = 256 * MIB
    # ...or when its first batch is older than this (by record time).
    segment_ms: int = 7 * DAY_MS
    # One sparse index entry per this many bytes of batches.
    index_interval_bytes: int = 4 * KIB
    # Largest batch accepted for append (bytes, compressed as stored).
    batch_bytes_max: int = 8 * MIB
    # Most records in one batch; also bounds decompression work.
    batch_records_max: int = 100_000
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    fsync_interval_ms: int = 1000
    # A recovery checkpoint is written after this many durable bytes, so
    # recovery scans at most this much of the tail after a crash.
    checkpoint_interval_bytes: int = 64 * MIB
    # Largest read asked of the log in one call.
    read_bytes_max: int = 64 * MIB
    # Retention: None keeps forever.
    retention_ms: int | None = 7 * DAY_MS
    retention_bytes: int | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in _BOUNDS:
                minimum, maximum = _BOUNDS[field.name]
                _check_int(field.name, value, minimum, maximum)
        for name in ("retention_ms", "retention_bytes"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 0, None)
        if not isinstance(self.fsync, FsyncPolicy):
            try:
                object.__setattr__(self, "fsync", FsyncPolicy(self.fsync))
            except ValueError:
                choices = ", ".join(policy.value for policy in FsyncPolicy)
                raise InvalidConfigError(
                    f"fsync is {self.fsync!r}, expected one of: {choices}"
                ) from None


def _check_int(name: str, value: object, minimum: int, maximum: int | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise InvalidConfigError(f"{name} is {value}, it must be at least {minimum}{upper}")
