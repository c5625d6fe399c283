"""The native protocol listener: RESP frames over TCP, pipelined.

One `Connection` per socket. `data_received` only parses (the codec is
sans-IO) and queues whole commands; one task per connection runs them in
order, so replies go out in the order the commands came, and a burst of
pipelined commands is answered with one write. Reading pauses while too
many commands or bytes wait, and commands wait while the socket's write
buffer is full: a slow or hostile peer costs bounded memory and nobody
else's time.

Before a connection signs in (with authentication on) it may send
`handshake_bytes_max` bytes in all and must sign in within
`handshake_timeout_ms`; every connection with nothing in progress is closed
after `idle_timeout_ms` without a byte from its peer. One sweep a fraction of
the shortest timeout apart checks every connection, so the command path only
notes the time. Sockets are admitted by the `ConnectionCounter` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

from logq.broker import Broker
from logq.broker.errors import from_log_error
from logq.errors import LogqError
from logq.log import LogError
from logq.log.batch import HEADER_SIZE, read_header
from logq.protocol import Limits, Parser, ProtocolError, Push, RespError, encode_into
from logq.server import context
from logq.server.accept import Acceptor
from logq.server.command_metrics import CommandTimes
from logq.server.commands import Session, dispatch
from logq.server.connections import ConnectionCounter
from logq.server.descriptors import DescriptorWatch
from logq.server.security import Security
from logq.server.security_config import SecurityConfig

logger = logging.getLogger("logq.server")

REPLY_BUFFER_BYTES = 256 << 10  # replies held back for one write, at most
QUEUED_COMMANDS_MAX = 1024
FRAME_LIMITS = Limits(max_bulk_bytes=64 << 20, max_buffer_bytes=128 << 20)
SWEEP_INTERVAL_S_MAX = 1.0


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """How much a native connection may send, and for how long it may wait."""

    frames: Limits = FRAME_LIMITS
    # a handshake's worth: HELLO, AUTH with a long password, a few PINGs
    handshake_bytes_max: int = 16 << 10
    handshake_timeout_ms: int = 10_000
    idle_timeout_ms: int = 600_000

    @property
    def sweep_interval_s(self) -> float:
        shortest = min(self.handshake_timeout_ms, self.idle_timeout_ms) / 1000
        return min(SWEEP_INTERVAL_S_MAX, shortest / 4)


class Connection(asyncio.Protocol):
    def __init__(self, server: NativeServer) -> None:
        self.server = server
        self.parser = Parser(server.limits.frames, inline=True)
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
        # not signed in yet (auth on): bytes it may still send before it must
        self._anonymous = self.session.principal is None
        self._handshake_bytes_left = server.limits.handshake_bytes_max
        self.opened_at = self.last_heard = time.monotonic()

    # -- transport callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport = self.transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        self.session.address = self.address
        counter = self.server.connections
        refusal = (
            "SHUTDOWN the server is stopping"
            if self.server.closing
            else counter.admit(self, self.address, signed_in=not self._anonymous, http=False)
        )
        if refusal is not None:
            transport.write(b"-" + refusal.encode() + b"\r\n")
            transport.close()
            self._closing = True
            return
        self.server.live.add(self)
        self._task = asyncio.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self.last_heard = time.monotonic()
        if self._anonymous:
            self._handshake_bytes_left -= len(data)
            if self._handshake_bytes_left < 0:
                limit = self.server.limits.handshake_bytes_max
                self.server.connections.oversize += 1
                self._fail(f"TOOBIG more than {limit} bytes sent before signing in (AUTH)")
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
        self.server.live.discard(self)
        self.server.connections.release(self)
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
            reply = await dispatch(self.server.broker, self.session, name, command[1:])
            if self._anonymous and self.session.principal is not None:
                self._signed_in()
            return reply
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

    def _signed_in(self) -> None:
        self._anonymous = False
        self.server.connections.signed_in(self)

    def evict(self, reason: str) -> None:
        """Close at once: the connection counter needs its place."""
        self.server.live.discard(self)
        self._fail(reason)

    def timed_out(self, now: float) -> str | None:
        """What this connection waited too long for, if it did."""
        limits = self.server.limits
        if self._anonymous and now - self.opened_at > limits.handshake_timeout_ms / 1000:
            return "handshake"
        if (
            now - self.last_heard > limits.idle_timeout_ms / 1000
            and not self._busy
            and not self._commands
            and self.session.subscription is None
            and not self.session.members
        ):
            return "idle"
        return None

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

    def close_with(self, text: str) -> None:
        """Tell the peer why, and close."""
        self._fail(text)

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
        limits: ListenerLimits | None = None,
        descriptors: DescriptorWatch | None = None,
    ) -> None:
        self.broker = broker
        self.connections = connections
        self.descriptors = descriptors
        self.security = security or Security.from_config(SecurityConfig())
        self.tls = tls
        self.limits = limits or ListenerLimits()
        self.command_times = CommandTimes()
        self.live: set[Connection] = set()
        self.stopping: set[asyncio.Task[None]] = set()  # subscriptions of lost connections
        self.closing = False
        self._server: Acceptor | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket) -> None:
        self._server = Acceptor(
            "native",
            sock,
            lambda: Connection(self),
            ssl=self.tls,
            # a TLS handshake comes before the connection is admitted: bound it the same
            ssl_handshake_timeout=self.limits.handshake_timeout_ms / 1000 if self.tls else None,
            descriptors=self.descriptors,
        )
        self._server.start()
        self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close the connections that waited too long to sign in, or idled too long."""
        messages = {
            "handshake": f"TIMEOUT not signed in within {self.limits.handshake_timeout_ms} ms",
            "idle": f"TIMEOUT nothing received for {self.limits.idle_timeout_ms} ms",
        }
        while True:
            await asyncio.sleep(self.limits.sweep_interval_s)
            now = time.monotonic()
            for connection in list(self.live):
                kind = connection.timed_out(now)
                if kind is not None:
                    self.connections.timed_out[kind] += 1
                    self.live.discard(connection)
                    connection.close_with(messages[kind])

    async def stop_accepting(self) -> None:
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
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
