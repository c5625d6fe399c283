"""The storage backend: everything the broker keeps, behind one Protocol.

A backend opens partition logs and their state logs by topic and partition,
deletes a topic's logs, and keeps small metadata records by key with
versions and compare-and-swap. The broker never builds a path: the file
backend (`file_backend.py`) lays things out in a data directory, the memory
backend (`memory_backend.py`) keeps them in the process, and later backends
(PostgreSQL, replicated) join behind the same Protocol and the same contract
suite (tests/log/test_backend_contract.py).

Metadata records: `get` gives a key's (version, value) or None; `put` with
the version the caller read (None: the key must not exist) stores a new
value with the next version, or raises MetadataConflictError (`CONFLICT`)
when the record moved on meanwhile; `delete` likewise. Versions of a key
start at 1 and rise by one per put while it exists (a deleted key starts
again at 1). A put or delete returns once it is durable. A record whose
every copy fails its checks raises MetadataDamagedError (`CORRUPT`) from
get, put and delete alike: it is never overwritten silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from logq.log.commit_journal import CommitJournal
from logq.log.config import LogConfig
from logq.log.storage import PartitionLog


class StorageBackend(Protocol):
    """Where partition logs, state logs and metadata records live."""

    @property
    def calls_block(self) -> bool:
        """True when calls wait on a disk (or a network): callers on an event
        loop run them in a thread. False when every call is quick memory work
        that may run inline."""
        ...

    @property
    def persistent(self) -> bool:
        """True when what is stored survives a restart: there is data to
        flush and sync on a timer, disk space to watch, segments to scrub."""
        ...

    # -- logs -------------------------------------------------------------------------

    def open_log(self, topic: str, partition: int, config: LogConfig) -> PartitionLog:
        """The data log of one partition, created empty when new."""
        ...

    def close_logs(self, logs: Sequence[PartitionLog]) -> None:
        """Close many logs of this backend at once (a shutdown), each flushed
        as `close` does; the work may be shared between them."""
        ...

    def open_state_log(self, topic: str, partition: int, config: LogConfig) -> PartitionLog:
        """The state log kept beside one partition's data log (delivery state
        that moves and replicates with the partition), created empty when new."""
        ...

    def has_topic_files(self, topic: str) -> bool:
        """True when anything of `topic`'s logs is stored."""
        ...

    def delete_topic(self, topic: str) -> None:
        """Remove every data and state log of `topic` (closed first by the
        caller), durably; nothing stored is fine."""
        ...

    def set_retention(
        self, log: PartitionLog, retention_ms: int | None, retention_bytes: int | None
    ) -> None:
        """Change the retention of a log this backend opened; the next
        `apply_retention` follows it."""
        ...

    def open_commit_journal(self) -> CommitJournal | None:
        """The broker-wide commit journal (commit_journal.py); None when
        writes need no commit (memory)."""
        ...

    @property
    def state_directory(self) -> Path | None:
        """Where the broker-wide delivery journal lives; None in memory."""
        ...

    @property
    def trace_directory(self) -> Path | None:
        """Where the trace journal lives; None in memory."""
        ...

    # -- metadata records -------------------------------------------------------------

    def get(self, key: str) -> tuple[int, bytes] | None:
        """The key's (version, value), None when there is no such record."""
        ...

    def put(self, key: str, value: bytes, expected_version: int | None) -> int:
        """Store `value` if the record is at `expected_version` (None: absent);
        return the new version once durable."""
        ...

    def delete(self, key: str, expected_version: int) -> None:
        """Remove the record if it is at `expected_version`, durably."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Every stored key that starts with `prefix`, sorted (damaged ones
        included: `get` says they are)."""
        ...

    def legacy_metadata(self) -> bytes | None:
        """The whole-metadata document of releases before per-key records
        (metadata.json), while it is there."""
        ...

    def retire_legacy_metadata(self) -> None:
        """Remove the legacy document durably, once its content is stored
        as records (each put already durable)."""
        ...

    def metadata_statistics(self) -> dict[str, int]:
        """Counters of the metadata records: slots found damaged, records
        found damaged, puts, bytes written."""
        ...

    def file_statistics(self) -> dict[str, int] | None:
        """The shared descriptor cache of the logs' files (`open_files`,
        `open_files_max`, `evictions`), None when logs hold no files."""
        ...

    def close(self) -> None:
        """Give back what the backend holds; the logs are closed by their owner."""
        ...
