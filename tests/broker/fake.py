"""A broker on a fake clock, for tests in which time moves only when told."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from logq.broker import Broker, BrokerConfig, FakeClock

Scenario = Callable[[Broker, FakeClock], Awaitable[None]]


def run(test: Scenario, config: BrokerConfig | None = None) -> None:
    """Open a broker on a fresh FakeClock, run `test` against it, close it."""

    async def main() -> None:
        clock = FakeClock()
        broker = await Broker.open(config or BrokerConfig(), clock=clock)
        try:
            await test(broker, clock)
        finally:
            await broker.close()

    asyncio.run(main())
