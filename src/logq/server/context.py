"""Which connection or request a log line belongs to.

Each native connection and each HTTP request gets an id (`c-…`, `r-…`, or
the client's own `X-Request-Id` when it sends a sane one), kept in a context
variable for as long as it is served: every log line written meanwhile
carries it (`request_id` in JSON logs), and HTTP answers echo it in
`X-Request-Id`, so a client's report can be matched with the server's log."""

from __future__ import annotations

import itertools
import logging
import os
import re
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("logq_request_id", default=None)
_counter = itertools.count(1)
_PREFIX = os.urandom(2).hex()  # tells this run's ids from an earlier run's
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def new_id(kind: str) -> str:
    return f"{kind}-{_PREFIX}{next(_counter):x}"


_OURS = re.compile(r"[cr]-")  # the server's own ids: a client may not pass for one


def id_from_client(value: str | None, kind: str) -> str:
    """The client's id when it is a short plain token that does not look
    like one the server makes, else a new one."""
    if value is not None and _SANE.fullmatch(value) and not _OURS.match(value):
        return value
    return new_id(kind)


class RequestIdFilter(logging.Filter):
    """Puts the current id on every record, as `request_id` (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True
