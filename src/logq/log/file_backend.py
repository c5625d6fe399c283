"""The storage backend in a data directory (see backend.py for the contract).

    topics/<topic>/<partition>/         a partition's data log (file_log.py)
    topics/<topic>/<partition>.state/   its state log
    meta/<key>.a, meta/<key>.b          a metadata record's two slots (metadata_slots.py)
    commit/, state/, trace/             the commit, delivery and trace journals
    metadata.json                       the document of earlier releases, until migrated

A record costs the same whatever the number of others: a put writes one
slot file of its own. A put writes the slot not holding the current
version: the first time a slot file is made it is written whole to a
temporary file, fsynced and renamed (durable.write_atomic, directory
fsynced), so an existing slot file was once complete; afterwards it is
overwritten in place and fdatasynced. A crash during an overwrite leaves a
slot that fails its CRC and the other slot with the previous version: `get`
takes the valid slot with the higher version and reports (logs once,
counts) a slot that does not verify. Both slots failing is reported as a
damaged record (MetadataDamagedError) and refused by put and delete alike.

Calls on different keys run in parallel; calls on one key take turns (a
striped lock). The current (version, slot) of each key seen is cached: only
this process writes the directory (the broker holds its lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from logq.log import durable
from logq.log.commit_journal import CommitJournal
from logq.log.config import LogConfig
from logq.log.errors import (
    InvalidKeyError,
    MetadataConflictError,
    MetadataDamagedError,
    MetadataTooLargeError,
)
from logq.log.file_cache import FileCache
from logq.log.file_log import FileLog
from logq.log.metadata_slots import (
    HEADER_SIZE,
    KEY_BYTES_MAX,
    SLOT_SUFFIXES,
    VALUE_BYTES_MAX,
    SlotError,
    check_key,
    decode_slot,
    encode_slot,
    escape_segment,
    unescape_segment,
)
from logq.log.storage import PartitionLog

logger = logging.getLogger(__name__)

TOPICS_DIR = "topics"
META_DIR = "meta"
STATE_DIR = "state"
TRACE_DIR = "trace"
COMMIT_DIR = "commit"
LEGACY_METADATA_NAME = "metadata.json"
STATE_LOG_SUFFIX = ".state"
NAME_BYTES_MAX = 255
LOCK_STRIPES = 64
# The longest a slot file can be (a longer one fails its length check).
SLOT_BYTES_MAX = HEADER_SIZE + KEY_BYTES_MAX + VALUE_BYTES_MAX
READ_CHUNK_BYTES = 64 * 1024


class FileBackend:
    """Logs and metadata records in the data directory `directory`."""

    def __init__(self, directory: Path, files: FileCache | None = None) -> None:
        self.directory = directory
        # the descriptors every partition log of the broker shares
        self.files = files if files is not None else FileCache()
        # the fsyncs of topic directories its new partition logs share
        self.directory_syncs = durable.DirectorySyncs()
        self._meta = directory / META_DIR
        self._meta_name = os.fspath(self._meta)
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._current: dict[str, tuple[int, int]] = {}  # key -> (version, slot index)
        self._reported: set[Path] = set()  # slots reported not to verify
        self._damaged: set[str] = set()  # keys reported damaged
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        # The slot files the last listing saw of each key (a start lists
        # every record, then reads each: a slot it did not see is not looked
        # for), good while no put or delete came since it began.
        self._listing_lock = threading.Lock()
        self._changes = 0  # puts and deletes begun or ended
        self._listed: dict[str, set[int]] = {}
        self._listed_at = -1  # `_changes` when the listing began
        durable.make_directory(directory)

    @property
    def calls_block(self) -> bool:
        return True

    @property
    def persistent(self) -> bool:
        return True

    # -- logs -------------------------------------------------------------------------

    def _topic_path(self, topic: str) -> Path:
        return Path(self._topic_directory(topic))

    def _topic_directory(self, topic: str) -> str:
        """The topic's directory, checked, as a string (a broker makes two
        logs per partition at start: tens of thousands of paths, which
        pathlib would parse one by one)."""
        if (
            not topic
            or topic in (".", "..")
            or "/" in topic
            or "\0" in topic
            or len(topic.encode()) > NAME_BYTES_MAX - len(STATE_LOG_SUFFIX)
        ):
            raise InvalidKeyError(f"{topic[:80]!r} cannot name a topic directory")
        return os.path.join(self.directory, TOPICS_DIR, topic)

    def open_log(self, topic: str, partition: int, config: LogConfig) -> PartitionLog:
        assert partition >= 0
        directory = os.path.join(self._topic_directory(topic), str(partition))
        return FileLog(directory, config, files=self.files, directory_syncs=self.directory_syncs)

    def close_logs(self, logs: Sequence[PartitionLog]) -> None:
        """The logs that were opened share two syncs of each file system that
        holds them (a topic directory may be a mount of its own) instead of
        fsyncs of their own (a shutdown closes thousands): the first makes
        every write to them durable, then each overwrites its checkpoint in
        place (checksummed), and the second makes the checkpoints durable.
        Should a sync fail, each log still open closes on its own (and
        reports its own failure)."""
        opened = [log for log in logs if isinstance(log, FileLog) and log.opened]
        for log in logs:
            if not (isinstance(log, FileLog) and log.opened):
                log.close()  # never opened: nothing to flush
        if not opened:
            return
        try:
            names = {os.stat(log.directory_name).st_dev: log.directory_name for log in opened}
            devices = {device: Path(name) for device, name in names.items()}
            for directory in devices.values():
                durable.sync_filesystem(directory)
        except OSError as error:
            logger.warning("closing logs: syncfs failed (%s); each log fsyncs its own", error)
            for log in opened:
                log.close()
            return
        for log in opened:
            log.close(synced=True)
        try:
            for directory in devices.values():
                durable.sync_filesystem(directory)
        except OSError as error:  # the data is durable: only the checkpoints may be lost
            logger.warning(
                "closing logs: the checkpoints may not be durable (syncfs: %s); the next"
                " open of each scans from its last durable one",
                error,
            )

    def open_state_log(self, topic: str, partition: int, config: LogConfig) -> PartitionLog:
        assert partition >= 0
        directory = os.path.join(self._topic_directory(topic), f"{partition}{STATE_LOG_SUFFIX}")
        return FileLog(directory, config, files=self.files, directory_syncs=self.directory_syncs)

    def has_topic_files(self, topic: str) -> bool:
        return self._topic_path(topic).exists()

    def delete_topic(self, topic: str) -> None:
        durable.remove_tree(self._topic_path(topic))

    def set_retention(
        self, log: PartitionLog, retention_ms: int | None, retention_bytes: int | None
    ) -> None:
        assert isinstance(log, FileLog), "a log this backend opened"
        log.config = replace(log.config, retention_ms=retention_ms, retention_bytes=retention_bytes)

    def open_commit_journal(self) -> CommitJournal | None:
        return CommitJournal(self.directory / COMMIT_DIR)

    @property
    def state_directory(self) -> Path | None:
        return self.directory / STATE_DIR

    @property
    def trace_directory(self) -> Path | None:
        return self.directory / TRACE_DIR

    # -- metadata records -------------------------------------------------------------

    def _lock(self, key: str) -> threading.Lock:
        return self._locks[hash(key) % LOCK_STRIPES]

    def _slot_paths(self, names: list[str]) -> tuple[Path, Path]:
        parent = self._meta.joinpath(*names[:-1])
        return (parent / (names[-1] + SLOT_SUFFIXES[0]), parent / (names[-1] + SLOT_SUFFIXES[1]))

    def get(self, key: str) -> tuple[int, bytes] | None:
        names = check_key(key)
        with self._lock(key):
            found = self._read(key, names)
        return None if found is None else (found[0], found[2])

    def _read(self, key: str, names: list[str]) -> tuple[int, int, bytes] | None:
        """(version, slot index, value) of the key's newest valid slot; None
        when it has no slot file; MetadataDamagedError when none verifies."""
        valid: list[tuple[int, int, bytes]] = []
        bad: list[str] = []
        with self._listing_lock:
            listed = self._listed.get(key) if self._listed_at == self._changes else None
        # paths as strings, read with os calls: a start reads every record
        stem = "/".join((self._meta_name, *names))
        for index, suffix in enumerate(SLOT_SUFFIXES):
            if listed is not None and index not in listed:
                continue  # not there when listed, and nothing changed since
            name = stem + suffix
            data = _read_slot_file(name)
            if data is None:
                continue
            try:
                slot = decode_slot(key, data)
            except SlotError as error:
                path = Path(name)
                self._report_slot(key, path, str(error))
                bad.append(f"{path.name}: {error}")
                continue
            valid.append((slot.version, index, slot.value))
        if not valid and not bad:
            self._current.pop(key, None)
            return None
        if not valid:
            self._current.pop(key, None)
            if key not in self._damaged:
                self._damaged.add(key)
                self._count("records_damaged")
                logger.error("metadata record %r is damaged: %s", key, "; ".join(bad))
            raise MetadataDamagedError(
                f"metadata record {key!r} is damaged in both slots ({'; '.join(bad)})", key
            )
        newest = max(valid)
        self._current[key] = (newest[0], newest[1])
        return newest

    def _report_slot(self, key: str, path: Path, reason: str) -> None:
        if path in self._reported:
            return
        self._reported.add(path)
        self._count("slots_damaged")
        logger.warning(
            "metadata record %r: slot %s does not verify (%s); the other slot is used",
            key,
            path,
            reason,
        )

    def _count(self, name: str, amount: int = 1) -> None:
        with self._stats_lock:
            self._stats[name] += amount

    def _current_of(self, key: str, names: list[str]) -> tuple[int, int] | None:
        current = self._current.get(key)
        if current is not None:
            return current
        found = self._read(key, names)
        return None if found is None else (found[0], found[1])

    def put(self, key: str, value: bytes, expected_version: int | None) -> int:
        names = check_key(key)
        if len(value) > VALUE_BYTES_MAX:
            raise MetadataTooLargeError(
                f"metadata record {key!r} is {len(value)} bytes, the limit is {VALUE_BYTES_MAX}"
            )
        with self._lock(key), self._changing():
            current = self._current_of(key, names)
            version = None if current is None else current[0]
            if version != expected_version:
                raise MetadataConflictError(
                    f"metadata record {key!r} is at version {version}, not {expected_version}"
                )
            target = 0 if current is None else 1 - current[1]
            path = self._slot_paths(names)[target]
            data = encode_slot(key, (version or 0) + 1, value)
            if path.exists():
                durable.overwrite_in_place(path, data)
            else:
                durable.make_directory(path.parent)
                durable.write_atomic(path, data)
            self._reported.discard(path)
            self._current[key] = ((version or 0) + 1, target)
        self._count("puts")
        self._count("bytes_written", len(data))
        return (version or 0) + 1

    def delete(self, key: str, expected_version: int) -> None:
        names = check_key(key)
        with self._lock(key), self._changing():
            current = self._current_of(key, names)
            version = None if current is None else current[0]
            if current is None or version != expected_version:
                raise MetadataConflictError(
                    f"metadata record {key!r} is at version {version}, not {expected_version}"
                )
            paths = self._slot_paths(names)
            older, newer = paths[1 - current[1]], paths[current[1]]
            temps = [path.with_name(path.name + durable.TEMP_SUFFIX) for path in paths]
            # the older slot first: a crash between the two leaves the
            # current value, never the one before it
            durable.remove_files([older, *temps])
            durable.remove_files([newer])
            self._current.pop(key, None)
            self._reported.difference_update(paths)
        self._count("deletes")

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Around a put or delete: a listing begun before its end is not used."""
        self._note_change()
        try:
            yield
        finally:
            self._note_change()

    def _note_change(self) -> None:
        with self._listing_lock:
            self._changes += 1
            self._listed.clear()

    def list(self, prefix: str) -> list[str]:
        head = prefix.rpartition("/")[0]
        start = self._meta.joinpath(*(escape_segment(s) for s in head.split("/") if s))
        keys: set[str] = set()
        with self._listing_lock:
            began = self._changes
        slots: dict[str, set[int]] = {}
        for directory, _, files in os.walk(start):
            parts = Path(directory).relative_to(self._meta).parts
            segments = [unescape_segment(part) for part in parts]
            if any(segment is None for segment in segments):
                continue
            for name in files:
                stem, suffix = name[:-2], name[-2:]
                leaf = unescape_segment(stem) if suffix in SLOT_SUFFIXES else None
                if leaf is None:
                    continue  # a temporary file, or one this backend never made
                key = "/".join([*(s for s in segments if s is not None), leaf])
                if key.startswith(prefix):
                    keys.add(key)
                    slots.setdefault(key, set()).add(SLOT_SUFFIXES.index(suffix))
        with self._listing_lock:
            if self._changes == began:
                if self._listed_at != began:
                    self._listed, self._listed_at = {}, began
                self._listed.update(slots)
        return sorted(keys)

    def legacy_metadata(self) -> bytes | None:
        try:
            return (self.directory / LEGACY_METADATA_NAME).read_bytes()
        except FileNotFoundError:
            return None

    def retire_legacy_metadata(self) -> None:
        path = self.directory / LEGACY_METADATA_NAME
        durable.remove_files([path, path.with_name(path.name + durable.TEMP_SUFFIX)])

    def file_statistics(self) -> dict[str, int] | None:
        return self.files.statistics()

    def metadata_statistics(self) -> dict[str, int]:
        with self._stats_lock:
            counts = dict(self._stats)
        return {
            "slots_damaged": counts.get("slots_damaged", 0),
            "records_damaged": counts.get("records_damaged", 0),
            "puts": counts.get("puts", 0),
            "deletes": counts.get("deletes", 0),
            "bytes_written": counts.get("bytes_written", 0),
        }

    def close(self) -> None:
        self._current.clear()


def _read_slot_file(path: str) -> bytes | None:
    """The file's bytes, at most SLOT_BYTES_MAX + 1; None when it is missing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        parts: list[bytes] = []
        total = 0
        while total <= SLOT_BYTES_MAX:
            chunk = os.read(fd, min(READ_CHUNK_BYTES, SLOT_BYTES_MAX + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)
