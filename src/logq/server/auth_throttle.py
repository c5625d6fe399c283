"""Failed sign-ins slow down whoever makes them: per user and per address.

Each user name and each client address has a count of failed sign-ins. The
first `failures_max` cost nothing more; each one after that makes the next
try wait (1 s, then doubling, up to `lockout_ms_max`), and a try during the
wait is refused with `THROTTLED` before any credential is checked. So
reconnecting does not reset anything, and guessing from many connections,
or many users' passwords from one address, goes no faster than the waits.
A success clears the user's count; an address's count (and a user's) is
forgotten `FORGET_AFTER_S` after its last failure. Every counted failure
is logged (the user name and address, never the secret) and counted for
`/metrics`. The table holds at most `KEYS_MAX` names and addresses, the
least recently failed going first.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from logq.errors import ThrottledError

logger = logging.getLogger("logq.server.auth")

KEYS_MAX = 100_000  # users and addresses remembered (about 100 bytes each)
FIRST_WAIT_MS = 1_000
FORGET_AFTER_S = 900.0  # a count starts again after 15 minutes without a failure


@dataclass(slots=True)
class _Failures:
    count: int = 0
    wait_until: float = 0.0  # monotonic seconds
    last_failure: float = 0.0


class SignInThrottle:
    def __init__(
        self,
        failures_max: int = 5,
        lockout_ms_max: int = 60_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures_max = failures_max
        self.lockout_ms_max = lockout_ms_max
        self._clock = clock
        self._table: OrderedDict[str, _Failures] = OrderedDict()
        self.failures = 0  # sign-ins refused for bad credentials
        self.throttled = 0  # tries refused unchecked, during a wait

    def check(self, username: str | None, address: str) -> None:
        """Refuse a try while the user or the address must wait."""
        now = self._clock()
        for key in _keys(username, address):
            entry = self._table.get(key)
            if entry is not None and entry.wait_until > now:
                self.throttled += 1
                wait_ms = int((entry.wait_until - now) * 1000) + 1
                raise ThrottledError(
                    f"too many failed sign-ins for {_describe(key)}: retry in {wait_ms} ms"
                )

    def failed(self, username: str | None, address: str) -> None:
        self.failures += 1
        now = self._clock()
        counts = []
        for key in _keys(username, address):
            entry = self._table.pop(key, None)
            if entry is None or now - entry.last_failure > FORGET_AFTER_S:
                entry = _Failures()
            self._table[key] = entry  # most recent last
            entry.count += 1
            entry.last_failure = now
            counts.append(entry.count)
            over = entry.count - self.failures_max
            if over >= 0:
                wait_ms = min(self.lockout_ms_max, FIRST_WAIT_MS << min(over, 30))
                entry.wait_until = now + wait_ms / 1000
        while len(self._table) > KEYS_MAX:
            self._table.popitem(last=False)
        logger.warning(
            "sign-in failed: user %r from %s (failures in a row: %s)",
            username or "(token)",
            address,
            ", ".join(
                f"{n} of the {kind}"
                for n, kind in zip(counts, ("user", "address")[-len(counts) :], strict=True)
            ),
        )

    def succeeded(self, username: str | None) -> None:
        if username is not None:
            self._table.pop(f"user:{username}", None)

    def statistics(self) -> dict[str, int]:
        now = self._clock()
        return {
            "sign_in_failures": self.failures,
            "sign_in_throttled": self.throttled,
            "sign_in_waiting": sum(1 for e in self._table.values() if e.wait_until > now),
        }


def _keys(username: str | None, address: str) -> tuple[str, ...]:
    return (
        (f"address:{address}",) if username is None else (f"user:{username}", f"address:{address}")
    )


def _describe(key: str) -> str:
    kind, _, name = key.partition(":")
    return f"user {name!r}" if kind == "user" else f"address {name}"
