"""Errors raised by the storage engine.

Each error carries a stable code word, shared later by the native protocol,
the REST API and the client, and a `retriable` flag telling a caller whether
the same request may succeed if tried again.
"""

from __future__ import annotations

from typing import ClassVar


class LogError(Exception):
    """Base of every storage engine error."""

    code: ClassVar[str] = "STORAGE"
    retriable: ClassVar[bool] = False


class InvalidBatchError(LogError):
    """A batch offered for append is malformed; nothing was written."""

    code = "BADBATCH"


class CorruptBatchError(InvalidBatchError):
    """A batch's CRC32C does not match its bytes."""

    code = "CORRUPT"


class DamagedDataError(LogError):
    """Stored data failed its checks on read: offsets [start, end) of the
    log are lost to damage on disk (a server fault, not the caller's)."""

    code = "CORRUPT"

    def __init__(self, message: str, start: int, end: int) -> None:
        super().__init__(message)
        self.start = start
        self.end = end


class BatchTooLargeError(InvalidBatchError):
    """A batch is over a configured size or record limit."""

    code = "TOOBIG"


class OffsetOutOfRangeError(LogError):
    """An offset below the log start or past the log end was asked for."""

    code = "OUTOFRANGE"


class LogClosedError(LogError):
    """The log was closed; no operation may use it."""

    code = "CLOSED"


class InvalidConfigError(LogError, ValueError):
    """A storage setting is out of its allowed range."""

    code = "BADCONFIG"


class StaleEpochError(LogError):
    """A leader epoch below the log's own was offered: a new epoch lower than
    the current one, or replica batches from an epoch the log has moved past
    (the sender is a deposed leader)."""

    code = "FENCED"


class InvalidEpochError(LogError, ValueError):
    """A leader epoch outside 0 .. 2**31 - 1, or an offset no log can start at."""

    code = "BADARG"


class MetadataConflictError(LogError):
    """A metadata put or delete named a version that is not the record's
    current one (or "must not exist" for a record that does): someone else
    changed it first; read it again and decide."""

    code = "CONFLICT"


class MetadataDamagedError(LogError):
    """A metadata record failed its checks in every copy kept of it: its
    value is unknown. It is never overwritten silently: see
    docs/operations.md for the way back."""

    code = "CORRUPT"

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class InvalidKeyError(LogError, ValueError):
    """A metadata key or a topic name the storage cannot name a file by."""

    code = "BADARG"


class MetadataTooLargeError(LogError):
    """A metadata record's value is over the size a record may have."""

    code = "TOOBIG"
