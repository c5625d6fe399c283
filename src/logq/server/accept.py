"""Accepting connections on a listening socket, through running out of
descriptors.

The event loop's own accept does not say when descriptors run out: libuv
(uvloop) accepts each waiting connection and closes it at once, so clients
see resets and nothing is logged; asyncio's reports every attempt. Here the
listener accepts by itself: when `accept` fails for want of descriptors
(EMFILE, ENFILE) or memory, it stops reading the socket for
`ACCEPT_RETRY_S`, so new connections wait in the kernel's backlog instead of
being reset, the loop does not spin on a socket that stays readable, and
the connections already open are served as before. It says so in the log
(once per `LOG_INTERVAL_S`, with how often meanwhile) and again when it
accepts once more. Each accepted socket is handed to the loop as its own
`create_server` would (`connect_accepted_socket`, TLS included).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl as ssl_module
import time
from collections.abc import Callable

from logq.server.descriptors import DescriptorWatch

logger = logging.getLogger("logq.server")

# How soon accepting is tried again after running out.
ACCEPT_RETRY_S = 0.5
# At most one warning this often per listener while it keeps running out.
LOG_INTERVAL_S = 10.0
# Connections accepted per wake-up, so a burst of connects shares the loop.
ACCEPTS_PER_WAKE = 64
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Acceptor:
    """Accepts on `sock` (listening, non-blocking) and hands each connection
    to `protocol_factory`; closes like an `asyncio.Server`."""

    def __init__(
        self,
        name: str,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        *,
        ssl: ssl_module.SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        descriptors: DescriptorWatch | None = None,
    ) -> None:
        self.name = name
        self.sock = sock
        self.paused_total = 0  # times accepting stopped for want of descriptors
        self._factory = protocol_factory
        self._ssl = ssl
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._descriptors = descriptors
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._paused_since: float | None = None
        self._logged_at = float("-inf")
        self._unlogged = 0  # pauses since the last warning
        self._handshakes: set[asyncio.Task[None]] = set()
        self._closed = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        self._loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                connection, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the peer gave up while it waited
            except OSError as error:  # out of descriptors (OUT_OF_RESOURCES), or worse
                self._pause(error)
                return
            if self._paused_since is not None:
                logger.info(
                    "%s listener accepting again after %.1f s",
                    self.name,
                    time.monotonic() - self._paused_since,
                )
                self._paused_since = None
            self._hand_over(connection)

    def _hand_over(self, connection: socket.socket) -> None:
        assert self._loop is not None
        connection.setblocking(False)
        if connection.family in (socket.AF_INET, socket.AF_INET6):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = self._loop.create_task(self._connect(connection))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _connect(self, connection: socket.socket) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(
                self._factory,
                connection,
                ssl=self._ssl,
                ssl_handshake_timeout=self._ssl_handshake_timeout if self._ssl else None,
            )
        except (TimeoutError, OSError, ssl_module.SSLError) as error:
            # a peer gone during its TLS handshake, or one that never finished it
            logger.debug("%s listener: connection dropped before it began: %s", self.name, error)
            connection.close()

    def _pause(self, error: OSError) -> None:
        assert self._loop is not None
        self.paused_total += 1
        if self._descriptors is not None:
            paused = self._descriptors.accept_paused
            paused[self.name] = paused.get(self.name, 0) + 1
        self._loop.remove_reader(self.sock.fileno())
        self._retry = self._loop.call_later(ACCEPT_RETRY_S, self._resume)
        now = time.monotonic()
        if self._paused_since is None:
            self._paused_since = now
        self._unlogged += 1
        if now - self._logged_at < LOG_INTERVAL_S:
            return
        counted = self._descriptors.check() if self._descriptors is not None else None
        limit = self._descriptors.limit if self._descriptors is not None else None
        logger.warning(
            "%s listener cannot accept connections: %s (%s descriptors open, the limit is %s);"
            " new connections wait in the backlog, trying again every %.1f s%s",
            self.name,
            error.strerror,
            "all" if counted is None else counted,
            "unknown" if limit is None else limit,
            ACCEPT_RETRY_S,
            f" ({self._unlogged} times since the last warning)" if self._unlogged > 1 else "",
        )
        self._logged_at = now
        self._unlogged = 0

    def _resume(self) -> None:
        self._retry = None
        if not self._closed and self._loop is not None:
            self._loop.add_reader(self.sock.fileno(), self._accept)
            self._accept()

    def close(self) -> None:
        """Stop accepting and close the listening socket (open connections stay)."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    async def wait_closed(self) -> None:
        """Connections still in their TLS handshake end (they were accepted)."""
        for task in list(self._handshakes):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
