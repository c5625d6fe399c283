"""LOGQ_FAULT_CRASH: off unless set; a bad value names the variable and
changes nothing; a chance of 0 never fires."""

from __future__ import annotations

import asyncio

import pytest

from logq.server.config_parsing import ConfigError
from logq.server.faults import crash_hook


def test_no_variable_no_hook() -> None:
    assert crash_hook({}) is None
    assert crash_hook({"LOGQ_FAULT_CRASH": " "}) is None


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"LOGQ_FAULT_CRASH": "redrive.nowhere=1"}, "unknown point"),
        ({"LOGQ_FAULT_CRASH": "redrive.held=often"}, "point=chance"),
        ({"LOGQ_FAULT_CRASH": "redrive.held=1.5"}, "within 0..1"),
        ({"LOGQ_FAULT_CRASH": "redrive.held", "LOGQ_FAULT_CRASH_DELAY_MS": "-1"}, "DELAY_MS"),
    ],
)
def test_bad_values_are_refused_by_name(environ: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match="LOGQ_FAULT_CRASH") as caught:
        crash_hook(environ)
    assert words in str(caught.value)


def test_a_chance_of_nothing_never_fires() -> None:
    hook = crash_hook({"LOGQ_FAULT_CRASH": "redrive.held=0,redrive.handed_back=0"})
    assert hook is not None

    async def points() -> None:
        for _ in range(100):
            await hook("redrive.held")
            await hook("redrive.handed_back")
            await hook("elsewhere")

    asyncio.run(points())  # still alive
