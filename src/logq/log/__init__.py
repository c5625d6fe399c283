"""The storage engine: partition logs of record batches, on disk or in memory.

Plain synchronous code with no dependency on the rest of logq; the broker
runs its blocking parts off the event loop.
"""

from logq.log.backend import StorageBackend
from logq.log.batch import Record, decode_batch, encode_batch, read_header, validate_batch
from logq.log.config import FsyncPolicy, LogConfig
from logq.log.directory_lock import DirectoryLock, DirectoryLockedError
from logq.log.errors import (
    BatchTooLargeError,
    CorruptBatchError,
    DamagedDataError,
    InvalidBatchError,
    InvalidConfigError,
    InvalidEpochError,
    LogClosedError,
    LogError,
    MetadataConflictError,
    MetadataDamagedError,
    OffsetOutOfRangeError,
    StaleEpochError,
)
from logq.log.file_backend import FileBackend
from logq.log.file_log import FileLog
from logq.log.memory_backend import MemoryBackend
from logq.log.memory_log import MemoryLog
from logq.log.reading import read_past_damage
from logq.log.storage import (
    AppendResult,
    PartitionLog,
    ReadResult,
    RecoveryReport,
    RetentionResult,
    SealedSegment,
)
from logq.log.verify import DamagedRange

__all__ = [
    "AppendResult",
    "BatchTooLargeError",
    "CorruptBatchError",
    "DamagedDataError",
    "DamagedRange",
    "DirectoryLock",
    "DirectoryLockedError",
    "FileBackend",
    "FileLog",
    "FsyncPolicy",
    "InvalidBatchError",
    "InvalidConfigError",
    "InvalidEpochError",
    "LogClosedError",
    "LogConfig",
    "LogError",
    "MemoryBackend",
    "MemoryLog",
    "MetadataConflictError",
    "MetadataDamagedError",
    "OffsetOutOfRangeError",
    "PartitionLog",
    "ReadResult",
    "Record",
    "RecoveryReport",
    "RetentionResult",
    "SealedSegment",
    "StaleEpochError",
    "StorageBackend",
    "decode_batch",
    "encode_batch",
    "read_header",
    "read_past_damage",
    "validate_batch",
]
