"""One RESP3 connection to a logq server, pipelined.

Requests are written at once and their futures queued: replies come back
in order, so the n-th reply settles the n-th future. Push frames (pushed
deliveries) go to a callback instead. A lost connection fails every
waiting future with `ConnectionLostError`; the client decides what to retry.

Opening is bounded as a whole: the TCP connect, TLS, `HELLO` and `AUTH`
share one timeout, so a broker that accepts connections but never answers
(stopped, overloaded) yields `logq.errors.TimeoutError` rather than a hang.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from logq.errors import BadArgumentError, ConnectionLostError, LogqError, from_code
from logq.errors import TimeoutError as CallTimeoutError
from logq.protocol import NEED_MORE, Limits, Parser, ProtocolError, Push, RespError, encode_command

Connector = Callable[[Callable[[Push], None] | None], Awaitable["Connection"]]
__all__ = ["Connection", "ConnectionLostError", "Connector", "error_from_reply", "parse_server"]


def parse_server(address: str) -> tuple[str, int]:
    """ "host:port" or ":port" (host 127.0.0.1); "[v6]:port" for IPv6. An
    address without a port is refused rather than guessed (7070 is the
    server's default port, but the client does not assume it)."""
    host, colon, port = address.rpartition(":")
    if not colon:
        raise BadArgumentError(
            f"bad server address {address!r}: expected host:port (e.g. 127.0.0.1:7070)"
        )
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise BadArgumentError(
            f"bad server address {address!r}: the port {port!r} is not a number"
        ) from None
    if not 0 <= number < 65536:
        raise BadArgumentError(f"bad server address {address!r}: port {number} is not 0..65535")
    return host, number


def error_from_reply(error: RespError) -> LogqError:
    return from_code(error.code, error.message or error.text)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: Connection) -> None:
        self.owner = owner

    def data_received(self, data: bytes) -> None:
        self.owner._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(exc)

    def pause_writing(self) -> None:
        self.owner._can_write.clear()

    def resume_writing(self) -> None:
        self.owner._can_write.set()


class Connection:
    def __init__(self, on_push: Callable[[Push], None] | None = None) -> None:
        self.on_push = on_push
        self._parser = Parser(Limits(max_bulk_bytes=256 << 20, max_buffer_bytes=512 << 20))
        self._waiting: deque[asyncio.Future[object]] = deque()
        self._transport: asyncio.Transport | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.closed = True
        self.server_info: dict[object, object] = {}

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        timeout_s: float = 5.0,
        on_push: Callable[[Push], None] | None = None,
        sock: socket.socket | None = None,
        tls: ssl.SSLContext | None = None,
        credentials: tuple[str | None, str] | None = None,
    ) -> Connection:
        """Connect to host:port, or over `sock` (already connected) when given;
        over TLS with `tls`; signed in with `credentials` ((None, token) or
        (username, password)). `timeout_s` bounds all of it, the handshake
        included."""
        connection = cls(on_push)
        try:
            async with asyncio.timeout(timeout_s):
                await connection._open(host, port, sock, tls, credentials)
        except builtins.TimeoutError:
            connection.close()
            raise CallTimeoutError(
                f"no connection to {host}:{port} within {timeout_s} s (connect and handshake)"
            ) from None
        except BaseException:
            connection.close()
            raise
        return connection

    async def _open(
        self,
        host: str,
        port: int,
        sock: socket.socket | None,
        tls: ssl.SSLContext | None,
        credentials: tuple[str | None, str] | None,
    ) -> None:
        connection = self
        loop = asyncio.get_running_loop()
        if sock is not None:
            connecting = loop.create_connection(lambda: _Protocol(connection), sock=sock)
        else:
            connecting = loop.create_connection(
                lambda: _Protocol(connection),
                host,
                port,
                ssl=tls,
                server_hostname=host if tls is not None else None,
            )
        transport, _ = await connecting
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection._transport = transport
        connection.closed = False
        info = await connection.call("HELLO", 3)
        connection.server_info = info if isinstance(info, dict) else {}
        if credentials is not None:
            username, secret = credentials
            await connection.call("AUTH", *([username] if username else []), secret)

    def send(self, args: Sequence[bytes | str | int]) -> asyncio.Future[object]:
        """Write one command now; the future holds its reply (or error)."""
        if self.closed or self._transport is None:
            raise ConnectionLostError("not connected")
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._transport.write(encode_command(args))
        return future

    async def call(self, *args: bytes | str | int) -> object:
        await self._can_write.wait()
        return await self.send(args)

    async def drain(self) -> None:
        await self._can_write.wait()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self.closed = True

    # -- from the protocol ----------------------------------------------------------

    def _received(self, data: bytes) -> None:
        try:
            self._parser.feed(data)
            while (value := self._parser.next_value()) is not NEED_MORE:
                if isinstance(value, Push):
                    if self.on_push is not None:
                        self.on_push(value)
                    continue
                if not self._waiting:
                    continue  # a reply nobody waits for (cancelled): drop it
                future = self._waiting.popleft()
                if future.done():
                    continue
                if isinstance(value, RespError):
                    future.set_exception(error_from_reply(value))
                else:
                    future.set_result(value)
        except ProtocolError as error:
            self._lost(error)
            self.close()

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._can_write.set()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionLostError(f"connection lost: {exc or 'closed'}"))
        if self.on_push is not None:
            with contextlib.suppress(Exception):
                self.on_push(Push(["closed"]))
