"""The HTTP listener's sockets: admitted before anything is read, and timed.

uvicorn's httptools protocol does the HTTP; this subclass adds what a
broker facing hostile peers needs and uvicorn does not give: every socket is
admitted by the shared `ConnectionCounter` (the same caps as the native
listener, so neither listener can crowd out the other), a request's header
must arrive within `header_timeout_ms` of its first byte (or of the
connection), its body within `body_timeout_ms` of the header, and an idle
keep-alive connection is closed after uvicorn's keep-alive timeout. A socket
counts as not signed in until one of its requests is signed in (the app
calls `ConnectionCounter.signed_in` with `scope["logq.connection"]`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from logq.errors import LimitError, LogqError, ShuttingDownError, TimedOutError, TooBigError
from logq.server.connections import ConnectionCounter
from logq.server.http_common import error_body

SCOPE_KEY = "logq.connection"
# what is read on and thrown away of a body refused before it was read whole,
# so that the client, still sending, gets to read the refusal
DISCARDED_BYTES_MAX = 2 << 20


@dataclass(frozen=True, slots=True)
class HttpTimeouts:
    header_timeout_ms: int = 10_000
    body_timeout_ms: int = 60_000
    # a request's line and headers: httptools keeps every header it is given
    header_bytes_max: int = 64 << 10


def guarded_protocol(
    connections: ConnectionCounter, timeouts: HttpTimeouts, *, auth_enabled: bool
) -> type[HttpToolsProtocol]:
    """uvicorn's protocol class, admitting and timing each socket as above."""

    class GuardedHttpProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _admitted = False
        _discarded = 0
        _header_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else "local"
            refusal = (
                "SHUTDOWN the server is stopping"
                if connections.closing
                else connections.admit(self, address, signed_in=not auth_enabled, http=True)
            )
            if refusal is not None:
                code, _, message = refusal.partition(" ")
                error = ShuttingDownError if code == "SHUTDOWN" else LimitError
                self._answer_and_close(error(message))
                return
            self._admitted = True
            self._arm(timeouts.header_timeout_ms, "http_header")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            connections.release(self)
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            self._header_bytes = 0
            super().on_message_begin()
            self.scope[SCOPE_KEY] = self  # type: ignore[literal-required]
            if self._deadline is None and self._admitted:
                self._arm(timeouts.header_timeout_ms, "http_header")

        def on_url(self, url: bytes) -> None:
            self._count_header_bytes(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_header_bytes(len(name) + len(value) + 4)
            if not self.transport.is_closing():  # refused: keep nothing more
                super().on_header(name, value)

        def _count_header_bytes(self, size: int) -> None:
            self._header_bytes += size
            if self._header_bytes > timeouts.header_bytes_max and not self.transport.is_closing():
                self._disarm()
                self._answer_and_close(
                    TooBigError(
                        f"the request line and headers are over {timeouts.header_bytes_max} "
                        f"bytes, the limit httpHeaderBytes is {timeouts.header_bytes_max}"
                    ),
                    status=431,
                )

        def on_headers_complete(self) -> None:
            self._disarm()
            if self.transport.is_closing():  # refused or timed out: nothing to run
                return
            self._discarded = 0
            super().on_headers_complete()
            self._arm(timeouts.body_timeout_ms, "http_body")

        def on_message_complete(self) -> None:
            self._disarm()
            if self.cycle is not None:  # None: refused before its header was done
                super().on_message_complete()

        def on_body(self, body: bytes) -> None:
            if self.cycle is None:  # refused before its header was done
                return
            if self.cycle.response_complete:
                # answered before its body was read whole (refused at the
                # limit): the rest is thrown away as it comes, so the client
                # reads the answer, up to a bound (and within the body timeout)
                self._discarded += len(body)
                if self._discarded > DISCARDED_BYTES_MAX:
                    self.transport.close()
                return
            super().on_body(body)

        def evict(self, reason: str) -> None:
            self._disarm()
            self._admitted = False
            self._answer_and_close(LimitError(reason.partition(" ")[2]))

        def _arm(self, timeout_ms: int, kind: str) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(timeout_ms / 1000, self._expired, kind)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self, kind: str) -> None:
            self._deadline = None
            connections.timed_out[kind] += 1
            what = "header" if kind == "http_header" else "body"
            limit = timeouts.header_timeout_ms if what == "header" else timeouts.body_timeout_ms
            self._answer_and_close(
                TimedOutError(f"the request {what} did not arrive within {limit} ms")
            )

        def _answer_and_close(self, error: LogqError, status: int | None = None) -> None:
            """Answer with `error` unless a response is under way, and close."""
            if self.transport.is_closing():
                return
            if (
                self.cycle is None
                or not self.cycle.response_started
                or self.cycle.response_complete
            ):
                body = error_body(error.code, error.message)
                code = status or error.http_status
                head = (
                    f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\n"
                    f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                    "connection: close\r\n\r\n"
                )
                self.transport.write(head.encode() + body)
            self.transport.close()

    return GuardedHttpProtocol


_REASONS = {
    408: "Request Timeout",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
