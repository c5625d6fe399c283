"""The error catalogue: one hierarchy, stable code words, a retriable flag.

The native protocol sends `-CODE message`, the REST API `{"error": {"code",
"message"}}` with the status below, and the client raises the class that
the code names. Codes never change meaning once released.
"""

from __future__ import annotations

import builtins
from typing import ClassVar


class LogqError(Exception):
    """Base of every error logq reports to the outside."""

    code: ClassVar[str] = "ERR"
    http_status: ClassVar[int] = 500
    retriable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # A publish that failed part way: the messages it stored all the
        # same, each {"index", "id", "partition", "offset"} (index in the request).
        self.stored: list[dict[str, object]] = []


class BadArgumentError(LogqError):
    code = "BADARG"
    http_status = 400


class UnknownCommandError(LogqError):
    code = "UNKNOWN"
    http_status = 404


class TopicNotFoundError(LogqError):
    code = "NOTOPIC"
    http_status = 404


class GroupNotFoundError(LogqError):
    code = "NOGROUP"
    http_status = 404


class MessageNotFoundError(LogqError):
    code = "NOMESSAGE"
    http_status = 404


class AlreadyExistsError(LogqError):
    code = "EXISTS"
    http_status = 409


class TooBigError(LogqError):
    code = "TOOBIG"
    http_status = 413


class BadBatchError(LogqError):
    code = "BADBATCH"
    http_status = 400


class CorruptError(LogqError):
    code = "CORRUPT"
    http_status = 500


class OutOfRangeError(LogqError):
    code = "OUTOFRANGE"
    http_status = 416


class NotMemberError(LogqError):
    """A consumer asked for a partition its group assigned to another member."""

    code = "NOTMEMBER"
    http_status = 409
    retriable = True


class StaleDeliveryError(LogqError):
    """A settlement named a delivery (by its lease token) that is no longer the
    message's current one: its lease ended and the message went out again,
    was dead-lettered, or the group was moved. The stale ones changed nothing;
    `stale` lists their receipts, `count` what the same request did to the
    current deliveries it named (0 when the error came as the reply). As a
    reply, the message ends with the receipts (the first 100), which is
    where a client finds them."""

    code = "STALE"
    http_status = 409

    def __init__(self, message: str, stale: list[str] | None = None, count: int = 0) -> None:
        super().__init__(message)
        if stale is None:
            stale = [word for word in message.rpartition(": ")[2].split() if "@" in word]
        self.stale = stale
        self.count = count


class NotExpiredError(LogqError):
    """A release of messages as expired (`EXPIRED`) named messages that have
    not expired by the broker's clock: those changed nothing and stay leased
    where they were. `not_expired` lists their receipts, `count` what the
    same request released of the rest (0 when the error came as the reply)."""

    code = "NOTEXPIRED"
    http_status = 409

    def __init__(self, message: str, not_expired: list[str] | None = None, count: int = 0) -> None:
        super().__init__(message)
        if not_expired is None:
            not_expired = [word for word in message.rpartition(": ")[2].split() if ":" in word]
        self.not_expired = not_expired
        self.count = count


class LimitError(LogqError):
    """A bounded resource (connections, in-flight messages) is full."""

    code = "LIMIT"
    http_status = 429
    retriable = True


class CapacityError(LogqError):
    """The broker holds as much as it is configured to (`limits.partitions`):
    nothing was created. Not retriable: it stays so until something is
    deleted or the limit is raised (HTTP 409, a conflict with the broker's
    state, as a full broker is not the request's fault nor a passing one)."""

    code = "CAPACITY"
    http_status = 409


class StorageError(LogqError):
    code = "STORAGE"
    http_status = 503
    retriable = True


class UnavailableError(LogqError):
    """Something the request needs is out of reach for now: the archive's
    object store is down, refused or did not answer in time, so a read of
    archived offsets could not be served. Nothing changed; the same request
    may succeed once it is back (reads of the broker's own disk go on). The
    Python client tries such a call again, with backoff, within its timeout."""

    code = "UNAVAILABLE"
    http_status = 503
    retriable = True


class AuthRequiredError(LogqError):
    """No valid credentials: authenticate first (AUTH, or an HTTP Authorization header)."""

    code = "NOAUTH"
    http_status = 401


class ForbiddenError(LogqError):
    """Authenticated, but this user's roles do not allow the operation."""

    code = "FORBIDDEN"
    http_status = 403


class ThrottledError(LogqError):
    """Over a per-client quota or request rate; the message says when to retry."""

    code = "THROTTLED"
    http_status = 429
    retriable = True


class DiskFullError(LogqError):
    """The data directory's disk is (nearly) full: publishes are refused
    until space returns; reads and acks go on."""

    code = "DISKFULL"
    http_status = 507
    retriable = True


class ShuttingDownError(LogqError):
    code = "SHUTDOWN"
    http_status = 503
    retriable = True


class ProtocolViolationError(LogqError):
    code = "PROTO"
    http_status = 400


class TimeoutError(LogqError, builtins.TimeoutError):
    """No answer within the call's timeout (a hung or overloaded broker, a
    handshake that never finished): the request may or may not have taken
    effect, and trying again is safe for idempotent calls."""

    code = "TIMEOUT"
    http_status = 504
    retriable = True


class ConnectionLostError(LogqError, ConnectionError):
    """The client's connection closed before the reply came, or no
    connection could be made: the request may or may not have taken effect."""

    code = "CONNLOST"
    http_status = 503
    retriable = True


class UnsupportedError(LogqError):
    """A documented feature that this version of the broker does not have yet."""

    code = "UNSUPPORTED"
    http_status = 501


class UnconfirmedError(LogqError):
    """Raised by the client itself, never sent by a server: settlements (or
    publishes) that the broker refused or did not confirm before a flush or
    close gave up. `unconfirmed` names each one and why."""

    code = "UNCONFIRMED"
    http_status = 500
    retriable = True

    def __init__(self, message: str, unconfirmed: list[str] | None = None) -> None:
        super().__init__(message)
        self.unconfirmed = list(unconfirmed or [])


class TimedOutError(TimeoutError):
    """The server's side of TIMEOUT: the peer took too long to sign in or to
    send a request, or idled, and the connection is closed (HTTP 408). A
    client reads the code back as `TimeoutError`."""

    http_status = 408


_ALL: list[type[LogqError]] = [
    LogqError,
    BadArgumentError,
    UnknownCommandError,
    TopicNotFoundError,
    GroupNotFoundError,
    MessageNotFoundError,
    AlreadyExistsError,
    TooBigError,
    BadBatchError,
    CorruptError,
    OutOfRangeError,
    NotMemberError,
    StaleDeliveryError,
    NotExpiredError,
    LimitError,
    CapacityError,
    StorageError,
    UnavailableError,
    AuthRequiredError,
    ForbiddenError,
    ThrottledError,
    DiskFullError,
    ShuttingDownError,
    ProtocolViolationError,
    TimeoutError,
    ConnectionLostError,
    UnsupportedError,
    UnconfirmedError,
]  # TimedOutError shares TimeoutError's code: a client reads it as TimeoutError
BY_CODE: dict[str, type[LogqError]] = {cls.code: cls for cls in _ALL}


def from_code(code: str, message: str) -> LogqError:
    """The exception a client raises for an error reply."""
    return BY_CODE.get(code, LogqError)(message)
