"""Startup and shutdown of a logq server: one process, one event loop.

Order on start: open the broker (recovery), start its timer, bind the native
listener, bind the HTTP listener, announce the bound addresses. Order on the
first SIGTERM/SIGINT: stop accepting on both listeners, let requests in
flight finish (bounded by `shutdown_timeout_s`), close the broker (flush and
fsync every log and the journal). A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import uvicorn

from logq.broker import Broker, BrokerConfig
from logq.protocol import Limits as FrameLimits
from logq.server.accept import Acceptor
from logq.server.auth_throttle import SignInThrottle
from logq.server.config import ServerConfig, is_loopback, remote_hosts
from logq.server.connections import ConnectionCounter
from logq.server.descriptors import (
    DescriptorWatch,
    derive_open_files_max,
    descriptor_limit,
    open_files_cap,
)
from logq.server.http_app import create_app
from logq.server.http_common import Limits as HttpLimits
from logq.server.http_guard import loopback_hosts
from logq.server.http_listener import HttpTimeouts, guarded_protocol
from logq.server.security import Security
from logq.server.tcp import ListenerLimits, NativeServer
from logq.server.tls import server_tls_context

logger = logging.getLogger("logq.server")
DESCRIPTOR_CHECK_S = 5.0  # how often open descriptors are counted


@dataclass(frozen=True, slots=True)
class BoundAddresses:
    native_host: str
    native_port: int
    http_host: str
    http_port: int


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class _QuietUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling (this module owns the
    signals), accepting through an `Acceptor` (it rides out running out of
    descriptors) on the one socket it is given."""

    descriptors: DescriptorWatch | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        assert sockets is not None and len(sockets) == 1, "serve() binds one HTTP socket"
        await self.lifespan.startup()
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        acceptor = Acceptor(
            "http", sockets[0], create_protocol, ssl=config.ssl, descriptors=self.descriptors
        )
        acceptor.start()
        self.servers = [acceptor]  # type: ignore[list-item]  # closes and waits as uvicorn asks
        self.started = True


def _capped(config: ServerConfig, descriptors_max: int | None) -> BrokerConfig:
    """The broker's config with the partition cap and the descriptor cache
    it runs with, logged."""
    broker = config.broker
    if broker.partitions_max is None:
        logger.info("no partition cap: idle partitions hold no descriptors")
    else:
        logger.info("partition cap %d (set by limits.partitions)", broker.partitions_max)
    if broker.data_dir is None:
        return broker
    cap = open_files_cap(broker.open_files_max, config.connections_max, descriptors_max)
    logger.info("partition logs keep at most %d files open (%s)", cap.open_files_max, cap.how)
    if broker.open_files_max is not None and descriptors_max is not None:
        fits = derive_open_files_max(descriptors_max, config.connections_max)
        if broker.open_files_max > fits.open_files_max:
            logger.warning(
                "limits.openFiles %d is more than the descriptor limit leaves room for (%d, %s)",
                broker.open_files_max,
                fits.open_files_max,
                fits.how,
            )
    return replace(broker, open_files_max=cap.open_files_max)


async def _watch_descriptors(descriptors: DescriptorWatch) -> None:
    """Count the open descriptors now and then: the warning comes from here
    when no one scrapes /metrics."""
    while True:
        descriptors.check()
        await asyncio.sleep(DESCRIPTOR_CHECK_S)


async def serve(
    config: ServerConfig,
    *,
    on_ready: Callable[[BoundAddresses], None] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Run a server until `stop` is set or a signal arrives."""
    for host in remote_hosts(config):
        logger.warning(
            "listening on %s, beyond this machine, with authentication off "
            "(allowed by allowUnauthenticatedRemote): anyone who reaches it can publish, "
            "consume and delete",
            host,
        )
    stop = stop or asyncio.Event()
    descriptors = DescriptorWatch(descriptor_limit())
    broker = await Broker.open(_capped(config, descriptors.limit))
    broker.start()
    connections = ConnectionCounter(
        limit=config.connections_max,
        per_address_limit=config.connections_per_address_max,
        unauthenticated_limit=config.unauthenticated_connections_max,
    )
    security = Security.from_config(
        config.security, SignInThrottle(config.auth_failures_max, config.auth_lockout_ms_max)
    )
    tls = server_tls_context(config.security.tls)
    native = NativeServer(
        broker,
        connections,
        security,
        tls=tls,
        limits=ListenerLimits(
            frames=FrameLimits(
                max_bulk_bytes=config.frame_bytes_max, max_buffer_bytes=config.buffer_bytes_max
            ),
            handshake_bytes_max=config.handshake_bytes_max,
            handshake_timeout_ms=config.handshake_timeout_ms,
            idle_timeout_ms=config.idle_timeout_ms,
        ),
        descriptors=descriptors,
    )
    native_socket = _bind(config.host, config.native_port)
    http_socket = _bind(config.http_bind_host, config.http_port)
    await native.start(native_socket)
    http = _QuietUvicorn(
        uvicorn.Config(
            create_app(
                broker,
                connections,
                security=security,
                native_times=native.command_times,
                allowed_hosts=loopback_hosts(config.http_bind_host) | set(config.allowed_hosts)
                if is_loopback(config.http_bind_host)
                else None,
                proxy_hosts=frozenset(config.allowed_hosts),
                limits=HttpLimits(
                    config.http_body_bytes_max,
                    config.http_publish_body_bytes_max,
                    config.event_streams_max,
                    config.event_streams_per_user_max,
                ),
                descriptors=descriptors,
                metrics_aggregate=config.metrics_aggregate,
            ),
            log_level="warning",
            ssl_certfile=str(config.security.tls.cert_file) if config.security.tls else None,
            ssl_keyfile=str(config.security.tls.key_file) if config.security.tls else None,
            lifespan="off",
            access_log=False,
            http=guarded_protocol(
                connections,
                HttpTimeouts(
                    config.http_header_timeout_ms,
                    config.http_body_timeout_ms,
                    config.http_header_bytes_max,
                ),
                auth_enabled=security.auth_enabled,
            ),
            timeout_keep_alive=config.http_idle_timeout_ms / 1000,  # type: ignore[arg-type]
            timeout_graceful_shutdown=max(1, int(config.shutdown_timeout_s)),
        )
    )
    http.descriptors = descriptors
    http_task = asyncio.create_task(http.serve(sockets=[http_socket]))
    watch_task = asyncio.create_task(_watch_descriptors(descriptors))
    bound = BoundAddresses(
        native_host=config.host,
        native_port=native_socket.getsockname()[1],
        http_host=config.http_bind_host,
        http_port=http_socket.getsockname()[1],
    )
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            logger.warning("second signal: exiting now")
            os._exit(1)
        logger.info("shutting down")
        stop.set()

    loop = asyncio.get_running_loop()
    if handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal)
    try:
        while not http.started and not http_task.done():
            await asyncio.sleep(0.01)
        if http_task.done():
            http_task.result()
        if on_ready is not None:
            on_ready(bound)
        await stop.wait()
    finally:
        watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch_task
        connections.closing = True
        await native.stop_accepting()
        http.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(http_task, timeout=config.shutdown_timeout_s + 1)
        await native.finish(timeout_s=config.shutdown_timeout_s)
        await broker.close()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        logger.info("stopped")
