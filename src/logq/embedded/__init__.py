"""logq inside your own process: a broker with clients that need no port.

    import logq

    with logq.Broker() as broker:              # in memory; Broker("./data") keeps it on disk
        client = broker.client()               # the same API as logq.Client
        client.create_topic("jobs")
        client.publish("jobs", b"hello")

The broker runs on an event loop thread of its own; each client reaches it
over a socket pair (no network, no port), through the same protocol code
as a server, so an application and its tests behave as against `logq serve`.
`async_client()` gives an `AsyncClient` for asyncio code on any loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from logq.broker import Broker as DomainBroker
from logq.broker import BrokerConfig
from logq.client import AsyncClient, Client
from logq.client.connection import Connection
from logq.log import FsyncPolicy
from logq.protocol import Push
from logq.server.connections import ConnectionCounter
from logq.server.tcp import Connection as ServerConnection
from logq.server.tcp import NativeServer


class Broker:
    """An embedded logq broker (memory, or a data dir) and its in-process clients."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        fsync: str = "always",
        config: BrokerConfig | None = None,
    ) -> None:
        base = config or BrokerConfig()
        path = Path(data_dir) if data_dir is not None else base.data_dir
        self.config = replace(base, data_dir=path, log=replace(base.log, fsync=FsyncPolicy(fsync)))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: DomainBroker | None = None
        self._server: NativeServer | None = None
        self._clients: list[Client] = []

    @property
    def domain(self) -> DomainBroker:
        """The broker facade itself, for code that runs on its loop."""
        if self._broker is None:
            raise RuntimeError("the broker is not started")
        return self._broker

    def start(self) -> Broker:
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="logq-embedded", daemon=True)
        self._thread.start()
        self._loop = loop

        async def open_broker() -> None:
            self._broker = await DomainBroker.open(self.config)
            self._broker.start()
            self._server = NativeServer(self._broker, ConnectionCounter())

        try:
            asyncio.run_coroutine_threadsafe(open_broker(), loop).result()
        except BaseException:
            self._stop_loop()
            raise
        return self

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self._loop is None:
            return

        async def close_broker() -> None:
            if self._server is not None:
                await self._server.stop_accepting()
                await self._server.finish(timeout_s=5)
            if self._broker is not None:
                await self._broker.close()

        try:
            asyncio.run_coroutine_threadsafe(close_broker(), self._loop).result()
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop.close()
        self._loop = None

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    async def _connect(self, on_push: Callable[[Push], None] | None) -> Connection:
        if self._loop is None or self._server is None:
            raise RuntimeError("the broker is not started")
        ours, theirs = socket.socketpair()
        server = self._server

        async def accept() -> None:
            loop = asyncio.get_running_loop()
            await loop.connect_accepted_socket(lambda: ServerConnection(server), sock=theirs)

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(accept(), self._loop))
        return await Connection.open("embedded", 0, on_push=on_push, sock=ours)

    def client(self) -> Client:
        """A blocking client of this broker (closed with it)."""
        self.start()
        client = Client("embedded:0", connector=self._connect)
        self._clients.append(client)
        return client

    def async_client(self) -> AsyncClient:
        """An asyncio client of this broker, for use on the caller's loop."""
        self.start()
        return AsyncClient("embedded:0", connector=self._connect)


__all__ = ["Broker"]
