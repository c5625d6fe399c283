"""Where partition logs, metadata and delivery state live: a data dir or memory.

The broker asks this module for logs by topic and partition and never builds
paths itself, so a PostgreSQL or replicated backend can slot in here later.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logq.log import FileLog, LogConfig, MemoryLog, PartitionLog, durable
from logq.log.commit_journal import CommitJournal

TOPICS_DIR = "topics"
STATE_DIR = "state"
TRACE_DIR = "trace"
COMMIT_DIR = "commit"
METADATA_NAME = "metadata.json"


@dataclass(frozen=True, slots=True)
class Storage:
    """A data directory, or None for everything in memory."""

    directory: Path | None

    @property
    def in_memory(self) -> bool:
        return self.directory is None

    def open_log(self, topic: str, partition: int, config: LogConfig) -> PartitionLog:
        if self.directory is None:
            return MemoryLog(config)
        return FileLog(self.directory / TOPICS_DIR / topic / str(partition), config)

    def open_state_log(self, topic: str, partition: int, config: LogConfig) -> PartitionLog:
        """The state log beside a partition's data log (state/partition_state.py)."""
        if self.directory is None:
            return MemoryLog(config)
        return FileLog(self.directory / TOPICS_DIR / topic / f"{partition}.state", config)

    def has_topic_files(self, topic: str) -> bool:
        return self.directory is not None and (self.directory / TOPICS_DIR / topic).exists()

    def delete_topic(self, topic: str) -> None:
        if self.directory is not None:
            path = self.directory / TOPICS_DIR / topic
            if path.exists():
                shutil.rmtree(path)
                durable.sync_directory(path.parent)

    def open_commit_journal(self) -> CommitJournal | None:
        """The broker-wide commit journal (log/commit_journal.py); none in memory."""
        if self.directory is None:
            return None
        return CommitJournal(self.directory / COMMIT_DIR)

    @property
    def state_directory(self) -> Path | None:
        return None if self.directory is None else self.directory / STATE_DIR

    @property
    def trace_directory(self) -> Path | None:
        return None if self.directory is None else self.directory / TRACE_DIR

    def load_metadata(self) -> dict[str, Any]:
        if self.directory is None:
            return {}
        path = self.directory / METADATA_NAME
        if not path.exists():
            return {}
        loaded = json.loads(path.read_bytes())
        assert isinstance(loaded, dict)
        return loaded

    def save_metadata(self, metadata: dict[str, Any]) -> None:
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            durable.write_atomic(
                self.directory / METADATA_NAME, json.dumps(metadata, indent=1).encode()
            )
