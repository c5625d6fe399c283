"""Fault injection for tests of recovery: `LOGQ_FAULT_CRASH`.

`LOGQ_FAULT_CRASH="redrive.held=0.2,redrive.handed_back=0.3"` makes
`logq serve` kill itself with SIGKILL at those named points between the
durable steps of the broker's multi-step operations (broker/redrive.py names
them), each time with that chance; `LOGQ_FAULT_CRASH_DELAY_MS` (default 0)
lets the broker run on for a random time up to that long first, so clients
act on what the step made visible before the process dies. `logq bench
chaos --redrive` uses it. Unset (always, outside such tests): no hook, and
the broker pays nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
from collections.abc import Awaitable, Callable, Mapping

from logq.server.config_parsing import ConfigError

logger = logging.getLogger(__name__)

CRASH_VARIABLE = "LOGQ_FAULT_CRASH"
DELAY_VARIABLE = "LOGQ_FAULT_CRASH_DELAY_MS"
CRASH_POINTS = frozenset({"redrive.held", "redrive.handed_back"})
DELAY_MS_MAX = 60_000


def crash_hook(environ: Mapping[str, str]) -> Callable[[str], Awaitable[None]] | None:
    """The broker's fault hook that LOGQ_FAULT_CRASH asks for, or None."""
    text = environ.get(CRASH_VARIABLE, "").strip()
    if not text:
        return None
    chances: dict[str, float] = {}
    for item in text.split(","):
        point, _, chance = item.strip().partition("=")
        if point not in CRASH_POINTS:
            raise ConfigError(
                f"{CRASH_VARIABLE}: unknown point {point!r} (known: {', '.join(sorted(CRASH_POINTS))})"
            )
        try:
            chances[point] = float(chance) if chance else 1.0
        except ValueError:
            raise ConfigError(f"{CRASH_VARIABLE}: {item!r} needs point=chance") from None
        if not 0.0 <= chances[point] <= 1.0:
            raise ConfigError(f"{CRASH_VARIABLE}: chance of {point} must be within 0..1")
    delay_text = environ.get(DELAY_VARIABLE, "0")
    if not delay_text.isdecimal() or int(delay_text) > DELAY_MS_MAX:
        raise ConfigError(f"{DELAY_VARIABLE} must be 0..{DELAY_MS_MAX} ms, got {delay_text!r}")
    delay_ms_max = int(delay_text)
    chooser = random.Random()
    logger.warning(
        "fault injection: SIGKILL at %s", ", ".join(f"{p}={c}" for p, c in chances.items())
    )

    async def crash_at(point: str) -> None:
        if chooser.random() >= chances.get(point, 0.0):
            return
        if delay_ms_max:
            await asyncio.sleep(chooser.uniform(0, delay_ms_max) / 1000)
        logger.warning("fault injection: SIGKILL at %s", point)
        os.kill(os.getpid(), signal.SIGKILL)

    return crash_at
