"""Received messages that can settle themselves: `msg.ack()`, `nack()`, `reject()`, `extend()`.

`AsyncMessage` methods return awaitables (await them to know the broker
recorded the settlement; acks are sent in batches either way). `Message`
is the same for the blocking `Client`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from logq.client.records import MessageData


class SettlesMessages(Protocol):
    """What a message calls to settle itself (a consumer or the client)."""

    def ack(self, message: MessageData) -> asyncio.Future[Any]: ...
    def nack(self, message: MessageData, delay: str | int | None) -> Awaitable[Any]: ...
    def reject(self, message: MessageData, reason: str) -> Awaitable[Any]: ...
    def extend(
        self, message: MessageData, visibility_timeout: str | int | None
    ) -> Awaitable[Any]: ...


@dataclass(slots=True, eq=False)
class AsyncMessage(MessageData):
    group: str = ""
    _settler: SettlesMessages | None = None

    def _require(self) -> SettlesMessages:
        if self._settler is None:
            raise RuntimeError("this message was read without a group: there is nothing to settle")
        return self._settler

    def ack(self) -> asyncio.Future[Any]:
        """Done with it: never deliver it to this group again."""
        return self._require().ack(self)

    def nack(self, delay: str | int | None = None) -> Awaitable[Any]:
        """Not now: deliver it again after `delay` (default at once)."""
        return self._require().nack(self, delay)

    def reject(self, reason: str = "rejected") -> Awaitable[Any]:
        """Never: send it to the dead-letter topic with `reason`."""
        return self._require().reject(self, reason)

    def extend(self, visibility_timeout: str | int | None = None) -> Awaitable[Any]:
        """Still working on it: renew the lease."""
        return self._require().extend(self, visibility_timeout)


@dataclass(slots=True, eq=False)
class Message(MessageData):
    """A message received through the blocking `Client`."""

    group: str = ""
    _inner: AsyncMessage | None = None
    _call: Callable[[Callable[[], Awaitable[Any]]], concurrent.futures.Future[Any]] | None = None

    def _do(
        self, action: Callable[[AsyncMessage], Awaitable[Any]]
    ) -> concurrent.futures.Future[Any]:
        if self._inner is None or self._call is None:
            raise RuntimeError("this message was read without a group: there is nothing to settle")
        inner = self._inner

        async def run() -> Any:
            return await action(inner)

        return self._call(run)

    def ack(self) -> concurrent.futures.Future[Any]:
        """Done with it (sent in a batch; the future settles when the broker has it)."""
        return self._do(AsyncMessage.ack)

    def nack(self, delay: str | int | None = None) -> Any:
        return self._do(lambda m: m.nack(delay)).result()

    def reject(self, reason: str = "rejected") -> Any:
        return self._do(lambda m: m.reject(reason)).result()

    def extend(self, visibility_timeout: str | int | None = None) -> Any:
        return self._do(lambda m: m.extend(visibility_timeout)).result()
