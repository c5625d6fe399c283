"""Topic and group settings, validated once with messages that name the field.

Settings arrive from the REST API, the native protocol, the CLI and the
config file as plain mappings; `topic_settings` and `group_settings` turn
them into frozen values or raise BadArgumentError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from logq.broker.assignors import assignor
from logq.broker.backoff import Backoff, parse_backoff
from logq.durations import parse_duration_ms
from logq.errors import BadArgumentError
from logq.state.lane_guard import LanePolicy

TOPIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TOPIC_NAME_LENGTH_MAX = 200
GROUP_NAME_LENGTH_MAX = 200
CONSUMER_NAME_LENGTH_MAX = 200
PARTITIONS_MAX = 1024
MAX_DELIVERIES_MAX = 1000
IN_FLIGHT_MAX = 1_000_000
DLQ_SUFFIX = ".dlq"
SESSION_MIN_MS = 100
SESSION_MAX_MS = 3_600_000
STARVATION_SHARE_MIN = 1e-6  # a lower lane waits behind at most a million higher messages
STARVATION_TIMEOUT_MAX_MS = 86_400_000


class GroupMode(StrEnum):
    ORDERED = "ordered"
    SHARED = "shared"


@dataclass(frozen=True, slots=True)
class TopicSettings:
    partitions: int = 6
    retention_ms: int | None = 7 * 86_400_000
    retention_bytes: int | None = None
    max_deliveries: int = 5
    visibility_timeout_ms: int = 30_000
    dlq: str | None = None  # None: "<topic>.dlq"
    backoff: Backoff = field(default_factory=Backoff)
    ttl_ms: int | None = None  # None: messages do not expire (per-message TTL still applies)
    ttl_dead_letter: bool = False  # expired messages go to the DLQ rather than vanish
    max_delay_ms: int = 7 * 86_400_000  # delayed messages may be due at most this far ahead
    dedup_window_ms: int = 5 * 60_000  # a dedup id seen within this is not stored again
    trace: bool = True  # record each message's lifecycle (see broker/tracing.py)
    # tiered storage (logq/archive): closed segments copied to the broker's
    # archive; the local disk keeps `local_retention` of them (None: as
    # `retention`), the archive keeps what passed `retention` for audit reads
    # until `archive_retention` (None: as `retention`)
    archive: bool = False
    local_retention_ms: int | None = None
    local_retention_bytes: int | None = None
    archive_retention_ms: int | None = None

    def dlq_topic(self, topic: str) -> str:
        return self.dlq or f"{topic}{DLQ_SUFFIX}"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["backoff"] = self.backoff.as_dict()
        return data


@dataclass(frozen=True, slots=True)
class GroupSettings:
    mode: GroupMode = GroupMode.SHARED
    visibility_timeout_ms: int | None = None  # None: the topic's
    max_deliveries: int | None = None  # None: the topic's
    auto_ack: bool = False
    max_in_flight: int = 100_000  # unsettled deliveries per partition
    backoff: Backoff | None = None  # None: the topic's
    # shared groups, the starvation guard (state/lane_guard.py): a lower lane
    # with messages waiting lets round(1 / starvation_share) messages of
    # higher lanes pass, then gets one; or gets one once it has waited
    # starvation_timeout_ms (None: no time bound)
    starvation_share: float = 0.1
    starvation_timeout_ms: int | None = None
    # ordered groups: how partitions are spread over members, and how long a
    # partition that moves waits for its in-flight messages before it goes
    assignor: str = "sticky"
    revoke_timeout_ms: int = 10_000
    session_timeout_ms: int | None = None  # None: the broker's
    # replay groups: per partition, the offset where delivery ends (None: no end)
    end_offsets: tuple[int, ...] | None = None

    def lane_policy(self) -> LanePolicy:
        interval = round(1 / max(self.starvation_share, STARVATION_SHARE_MIN))
        return LanePolicy(interval, self.starvation_timeout_ms)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["end_offsets"] = None if self.end_offsets is None else list(self.end_offsets)
        data["mode"] = self.mode.value
        data["backoff"] = None if self.backoff is None else self.backoff.as_dict()
        return data


def check_name(kind: str, name: object, length_max: int) -> str:
    if not isinstance(name, str) or not name:
        raise BadArgumentError(f"{kind} name must be a non-empty string, got {name!r}")
    if len(name) > length_max:
        raise BadArgumentError(f"{kind} name is {len(name)} characters, the limit is {length_max}")
    if not TOPIC_NAME.match(name):
        raise BadArgumentError(
            f"{kind} name {name!r} may hold only letters, digits, '.', '_' and '-', "
            "and must start with a letter or digit"
        )
    return name


def check_topic_name(name: object) -> str:
    return check_name("topic", name, TOPIC_NAME_LENGTH_MAX)


def check_group_name(name: object) -> str:
    return check_name("group", name, GROUP_NAME_LENGTH_MAX)


def check_consumer_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > CONSUMER_NAME_LENGTH_MAX:
        raise BadArgumentError(
            f"consumer must be a string of 1..{CONSUMER_NAME_LENGTH_MAX} characters, got {name!r}"
        )
    if not name.isprintable():
        raise BadArgumentError("consumer name must be printable")
    return name


def _int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadArgumentError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise BadArgumentError(f"{name} is {value}, it must be within {low}..{high}")
    return value


def topic_settings(data: Mapping[str, Any], base: TopicSettings | None = None) -> TopicSettings:
    """Settings from a mapping; unknown keys are refused, not ignored."""
    result = base or TopicSettings()
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key == "partitions":
            changes[key] = _int(key, value, 1, PARTITIONS_MAX)
        elif key in ("retention_ms", "retention", "retention_time"):
            changes["retention_ms"] = None if value is None else parse_duration_ms(value, name=key)
        elif key == "retention_bytes":
            changes[key] = None if value is None else _int(key, value, 0, 2**62)
        elif key in ("max_deliveries",):
            changes[key] = _int(key, value, 1, MAX_DELIVERIES_MAX)
        elif key in ("visibility_timeout", "visibility_timeout_ms"):
            changes["visibility_timeout_ms"] = _lease(key, value)
        elif key == "dlq":
            changes[key] = None if value is None else check_topic_name(value)
        elif key == "backoff":
            changes[key] = Backoff() if value is None else parse_backoff(key, value, result.backoff)
        elif key in ("ttl", "ttl_ms"):
            changes["ttl_ms"] = None if value is None else _positive_duration(key, value)
        elif key in ("dedup_window", "dedup_window_ms"):
            changes["dedup_window_ms"] = _positive_duration(key, value)
        elif key in ("max_delay", "max_delay_ms"):
            changes["max_delay_ms"] = _positive_duration(key, value)
        elif key in ("ttl_dead_letter", "trace", "archive"):
            changes[key] = _bool(key, value)
        elif key in ("local_retention", "local_retention_ms"):
            changes["local_retention_ms"] = (
                None if value is None else _positive_duration(key, value)
            )
        elif key == "local_retention_bytes":
            changes[key] = None if value is None else _int(key, value, 0, 2**62)
        elif key in ("archive_retention", "archive_retention_ms"):
            changes["archive_retention_ms"] = (
                None if value is None else _positive_duration(key, value)
            )
        elif key == "name":
            continue
        else:
            raise BadArgumentError(f"unknown topic setting {key!r}")
    return _check_horizons(replace(result, **changes))


def _check_horizons(settings: TopicSettings) -> TopicSettings:
    """local_retention <= retention <= archive_retention (None: unbounded)."""

    def at_most(low: int | None, high: int | None) -> bool:
        return high is None or (low is not None and low <= high)

    if not at_most(settings.local_retention_ms, settings.retention_ms) and (
        settings.local_retention_ms is not None
    ):
        raise BadArgumentError(
            f"local_retention ({settings.local_retention_ms} ms) must not exceed"
            f" retention ({settings.retention_ms} ms)"
        )
    if settings.archive_retention_ms is not None and not at_most(
        settings.retention_ms, settings.archive_retention_ms
    ):
        raise BadArgumentError(
            f"archive_retention ({settings.archive_retention_ms} ms) must be at least"
            f" retention ({settings.retention_ms} ms)"
        )
    return settings


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise BadArgumentError(f"{key} must be true or false, got {value!r}")
    return value


def _session(key: str, value: object) -> int:
    session = parse_duration_ms(value, name=key)
    if not SESSION_MIN_MS <= session <= SESSION_MAX_MS:
        raise BadArgumentError(
            f"{key} is {session} ms, it must be within {SESSION_MIN_MS} ms..{SESSION_MAX_MS} ms"
        )
    return session


def _starvation(key: str, value: object) -> int:
    timeout = parse_duration_ms(value, name=key)
    if not 1 <= timeout <= STARVATION_TIMEOUT_MAX_MS:
        raise BadArgumentError(
            f"{key} is {timeout} ms, it must be within 1 ms..{STARVATION_TIMEOUT_MAX_MS} ms"
        )
    return timeout


def _end_offsets(value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) > PARTITIONS_MAX:
        raise BadArgumentError(f"end_offsets must be a list of offsets, got {value!r}")
    return tuple(_int("end_offsets", item, 0, 2**62) for item in value)


def _positive_duration(key: str, value: object) -> int:
    duration = parse_duration_ms(value, name=key)
    if duration < 1:
        raise BadArgumentError(f"{key} must be at least 1 ms, got {duration} ms")
    return duration


def _lease(key: str, value: object) -> int:
    lease = parse_duration_ms(value, name=key)
    if not 1 <= lease <= 12 * 3_600_000:
        raise BadArgumentError(f"{key} is {lease} ms, it must be within 1 ms..12h")
    return lease


def group_settings(data: Mapping[str, Any], base: GroupSettings | None = None) -> GroupSettings:
    result = base or GroupSettings()
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key == "mode":
            try:
                changes[key] = GroupMode(value)
            except ValueError:
                raise BadArgumentError(
                    f"mode must be 'ordered' or 'shared', got {value!r}"
                ) from None
        elif key in ("visibility_timeout", "visibility_timeout_ms", "lease"):
            changes["visibility_timeout_ms"] = None if value is None else _lease(key, value)
        elif key in ("max_deliveries", "retries"):
            changes["max_deliveries"] = (
                None if value is None else _int(key, value, 1, MAX_DELIVERIES_MAX)
            )
        elif key == "auto_ack":
            changes[key] = _bool(key, value)
        elif key == "assignor":
            assignor(value if isinstance(value, str) else repr(value))
            changes[key] = value
        elif key in ("revoke_timeout", "revoke_timeout_ms"):
            changes["revoke_timeout_ms"] = _lease(key, value)
        elif key in ("session_timeout", "session_timeout_ms"):
            changes["session_timeout_ms"] = None if value is None else _session(key, value)
        elif key == "end_offsets":
            changes[key] = _end_offsets(value)
        elif key == "max_in_flight":
            changes[key] = _int(key, value, 1, IN_FLIGHT_MAX)
        elif key == "backoff":
            changes[key] = None if value is None else parse_backoff(key, value, result.backoff)
        elif key == "starvation_share":
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not STARVATION_SHARE_MIN <= value <= 0.5
            ):
                raise BadArgumentError(
                    f"starvation_share must be a number in [{STARVATION_SHARE_MIN}, 0.5], "
                    f"got {value!r}"
                )
            changes[key] = float(value)
        elif key in ("starvation_timeout", "starvation_timeout_ms"):
            changes["starvation_timeout_ms"] = None if value is None else _starvation(key, value)
        elif key == "name":
            continue
        else:
            raise BadArgumentError(f"unknown group setting {key!r}")
    return replace(result, **changes)
