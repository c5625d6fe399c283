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
    """The store could not be reached or refused for now: try again later."""


class ArchiveDamagedError(ArchiveError):
    """An archived object failed its checks: nothing of it is handed on."""

    code = "CORRUPT"
