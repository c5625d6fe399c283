"""Counting work, not time: the Python lines of logq a call executes."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

SOURCE_MARK = "/logq/"


def lines_run(call: Callable[[], Any]) -> int:
    """How many lines of logq's own code `call` executes (in this thread)."""
    count = 0

    def tracer(frame: FrameType, event: str, _: Any) -> Any:
        nonlocal count
        if SOURCE_MARK not in frame.f_code.co_filename:
            return None
        if event == "line":
            count += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(previous)
    return count


async def lines_awaited(call: Callable[[], Awaitable[Any]]) -> int:
    """How many lines of logq's own code run while `call()` is awaited (in
    this thread: other tasks of the loop count too, so keep it quiet)."""
    count = 0

    def tracer(frame: FrameType, event: str, _: Any) -> Any:
        nonlocal count
        if SOURCE_MARK not in frame.f_code.co_filename:
            return None
        if event == "line":
            count += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        await call()
    finally:
        sys.settrace(previous)
    return count
