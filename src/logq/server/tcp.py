"""The native protocol listener: RESP frames over TCP, pipelined.

One `Connection` per socket. `data_received` only parses (the codec is
sans-IO) and queues whole commands; one task per connection runs them in
order, so replies go out in the order the commands came, and a burst of
pipelined commands is answered with one write. Reading pauses while too
many commands or bytes wait, and commands wait while the socket's write
buffer is full: a slow or hostile peer costs bounded memory and nobody
else's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import deque
from typing import cast

from logq.broker import Broker
from logq.broker.errors import from_log_error
from logq.errors import LogqError
from logq.log import LogError
from logq.log.batch import HEADER_SIZE, read_header
from logq.protocol import Limits, Parser, ProtocolError, Push, RespError, encode_into
from logq.server import context
from logq.server.command_metrics import CommandTimes
from logq.server.commands import Session, dispatch
from logq.server.connections import ConnectionCounter
from logq.server.security import Security
from logq.server.security_config import SecurityConfig

logger = logging.getLogger("logq.server")

REPLY_BUFFER_BYTES = 256 << 10  # replies held back for one write, at most
QUEUED_COMMANDS_MAX = 1024
FRAME_LIMITS = Limits(max_bulk_bytes=64 << 20, max_buffer_bytes=128 << 20)


class Connection(asyncio.Protocol):
    def __init__(self, server: NativeServer) -> None:
        self.server = server
        self.parser = Parser(server.frame_limits, inline=True)
        self.session = Session(push=self._push, writable=self._writable)
        self.session.extra["connections"] = server.connections
        self.session.security = server.security
        self.session.principal = server.security.initial_principal()
        self.address = "?"
        self.connection_id = context.new_id("c")
        self.transport: asyncio.Transport | None = None
        self._commands: deque[list[bytes]] = deque()
        self._wake = asyncio.Event()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._reading_paused = False
        self._closing = False
        self._busy = False
        self._task: asyncio.Task[None] | None = None

    # -- transport callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport = self.transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        counter = self.server.connections
        if counter.active >= counter.limit or self.server.closing:
            counter.refused += 1
            reason = (
                "SHUTDOWN the server is stopping"
                if self.server.closing
                else (f"LIMIT {counter.active} connections open, the limit is {counter.limit}")
            )
            transport.write(b"-" + reason.encode() + b"\r\n")
            transport.close()
            self._closing = True
            return
        counter.native += 1
        self.server.live.add(self)
        self._task = asyncio.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self.parser.feed(data)
            while (command := self.parser.next_command()) is not None:
                self._commands.append(command)
        except ProtocolError as error:
            self._fail(f"PROTO {error}")
            return
        if self._commands:
            self._wake.set()
        if len(self._commands) >= QUEUED_COMMANDS_MAX and not self._reading_paused:
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._closing_after_queue()
        # keep our half open to write the last replies (TLS has no half-close)
        return None if self.server.tls is not None else True

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server.live:
            self.server.live.discard(self)
            self.server.connections.native -= 1
        self._closing = True
        self._can_write.set()
        self._wake.set()
        if self._task is not None and not self._busy:
            self._task.cancel()
        for topic, group, consumer in self.session.members:
            self.server.broker.leave(topic, group, consumer)  # a lost member leaves at once
        self.session.members.clear()
        if self.session.subscription is not None:
            subscription, self.session.subscription = self.session.subscription, None
            task = asyncio.get_running_loop().create_task(subscription.stop())
            self.server.stopping.add(task)
            task.add_done_callback(self.server.stopping.discard)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # -- the command loop ---------------------------------------------------------------------

    async def _serve(self) -> None:
        context.request_id.set(self.connection_id)  # for this connection's log lines
        out: list[bytes | memoryview] = []
        pending = 0  # bytes in `out`
        while not self._closing or self._commands:
            if not self._commands:
                if out:
                    self._write(out)
                    out, pending = [], 0
                if self._closing:
                    break
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._can_write.wait()
            if self.transport is None or self.transport.is_closing():
                break
            command = self._commands.popleft()
            if self._reading_paused and len(self._commands) < QUEUED_COMMANDS_MAX // 2:
                self._reading_paused = False
                self.transport.resume_reading()
            reply = await self._run(command)
            start = len(out)
            encode_into(reply, out, self.session.protocol)
            pending += sum(len(piece) for piece in out[start:])
            if self.session.closing:
                self._write(out)
                out = []
                self._commands.clear()
                self.transport.close()
                break
            if pending > REPLY_BUFFER_BYTES:
                # Hand big replies to the transport now: its high-water mark
                # then pauses this loop (above) until the peer reads them.
                self._write(out)
                out, pending = [], 0
        if out:
            self._write(out)
        # The peer is done (EOF, QUIT, shutdown) and every reply is written:
        # close our side too, after the transport flushes what it holds.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def _run(self, command: list[bytes]) -> object:
        self._busy = True
        started = time.perf_counter_ns()
        name = command[0].decode(errors="replace").upper() if len(command[0]) <= 32 else "?"
        try:
            security = self.server.security
            if security.auth_enabled:
                security.authorize_command(self.session.principal, name, command[1:])
            if security.quotas.enabled:
                self._charge(security, name, command)
            return await dispatch(self.server.broker, self.session, name, command[1:])
        except LogqError as error:
            return RespError(f"{error.code} {error.message}")
        except LogError as error:
            mapped = from_log_error(error)
            return RespError(f"{mapped.code} {mapped.message}")
        except Exception:
            logger.exception("command %r failed", command[0][:32])
            return RespError("ERR internal error; the server log has the details")
        finally:
            self._busy = False
            self.server.command_times.observe(name, time.perf_counter_ns() - started)

    def _charge(self, security: Security, name: str, command: list[bytes]) -> None:
        """Count the request, and a publish's messages and bytes, against the client's quota."""
        client = security.client_key(self.session.principal, self.address)
        security.quotas.request(client)
        if name == "PUB" and len(command) > 2:
            security.quotas.publish(client, 1, len(command[2]))
        elif name == "PUBBATCH":
            batches = command[3::2]
            records = sum(read_header(b).record_count for b in batches if len(b) >= HEADER_SIZE)
            security.quotas.publish(client, records, sum(len(b) for b in batches))

    async def _writable(self) -> None:
        await self._can_write.wait()

    def _write(self, out: list[bytes | memoryview]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)

    def _push(self, frame: Push) -> None:
        out: list[bytes | memoryview] = []
        encode_into(frame, out, self.session.protocol)
        self._write(out)

    def _fail(self, text: str) -> None:
        self._closing = True
        self._commands.clear()
        if self.transport is not None:
            self.transport.write(b"-" + text.encode(errors="replace") + b"\r\n")
            self.transport.close()

    def _closing_after_queue(self) -> None:
        self._closing = True
        self._wake.set()

    async def finish(self) -> None:
        """Answer what was already received, then close."""
        self._closing_after_queue()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.session.subscription is not None:
            await self.session.subscription.stop()
            self.session.subscription = None
        if self.transport is not None:
            self.transport.close()


class NativeServer:
    def __init__(
        self,
        broker: Broker,
        connections: ConnectionCounter,
        security: Security | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        frame_limits: Limits = FRAME_LIMITS,
    ) -> None:
        self.broker = broker
        self.connections = connections
        self.security = security or Security.from_config(SecurityConfig())
        self.tls = tls
        self.frame_limits = frame_limits
        self.command_times = CommandTimes()
        self.live: set[Connection] = set()
        self.stopping: set[asyncio.Task[None]] = set()  # subscriptions of lost connections
        self.closing = False
        self._server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), sock=sock, ssl=self.tls)

    async def stop_accepting(self) -> None:
        self.closing = True
        if self._server is not None:
            self._server.close()

    async def finish(self, timeout_s: float) -> None:
        """Let every connection answer what it received, within `timeout_s`."""
        pending = [connection.finish() for connection in list(self.live)]
        if pending:
            done = asyncio.gather(*pending, return_exceptions=True)
            try:
                await asyncio.wait_for(done, timeout=timeout_s)
            except TimeoutError:
                logger.warning("connections still busy after %.1f s: closing them", timeout_s)
        for connection in list(self.live):
            if connection.transport is not None:
                connection.transport.abort()
        if self.stopping:
            await asyncio.gather(*self.stopping, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1)
