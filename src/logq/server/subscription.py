"""Pushed deliveries for one connection (CONSUME), with credit-based flow control.

The subscription is the consumer's membership of the group: it joins when
it starts, every receive counts as a heartbeat, and it leaves when it stops
or its connection is lost.

The consumer grants credit in messages; the subscription leases at most
that many, pushes each delivery as one frame and spends its size. With no
credit, nothing is leased: a slow consumer holds no messages it cannot
process. Nor while the connection's writes are backed up (the peer stopped
reading): the next lease waits until the transport drains. Leases taken by a
subscription that ends expire like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from logq.broker import Broker
from logq.errors import BadArgumentError, LogqError
from logq.protocol import Push

logger = logging.getLogger("logq.server")

CREDIT_MAX = 1_000_000
POLL_WAIT_MS = 1_000


class Subscription:
    def __init__(
        self,
        broker: Broker,
        push: Callable[[Push], None],
        *,
        writable: Callable[[], Awaitable[object]] | None = None,
        topic: str,
        group: str,
        consumer: str,
        credit: int,
        visibility_timeout_ms: int | None,
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.group = group
        self.consumer = consumer
        self.visibility_timeout_ms = visibility_timeout_ms
        self._push = push
        self._writable = writable
        self._credit = 0
        self._has_credit = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.add_credit(credit)

    @property
    def credit(self) -> int:
        return self._credit

    def add_credit(self, amount: int) -> None:
        if not 0 <= amount <= CREDIT_MAX or self._credit + amount > CREDIT_MAX:
            raise BadArgumentError(
                f"credit must stay within 0..{CREDIT_MAX}: have {self._credit}, adding {amount}"
            )
        self._credit += amount
        if self._credit > 0:
            self._has_credit.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"consume {self.topic}/{self.group}")

    async def stop(self) -> None:
        """Stop pushing and leave the group, so the member's partitions move at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self.broker.leave(self.topic, self.group, self.consumer)

    async def _run(self) -> None:
        limit = self.broker.config.receive_messages_max
        while True:
            await self._has_credit.wait()
            if self._writable is not None:
                await self._writable()  # a consumer that stops reading gets nothing more
            try:
                deliveries = await self.broker.receive_raw(
                    self.topic,
                    self.group,
                    self.consumer,
                    max_messages=min(self._credit, limit),
                    wait_ms=POLL_WAIT_MS,
                    visibility_timeout_ms=self.visibility_timeout_ms,
                )
            except LogqError as error:
                self._push(Push(["error", f"{error.code} {error}"]))
                return
            for delivery in deliveries:
                self._credit -= delivery.end - delivery.start
                self._push(
                    Push(
                        [
                            "delivery",
                            delivery.topic,
                            delivery.partition,
                            delivery.start,
                            delivery.end,
                            delivery.attempt,
                            delivery.data,
                            delivery.lease,
                            delivery.ttl_ms,
                        ]
                    )
                )
            if self._credit <= 0:
                self._has_credit.clear()
