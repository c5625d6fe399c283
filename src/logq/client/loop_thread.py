"""An event loop on a thread of its own, for blocking callers (`Client`, `logq.Broker`).

Its owner stops it after closing what runs on it; stopping then ends the
rest in a written order, as `asyncio.run` does: tasks already finishing
(their answer came, their wakeup is scheduled) get `STOP_GRACE_S` to end,
the others are cancelled and awaited, async generators and the default
executor are shut down, and only then does the loop stop and close. No task
is left to be destroyed while pending.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

STOP_GRACE_S = 1.0  # for tasks already finishing when the loop is stopped
JOIN_TIMEOUT_S = 10.0  # for the thread, once the loop was asked to stop


class LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    @property
    def stopped(self) -> bool:
        return self.loop.is_closed()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.submit(coroutine).result()

    def stop(self) -> None:
        """End what still runs on the loop, then stop and close it (once)."""
        if self.loop.is_closed():
            return
        if threading.current_thread() is self.thread:
            raise RuntimeError("the loop thread cannot stop itself")
        try:
            if self.loop.is_running():
                self.run(_wind_down(self.loop))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(JOIN_TIMEOUT_S)
            if not self.loop.is_running():
                self.loop.close()


async def _wind_down(loop: asyncio.AbstractEventLoop) -> None:
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    if others:
        await asyncio.wait(others, timeout=STOP_GRACE_S)
    left = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for task in left:
        task.cancel()
    if left:
        await asyncio.wait(left, timeout=STOP_GRACE_S)
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()
