"""The storage backend in memory (see backend.py for the contract): embedded
brokers, tests. Nothing survives the process; every call is quick memory
work, so callers run it inline (`calls_block` is False)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from logq.log.commit_journal import CommitJournal
from logq.log.config import LogConfig
from logq.log.errors import InvalidKeyError, MetadataConflictError, MetadataTooLargeError
from logq.log.memory_log import MemoryLog
from logq.log.metadata_slots import VALUE_BYTES_MAX, check_key
from logq.log.storage import PartitionLog


class MemoryBackend:
    """Logs and metadata records in the process's memory."""

    def __init__(self) -> None:
        self._records: dict[str, tuple[int, bytes]] = {}
        self._topics: set[str] = set()  # topics with logs made and not deleted
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()

    @property
    def calls_block(self) -> bool:
        return False

    @property
    def persistent(self) -> bool:
        return False

    # -- logs -------------------------------------------------------------------------

    def _check_topic(self, topic: str) -> None:
        if not topic or "/" in topic or "\0" in topic:
            raise InvalidKeyError(f"{topic[:80]!r} cannot name a topic")

    def close_logs(self, logs: Sequence[PartitionLog]) -> None:
        for log in logs:
            log.close()

    def open_log(self, topic: str, partition: int, config: LogConfig) -> PartitionLog:
        self._check_topic(topic)
        assert partition >= 0
        with self._lock:
            self._topics.add(topic)
        return MemoryLog(config)

    def open_state_log(self, topic: str, partition: int, config: LogConfig) -> PartitionLog:
        return self.open_log(topic, partition, config)

    def has_topic_files(self, topic: str) -> bool:
        with self._lock:
            return topic in self._topics

    def delete_topic(self, topic: str) -> None:
        with self._lock:
            self._topics.discard(topic)

    def set_retention(
        self, log: PartitionLog, retention_ms: int | None, retention_bytes: int | None
    ) -> None:
        assert isinstance(log, MemoryLog), "a log this backend opened"
        log.config = replace(log.config, retention_ms=retention_ms, retention_bytes=retention_bytes)

    def open_commit_journal(self) -> CommitJournal | None:
        return None

    @property
    def state_directory(self) -> Path | None:
        return None

    @property
    def trace_directory(self) -> Path | None:
        return None

    # -- metadata records -------------------------------------------------------------

    def get(self, key: str) -> tuple[int, bytes] | None:
        check_key(key)
        with self._lock:
            return self._records.get(key)

    def put(self, key: str, value: bytes, expected_version: int | None) -> int:
        check_key(key)
        if len(value) > VALUE_BYTES_MAX:
            raise MetadataTooLargeError(
                f"metadata record {key!r} is {len(value)} bytes, the limit is {VALUE_BYTES_MAX}"
            )
        with self._lock:
            current = self._records.get(key)
            version = None if current is None else current[0]
            if version != expected_version:
                raise MetadataConflictError(
                    f"metadata record {key!r} is at version {version}, not {expected_version}"
                )
            self._records[key] = ((version or 0) + 1, bytes(value))
            self._stats["puts"] += 1
            self._stats["bytes_written"] += len(value)
        return (version or 0) + 1

    def delete(self, key: str, expected_version: int) -> None:
        check_key(key)
        with self._lock:
            current = self._records.get(key)
            version = None if current is None else current[0]
            if current is None or version != expected_version:
                raise MetadataConflictError(
                    f"metadata record {key!r} is at version {version}, not {expected_version}"
                )
            del self._records[key]
            self._stats["deletes"] += 1

    def list(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(key for key in self._records if key.startswith(prefix))

    def legacy_metadata(self) -> bytes | None:
        return None

    def retire_legacy_metadata(self) -> None:
        """Memory never held a legacy document."""

    def file_statistics(self) -> dict[str, int] | None:
        return None  # memory logs hold no files

    def metadata_statistics(self) -> dict[str, int]:
        with self._lock:
            return {
                "slots_damaged": 0,
                "records_damaged": 0,
                "puts": self._stats["puts"],
                "deletes": self._stats["deletes"],
                "bytes_written": self._stats["bytes_written"],
            }

    def close(self) -> None:
        """Memory holds nothing to give back."""
