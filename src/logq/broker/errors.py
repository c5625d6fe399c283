"""Storage engine errors translated into the error catalogue."""

from __future__ import annotations

from logq import errors
from logq.archive.errors import ArchiveDamagedError, ArchiveUnavailableError
from logq.log import errors as log_errors

_FROM_LOG: dict[type[log_errors.LogError], type[errors.LogqError]] = {
    ArchiveDamagedError: errors.CorruptError,  # an archived object failed its checks or is gone
    ArchiveUnavailableError: errors.UnavailableError,  # the store down or slow: try again
    log_errors.BatchTooLargeError: errors.TooBigError,
    log_errors.CorruptBatchError: errors.BadBatchError,  # a batch offered for append
    log_errors.DamagedDataError: errors.CorruptError,  # stored data failed its checks
    log_errors.InvalidBatchError: errors.BadBatchError,
    log_errors.OffsetOutOfRangeError: errors.OutOfRangeError,
    log_errors.LogClosedError: errors.ShuttingDownError,
    log_errors.InvalidConfigError: errors.BadArgumentError,
    log_errors.MetadataDamagedError: errors.CorruptError,  # a record failed its checks
    log_errors.MetadataTooLargeError: errors.TooBigError,
    log_errors.InvalidKeyError: errors.BadArgumentError,
}


def from_log_error(error: log_errors.LogError) -> errors.LogqError:
    for cls in type(error).__mro__:
        target = _FROM_LOG.get(cls)
        if target is not None:
            return target(str(error))
    return errors.StorageError(str(error))
