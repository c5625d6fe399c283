"""What every part of the config file reader shares: the one error a bad
configuration raises, and the checks of a section's shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ConfigError(Exception):
    """A configuration value is wrong; the message names the key."""


def mapping(key: str, value: object) -> Mapping[str, Any]:
    """The section at `key` (absent: empty), or a ConfigError naming it."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    return value


def check_keys(key: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    """Unknown settings are refused, not ignored (a typo would silently not apply)."""
    for name in data:
        if name not in allowed:
            raise ConfigError(
                f"{key}.{name}: unknown setting (allowed: {', '.join(sorted(allowed))})"
            )
