"""The broker-wide commit journal: one fsync for the small writes of every log.

Under `fsync: always` each partition log would otherwise fsync its own file,
so a broker with writes to many partitions paid one fsync per partition per
moment. Instead the writer (writer.py) writes each small batch to its log's
file as usual, without an fsync, and a copy of it, named by the log's id, to
this journal; one fsync of the journal then makes the whole group durable.
The logs' own files are fsynced lazily (a flush: every few MiB of journal or
seconds), after which the journal files that held their copies are removed.
On open, every entry is offered back to its log: a batch the log's file
already holds is skipped, a batch it lost (its unsynced tail, after a power
loss) is written again at the same offset.

On disk: `commit/<sequence, 20 digits>.wal`, the last one active. A file
starts with an 8-byte header (`LQCJ`, u32 version 1); then records:

    u32 length   bytes after this field
    u32 crc      CRC32C of the bytes after this field
    u32 count    entries in the record (one commit group)
    count x (u16 id length, id (UTF-8), u32 batch length, batch)

A record that does not verify ends its file: at the end of the active file
it is a write that was never acknowledged (cut); anywhere else it is damage,
reported with the file and position.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from crc32c import crc32c

from logq.log import durable
from logq.log.batch import read_header

logger = logging.getLogger(__name__)

SUFFIX = ".wal"
MAGIC = b"LQCJ"
VERSION = 1
FILE_HEADER = struct.Struct("<4sI")
RECORD_HEAD = struct.Struct("<II")  # length, crc
COUNT = struct.Struct("<I")
ID_LENGTH = struct.Struct("<H")
BATCH_LENGTH = struct.Struct("<I")
READ_CHUNK = 4 << 20
# A record longer than this is not believed (a damaged length field).
RECORD_BYTES_MAX = 1 << 30


class Replayable(Protocol):
    """What a log must offer to take back the batches it lost."""

    @property
    def next_offset(self) -> int: ...

    def write_copy(self, batch: bytes) -> object: ...

    def resume_at(self, offset: int, why: str) -> bool: ...

    def sync(self, up_to_offset: int | None = None) -> None: ...


@dataclass(slots=True)
class ReplayReport:
    """What opening the journal found and put back."""

    files: int = 0
    entries: int = 0
    rewritten: int = 0  # batches a log had lost and got back
    unknown: int = 0  # entries of logs that no longer exist
    cut_bytes: int = 0  # unacknowledged tail of the active file
    damaged: list[str] = field(default_factory=list)  # where records did not verify
    gaps: list[str] = field(default_factory=list)  # logs missing data the journal lacks


def _file_name(sequence: int) -> str:
    return f"{sequence:020d}{SUFFIX}"


def encode_record(entries: Sequence[tuple[bytes, bytes | memoryview]]) -> bytes:
    """One commit group as a journal record."""
    parts: list[bytes | memoryview] = [COUNT.pack(len(entries))]
    for log_id, batch in entries:
        parts.append(ID_LENGTH.pack(len(log_id)))
        parts.append(log_id)
        parts.append(BATCH_LENGTH.pack(len(batch)))
        parts.append(batch)
    body = b"".join(parts)
    return RECORD_HEAD.pack(len(body) + 4, crc32c(body)) + body


def decode_record(body: bytes | memoryview) -> Iterator[tuple[str, memoryview]]:
    view = memoryview(body)
    (count,) = COUNT.unpack_from(view, 0)
    position = COUNT.size
    for _ in range(count):
        (id_length,) = ID_LENGTH.unpack_from(view, position)
        position += ID_LENGTH.size
        log_id = bytes(view[position : position + id_length]).decode()
        position += id_length
        (batch_length,) = BATCH_LENGTH.unpack_from(view, position)
        position += BATCH_LENGTH.size
        yield log_id, view[position : position + batch_length]
        position += batch_length


@dataclass(frozen=True, slots=True)
class _Record:
    position: int
    body: bytes | None  # None: bytes that do not verify start at `position`
    resume: int | None = None  # where a verifying record follows them (None: none does)


def _verifies(data: bytes, position: int) -> bool:
    """Whether a whole record that verifies starts at `position` of `data`
    (cheap checks first: a plausible length, count and first id)."""
    if len(data) - position < RECORD_HEAD.size + COUNT.size + ID_LENGTH.size:
        return False
    length, crc = RECORD_HEAD.unpack_from(data, position)
    end = position + 4 + length
    if not COUNT.size + ID_LENGTH.size <= length - 4 <= RECORD_BYTES_MAX or end > len(data):
        return False
    body_at = position + RECORD_HEAD.size
    (count,) = COUNT.unpack_from(data, body_at)
    (id_length,) = ID_LENGTH.unpack_from(data, body_at + COUNT.size)
    if count == 0 or id_length == 0 or id_length > length:
        return False
    return bool(crc32c(memoryview(data)[body_at:end]) == crc)


def _next_verifying(data: bytes, start: int) -> int | None:
    """The first position at or after `start` where a verifying record starts."""
    return next((at for at in range(start, len(data)) if _verifies(data, at)), None)


def _records(path: Path) -> Iterator[_Record]:
    """Each record of a journal file in order. Bytes that do not verify come
    as one _Record without a body; `resume` says where a verifying record
    follows them: then they are damage (written before records that were
    made durable after them), else the file's torn end."""
    data = path.read_bytes()
    if len(data) < FILE_HEADER.size:
        yield _Record(0, None)
        return
    position = FILE_HEADER.size
    if FILE_HEADER.unpack_from(data, 0) != (MAGIC, VERSION):
        yield _Record(0, None, _next_verifying(data, position))
    while position < len(data):
        if not _verifies(data, position):
            resume = _next_verifying(data, position + 1)
            yield _Record(position, None, resume)
            if resume is None:
                return
            position = resume
            continue
        (length,) = struct.unpack_from("<I", data, position)
        end = position + 4 + length
        yield _Record(position, data[position + RECORD_HEAD.size : end])
        position = end


