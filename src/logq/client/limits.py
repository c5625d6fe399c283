"""The broker's per-message limits, checked in the client before a message
joins a batch: a message over a limit fails alone, at `send`, instead of
failing (and, across partitions, half storing) the batch it would have
shared with good messages.

The broker names its limits in the `HELLO` reply (`limits`); a broker that
does not is checked against the defaults below, which are the broker's own
defaults (docs/operations.md), and its own checks still apply.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from logq.errors import BadArgumentError, TooBigError

HEADER_BLOCK_BYTES = 2  # u16 count, when a record has headers
HEADER_ENTRY_BYTES = 6  # u16 name length, u32 value length, per header


@dataclass(frozen=True, slots=True)
class MessageLimits:
    message_bytes_max: int = 4 * 1024 * 1024  # key + value of one message
    key_bytes_max: int = 64 * 1024
    header_count_max: int = 64
    header_bytes_max: int = 64 * 1024  # one message's headers, encoded
    batch_bytes_max: int = 8 * 1024 * 1024  # one record batch, encoded

    @classmethod
    def from_server(cls, found: Mapping[str, object] | None) -> MessageLimits:
        """The limits of a HELLO reply's `limits` map; defaults for those missing."""
        known = {field.name for field in fields(cls)}
        given = {
            name: value
            for name, value in (found or {}).items()
            if name in known and isinstance(value, int) and value > 0
        }
        return cls(**given)

    def check(
        self, key: bytes | None, value: bytes | None, headers: Mapping[str, str] | None
    ) -> int:
        """Raise TooBigError for a message over a limit; else its encoded size in bytes."""
        key_size = len(key) if key is not None else 0
        size = key_size + (len(value) if value is not None else 0)
        if size > self.message_bytes_max:
            raise TooBigError(
                f"the message (key and value) is {size} bytes, "
                f"the limit message_bytes_max is {self.message_bytes_max}"
            )
        if key_size > self.key_bytes_max:
            raise TooBigError(
                f"the message has a key of {key_size} bytes, "
                f"the limit key_bytes_max is {self.key_bytes_max}"
            )
        header_size = 0
        if headers:
            if len(headers) > self.header_count_max:
                raise TooBigError(
                    f"the message has {len(headers)} headers, "
                    f"the limit header_count_max is {self.header_count_max}"
                )
            header_size = HEADER_BLOCK_BYTES
            for name, text in headers.items():
                if not isinstance(name, str) or not isinstance(text, str):
                    raise BadArgumentError(
                        f"header names and values must be str, got {name!r}: {text!r}"
                    )
                header_size += HEADER_ENTRY_BYTES + len(name.encode()) + len(text.encode())
            if header_size > self.header_bytes_max:
                raise TooBigError(
                    f"the message has {header_size} bytes of headers, "
                    f"the limit header_bytes_max is {self.header_bytes_max}"
                )
        return size + header_size

    def check_batch(
        self, keys: Sequence[bytes | None] | None, values: Sequence[bytes | None]
    ) -> int:
        """`check` for a ready-made batch without headers (the bulk path): the
        sizes are read with C-level passes, not a call per message; raises
        TooBigError naming the first message over a limit; else the bytes of
        keys and values in all."""
        value_sizes = (
            list(map(len, values))  # type: ignore[arg-type]  # None is not in them
            if None not in values
            else [0 if value is None else len(value) for value in values]
        )
        if keys is None or keys.count(None) == len(keys):
            sizes, key_total = value_sizes, 0
        else:
            key_sizes = [0 if key is None else len(key) for key in keys]
            biggest_key = max(key_sizes)
            if biggest_key > self.key_bytes_max:
                raise TooBigError(
                    f"message {key_sizes.index(biggest_key)} has a key of {biggest_key} bytes, "
                    f"the limit key_bytes_max is {self.key_bytes_max}"
                )
            sizes = list(map(operator.add, key_sizes, value_sizes))
            key_total = sum(key_sizes)
        biggest = max(sizes)
        if biggest > self.message_bytes_max:
            raise TooBigError(
                f"message {sizes.index(biggest)} (key and value) is {biggest} bytes, "
                f"the limit message_bytes_max is {self.message_bytes_max}"
            )
        return key_total + sum(value_sizes)
