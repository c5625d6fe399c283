"""logq inside your own process: a broker with clients that need no port.

    import logq

    import logq

    with logq.Broker("./app-data") as broker:  # on disk; logq.Broker() keeps it in memory
        client = broker.client()               # the same API as logq.Client
        client.create_topic("jobs", exist_ok=True)
        client.publish("jobs", b"hello")
        for msg in client.receive("jobs", "workers", max=10):
            print(msg.value)
            msg.ack()                          # confirmed before the broker closes

The broker runs on an event loop thread of its own; each client reaches it
over a socket pair (no network, no port), through the same protocol code
as a server, so an application and its tests behave as against `logq serve`.
`async_client()` gives an `AsyncClient` for asyncio code on any loop.

Closing the broker (the end of the `with` block) closes its blocking
clients first, each waiting until the broker has confirmed every settlement
and publish made through it, then stops the broker, whose data dir then
holds all of them. An `async_client()` lives on its caller's loop: close it
(`async with`) before the broker.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from logq.broker import Broker as DomainBroker
from logq.broker import BrokerConfig
from logq.broker.clock import Clock, SystemClock
from logq.client import AsyncClient, Client
from logq.client.connection import Connection
from logq.client.loop_thread import LoopThread
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
        clock: Clock | None = None,
    ) -> None:
        """`clock` (default the system's) is the broker's, and its clients'
        for TTL checks: a test passes a `FakeClock` to move time by hand."""
        base = config or BrokerConfig()
        self.clock = clock or SystemClock()
        path = Path(data_dir) if data_dir is not None else base.data_dir
        self.config = replace(base, data_dir=path, log=replace(base.log, fsync=FsyncPolicy(fsync)))
        self._runner: LoopThread | None = None
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
        if self._runner is not None:
            return self
        self._runner = LoopThread("logq-embedded")

        async def open_broker() -> None:
            self._broker = await DomainBroker.open(self.config, clock=self.clock)
            self._broker.start()
            self._server = NativeServer(self._broker, ConnectionCounter())

        try:
            self._runner.run(open_broker())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def close(self) -> None:
        """Close the blocking clients (each waits for its settlements and
        publishes to be confirmed), then the broker; raises the first
        client's `UnconfirmedError`, if any, once the broker is closed."""
        errors: list[Exception] = []
        for client in self._clients:
            try:
                client.close()
            except Exception as error:
                errors.append(error)
        self._clients.clear()
        if self._runner is not None:

            async def close_broker() -> None:
                if self._server is not None:
                    await self._server.stop_accepting()
                    await self._server.finish(timeout_s=5)
                if self._broker is not None:
                    await self._broker.close()

            try:
                self._runner.run(close_broker())
            finally:
                self._stop_loop()
        if errors:
            raise errors[0]

    def _stop_loop(self) -> None:
        if self._runner is not None:
            self._runner.stop()
        self._runner = None
        self._broker = None
        self._server = None

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
        if self._runner is None or self._server is None:
            raise RuntimeError("the broker is not started")
        ours, theirs = socket.socketpair()
        server = self._server

        async def accept() -> None:
            loop = asyncio.get_running_loop()
            await loop.connect_accepted_socket(lambda: ServerConnection(server), sock=theirs)

        await asyncio.wrap_future(self._runner.submit(accept()))
        return await Connection.open("embedded", 0, on_push=on_push, sock=ours)

    def client(self) -> Client:
        """A blocking client of this broker, closed (its settlements and
        publishes confirmed) before the broker closes."""
        self.start()
        client = Client("embedded:0", connector=self._connect, clock=self.clock.now_ms)
        self._clients.append(client)
        return client

    def async_client(self) -> AsyncClient:
        """An asyncio client of this broker, for use on the caller's loop."""
        self.start()
        return AsyncClient("embedded:0", connector=self._connect, clock=self.clock.now_ms)


__all__ = ["Broker"]
