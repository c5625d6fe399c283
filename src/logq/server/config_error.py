"""The one error a bad configuration raises."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration value is wrong; the message names the key."""
