"""Errors of the archive, each with the stable code word of logq's errors."""

from __future__ import annotations

from logq.log.errors import LogError


class ArchiveError(LogError):
    """Base of the archive's errors (code STORAGE: a server-side fault)."""


class ObjectExistsError(ArchiveError):
    """`put_new` of a name that is taken."""


class ObjectNotFoundError(ArchiveError):
    """No object of that name."""


class ArchiveUnavailableError(ArchiveError):
    """The store could not be reached, refused for now or did not answer in
    time: try again later (code UNAVAILABLE, retriable)."""

    code = "UNAVAILABLE"
    retriable = True


class ArchiveDamagedError(ArchiveError):
    """An archived object failed its checks: nothing of it is handed on."""

    code = "CORRUPT"


class ArchivedObjectMissingError(ArchiveDamagedError):
    """An object the manifest still names is not in the store (deleted behind
    the broker's back, a lifecycle rule): its offsets are lost until it is
    put back, as a damaged one's are (CORRUPT, not retriable)."""
