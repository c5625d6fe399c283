"""Durations and times as people write them: "250ms", "30s", "5m", "2h", "7d",
an integer count of milliseconds, RFC 3339 times or epoch milliseconds."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from logq.errors import BadArgumentError

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
DURATION_MS_MAX = 10 * 365 * 86_400_000  # ten years: anything longer is a mistake


def parse_duration_ms(value: object, *, name: str = "duration") -> int:
    """Milliseconds from "30s"-style text or an integer count of ms."""
    if isinstance(value, bool):
        raise BadArgumentError(f"{name}: expected a duration like '30s' or ms, got {value!r}")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and value.strip().isdecimal():
        result = int(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        result = round(float(match.group(1)) * _UNITS_MS[match.group(2)])
    else:
        raise BadArgumentError(
            f"{name}: expected a duration like '250ms', '30s', '5m', '2h', '7d' or ms, got {value!r}"
        )
    if not 0 <= result <= DURATION_MS_MAX:
        raise BadArgumentError(f"{name}: {result} ms is outside 0..{DURATION_MS_MAX} ms")
    return result


def parse_time_ms(value: object, *, name: str = "time") -> int:
    """Epoch milliseconds from an RFC 3339 string, a date alone (`2025-01-01`:
    its midnight UTC), or an integer."""
    if isinstance(value, bool):
        raise BadArgumentError(f"{name}: expected an RFC 3339 time or epoch ms, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdecimal():
            return int(text)
        if len(text) == 10 and text[4] == "-" and text[7] == "-":  # a date: midnight UTC
            try:
                day = date.fromisoformat(text)
            except ValueError:
                pass
            else:
                return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                raise BadArgumentError(f"{name}: {value!r} has no time zone (add Z or +00:00)")
            return int(parsed.timestamp() * 1000)
    raise BadArgumentError(f"{name}: expected an RFC 3339 time or epoch ms, got {value!r}")


def format_duration_ms(value: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if value and value % size == 0:
            return f"{value // size}{unit}"
    return f"{value}ms"
