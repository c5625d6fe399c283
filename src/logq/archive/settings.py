"""The archiver's settings: a module of their own, so that a broker's
configuration can name them without loading the archive (its object
store client, manifests and reader), which a broker without an archive
never uses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ArchiverSettings:
    cache_bytes: int = 1 << 30
    chunk_bytes: int = 4 << 20
    upload_concurrency: int = 4
    upload_bytes_per_s: int = 0  # 0: no bound
    remote_reads_max: int = 8
    remote_read_timeout_ms: int = 10_000  # a store request's answer, or UNAVAILABLE
    purge_grace_ms: int = 5 * 60_000
    orphan_age_ms: int = 60 * 60_000
    # the active segment of a quiet partition is sealed (and so archived)
    # once its first message is this old, though it never filled up
    quiet_roll_ms: int = 60 * 60_000