class CommitJournal:
    """The journal files of one data directory (blocking calls: the writer's
    thread; `remove_before` may run on the flusher's thread meanwhile)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        durable.make_directory(self.directory)
        self._sequences = sorted(
            int(path.name[: -len(SUFFIX)])
            for path in self.directory.iterdir()
            if path.name.endswith(SUFFIX) and path.name[: -len(SUFFIX)].isdigit()
        )
        for path in self.directory.iterdir():
            if path.name.endswith(durable.TEMP_SUFFIX):
                path.unlink()
        self._sequences_lock = threading.Lock()  # the writer adds files, the flusher drops them
        self._fd = -1
        self._ready = False  # replayed: ready for appends
        self._position = 0
        self._synced = 0  # position the last fsync covered
        self.bytes_since_rotation = 0
        self.stats: dict[str, int] = {
            "records": 0,
            "bytes": 0,
            "fsyncs": 0,
            "rotations": 0,
            "damaged": 0,  # records that did not verify, and gaps, found by the replay
            "cut_bytes": 0,  # the torn end the replay cut
        }

    # -- opening ------------------------------------------------------------------

    def replay(self, resolve: Callable[[str], Replayable | None]) -> ReplayReport:
        """Offer every entry to its log (see the module doc), make the logs
        that took batches back durable, then start a fresh journal file and
        remove the old ones: after this, the logs' own files hold everything."""
        report = ReplayReport(files=len(self._sequences))
        touched: dict[str, Replayable] = {}
        stopped: set[str] = set()  # logs with a gap: later entries cannot follow
        end = 0  # of the last file's good records (0: not even its header is good)
        damaged_last = False  # the last file holds damage: a new file takes new groups
        for number, sequence in enumerate(self._sequences):
            path = self.directory / _file_name(sequence)
            last = number == len(self._sequences) - 1
            end = FILE_HEADER.size
            for record in _records(path):
                if record.body is None:
                    if last and record.resume is None:
                        report.cut_bytes += path.stat().st_size - record.position
                        end = record.position
                        logger.warning(
                            "commit journal: %s from byte %d: a group whose write was cut"
                            " short (never acknowledged) is cut",
                            path,
                            record.position,
                        )
                        break
                    until = "its end" if record.resume is None else f"byte {record.resume}"
                    where = f"{path} from byte {record.position} to {until}"
                    report.damaged.append(where)
                    damaged_last = last
                    logger.error(
                        "commit journal: %s does not verify; the copies there are lost"
                        " (their logs' own files keep what they hold)",
                        where,
                    )
                    continue
                end = record.position + RECORD_HEAD.size + len(record.body)
                self._replay_record(record.body, resolve, report, touched, stopped)
        for log in touched.values():
            log.sync()
        if report.rewritten or report.cut_bytes:
            logger.warning(
                "commit journal: %d batches written back to their logs (%s), %d bytes of an"
                " unacknowledged tail cut",
                report.rewritten,
                _some_names(sorted(touched)),
                report.cut_bytes,
            )
        self.stats["damaged"] = len(report.damaged) + len(report.gaps)
        self.stats["cut_bytes"] = report.cut_bytes
        self._ready = True
        if self._sequences and not damaged_last and end >= FILE_HEADER.size:
            # go on in the last file (no new file needed: a full disk still opens)
            self._continue_file(self._sequences[-1], end)
        else:
            try:
                self._start_file()
            except OSError as error:  # a full disk: made by the first commit instead
                logger.warning("commit journal: no file started (%s)", error.strerror or error)
        if self._sequences:
            self.remove_before(self._sequences[-1])
        return report

    @staticmethod
    def _replay_record(
        body: bytes,
        resolve: Callable[[str], Replayable | None],
        report: ReplayReport,
        touched: dict[str, Replayable],
        stopped: set[str],
    ) -> None:
        for log_id, batch in decode_record(body):
            report.entries += 1
            if log_id in stopped:
                continue
            log = touched.get(log_id) or resolve(log_id)
            if log is None:
                report.unknown += 1
                continue
            header = read_header(batch)
            if header.base_offset + header.record_count <= log.next_offset:
                continue  # the log's file holds it
            if header.base_offset != log.next_offset:
                # the log's file lost acknowledged batches the journal no longer
                # holds: they are lost, the journal's later ones are not (the
                # log goes on at them, the lost range reported)
                gap = (
                    f"{log_id}: ends at {log.next_offset}, journal resumes at {header.base_offset}"
                )
                report.gaps.append(gap)
                logger.error("commit journal: %s", gap)
                why = f"the commit journal holds its batches from offset {header.base_offset}"
                if header.base_offset < log.next_offset or not log.resume_at(
                    header.base_offset, why
                ):
                    stopped.add(log_id)
                    continue
            log.write_copy(bytes(batch))
            touched[log_id] = log
            report.rewritten += 1

    def _continue_file(self, sequence: int, end: int) -> None:
        fd = os.open(self.directory / _file_name(sequence), os.O_WRONLY)
        try:
            if os.fstat(fd).st_size > end:
                durable.truncate_durably(fd, end)  # the unacknowledged tail
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._position = self._synced = end
        self.bytes_since_rotation = 0

    # -- writing ----------------------------------------------------------------------

    def _start_file(self) -> None:
        sequence = self._sequences[-1] + 1 if self._sequences else 1
        path = self.directory / _file_name(sequence)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, FILE_HEADER.pack(MAGIC, VERSION), 0)
            durable.sync_data(fd)
            durable.sync_directory(self.directory)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._position = self._synced = FILE_HEADER.size
        with self._sequences_lock:
            self._sequences.append(sequence)
        self.bytes_since_rotation = 0

    def append(self, entries: Sequence[tuple[bytes, bytes | memoryview]]) -> None:
        """Write one commit group (not yet durable); on failure nothing of it stays."""
        if self._fd < 0:
            if not self._ready:
                raise RuntimeError("the commit journal is written only after its replay")
            self._start_file()  # none could be made at open (a full disk)
        record = encode_record(entries)
        try:
            _write_all(self._fd, record, self._position)
        except OSError:
            os.ftruncate(self._fd, self._position)
            raise
        self._position += len(record)
        self.bytes_since_rotation += len(record)
        self.stats["records"] += 1
        self.stats["bytes"] += len(record)

    def sync(self) -> None:
        """Make every appended group durable; on failure the unsynced groups
        are cut (their pages may be gone) and the error raised."""
        if self._synced == self._position:
            return
        try:
            durable.sync_data(self._fd)
        except OSError:
            self.discard_unsynced()
            raise
        self._synced = self._position
        self.stats["fsyncs"] += 1

    def discard_unsynced(self) -> None:
        """Cut the groups appended since the last fsync (their writes failed)."""
        os.ftruncate(self._fd, self._synced)
        self._position = self._synced

    @property
    def unsynced(self) -> bool:
        return self._position > self._synced

    def rotate(self) -> int:
        """Start a new file for the groups to come; returns its sequence: the
        files before it can go once every log they name is fsynced."""
        self.sync()
        self._start_file()
        self.stats["rotations"] += 1
        with self._sequences_lock:
            return self._sequences[-1]

    def remove_before(self, sequence: int) -> None:
        """Remove the journal files older than `sequence` (their logs were fsynced)."""
        with self._sequences_lock:
            old = [s for s in self._sequences if s < sequence]
        if not old:
            return
        durable.remove_files([self.directory / _file_name(s) for s in old])
        with self._sequences_lock:
            self._sequences = [s for s in self._sequences if s not in old]

    def retire(self) -> None:
        """Close the journal and remove every file of it: the logs it holds
        copies for were made durable in their own files since (a shutdown
        that closed them all); the next open starts a fresh file."""
        self.close()
        if self._sequences:
            self.remove_before(self._sequences[-1] + 1)

    @property
    def size_bytes(self) -> int:
        return self._position

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_all(fd: int, data: bytes, position: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        if written == 0:
            raise OSError(errno.ENOSPC, "short write to the commit journal")
        view = view[written:]
        position += written


# A log line names at most this many logs (a start after a power cut may give
# batches back to thousands).
NAMED_LOGS_MAX = 10


def _some_names(names: list[str]) -> str:
    shown = ", ".join(names[:NAMED_LOGS_MAX]) or "none"
    more = len(names) - NAMED_LOGS_MAX
    return f"{shown} and {more} more" if more > 0 else shown
