"""Retry backoff: how long a message waits before its next delivery.

After a nack without an explicit delay, or a lease that expired, attempt n
(deliveries made so far) waits `initial * multiplier**(n-1)`, capped at
`max`, minus up to `jitter` of it at random (so retries of many messages
spread out instead of arriving together). The default waits nothing, as
SQS makes a nacked message visible at once; topics and groups opt in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from logq.durations import parse_duration_ms
from logq.errors import BadArgumentError

BACKOFF_MS_MAX = 7 * 86_400_000


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_ms: int = 0
    multiplier: float = 2.0
    max_ms: int = 300_000
    jitter: float = 0.0

    def delay_ms(self, attempt: int, draw: float) -> int:
        """The wait before delivery `attempt + 1`; `draw` is uniform in [0, 1)."""
        if self.initial_ms <= 0:
            return 0
        base = min(self.initial_ms * self.multiplier ** max(attempt - 1, 0), self.max_ms)
        return int(base * (1.0 - self.jitter * draw))

    def as_dict(self) -> dict[str, Any]:
        return {
            "initial_ms": self.initial_ms,
            "multiplier": self.multiplier,
            "max_ms": self.max_ms,
            "jitter": self.jitter,
        }


def parse_backoff(name: str, value: object, base: Backoff | None = None) -> Backoff:
    """`{"initial": "1s", "multiplier": 2, "max": "5m", "jitter": 0.2}` (each
    optional; `initial_ms` and `max_ms` also accepted), or a duration for
    `initial` alone."""
    result = base or Backoff()
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = {"initial": value}
    if not isinstance(value, Mapping):
        raise BadArgumentError(
            f'{name} must be an object like {{"initial": "1s", "multiplier": 2}}'
        )
    initial, multiplier, maximum, jitter = (
        result.initial_ms,
        result.multiplier,
        result.max_ms,
        result.jitter,
    )
    for key, item in value.items():
        if key in ("initial", "initial_ms"):
            initial = _bounded(f"{name}.{key}", parse_duration_ms(item, name=f"{name}.{key}"))
        elif key in ("max", "max_ms"):
            maximum = _bounded(f"{name}.{key}", parse_duration_ms(item, name=f"{name}.{key}"))
        elif key == "multiplier":
            multiplier = _number(f"{name}.multiplier", item, 1.0, 100.0)
        elif key == "jitter":
            jitter = _number(f"{name}.jitter", item, 0.0, 1.0)
        else:
            raise BadArgumentError(
                f"unknown {name} setting {key!r} (initial, multiplier, max, jitter)"
            )
    if initial > maximum and not any(key in value for key in ("max", "max_ms")):
        maximum = initial  # only initial given, above the default cap: wait it every time
    if initial > maximum:
        raise BadArgumentError(f"{name}: initial ({initial} ms) is more than max ({maximum} ms)")
    return Backoff(initial, multiplier, maximum, jitter)


def _bounded(name: str, value: int) -> int:
    if value > BACKOFF_MS_MAX:
        raise BadArgumentError(f"{name} is {value} ms, the limit is 7 days")
    return value


def _number(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadArgumentError(f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise BadArgumentError(f"{name} is {value}, it must be within {low}..{high}")
    return float(value)
