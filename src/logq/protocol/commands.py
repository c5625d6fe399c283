"""The command registry: every native command, the permission it needs, and
which of its arguments name the topic and the group it acts on.

This is the one permission table. The native listener checks a command by
its entry here; each REST route names the native command it performs (and
where its topic and group come from: the path, the body, a message id), so
it is checked by the same entry; later listeners (SQS, Kafka) do the same.
A name without an entry is refused to everyone: nothing is allowed by
omission. The permissions:

- `open`: anyone, before signing in (`HELLO`, `AUTH`, `PING`, `QUIT`);
- `any`: any signed-in user; with a topic, one holding any permission on it;
- `publish`, `consume`, `admin`: that permission on the topic (and the group,
  where the command names one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PERMISSIONS: Final = ("open", "any", "publish", "consume", "admin")
MESSAGE_ID: Final = -1  # `topic`: the topic is that of the message id in the first argument


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    permission: str
    topic: int | None = None  # index of the argument naming the topic, or MESSAGE_ID
    group: int | None = None  # index of the argument naming the group

    def __post_init__(self) -> None:
        assert self.permission in PERMISSIONS, self.permission
        assert self.group is None or self.topic is not None, self.name


def _specs(*specs: CommandSpec) -> dict[str, CommandSpec]:
    return {spec.name: spec for spec in specs}


def _consume_in_group(*names: str) -> tuple[CommandSpec, ...]:
    return tuple(CommandSpec(name, "consume", 0, 1) for name in names)


REGISTRY: Final[dict[str, CommandSpec]] = _specs(
    *(CommandSpec(name, "open") for name in ("HELLO", "AUTH", "PING", "QUIT")),
    *(
        CommandSpec(name, "any")
        for name in (
            "CLIENT",
            "COMMAND",
            "TOPICS",
            "GROUPS",
            "STATS",
            "CREDIT",
            "STOP",
            "ARCHIVE",
            "ARCHIVED",
        )
    ),
    CommandSpec("DESCRIBE", "any", 0),
    *(CommandSpec(name, "admin", 0) for name in ("CREATE", "ALTER", "DROP", "RESTORE")),
    *(CommandSpec(name, "admin", 0) for name in ("REDRIVE", "PURGE", "REQUEUE")),
    CommandSpec("GROUP", "admin", 0, 1),
    CommandSpec("PUB", "publish", 0),
    CommandSpec("PUBBATCH", "publish", 0),
    *(CommandSpec(name, "consume", 0) for name in ("PEEK", "READ", "DLQ")),
    CommandSpec("MSG", "consume", MESSAGE_ID),
    CommandSpec("TRACE", "consume", MESSAGE_ID),
    *_consume_in_group("REPLAY", "GROUPINFO", "RECV", "FETCH", "SEEK", "CONSUME"),
    *_consume_in_group("JOIN", "HEARTBEAT", "LEAVE"),
    # settling what was delivered
    *_consume_in_group("ACK", "ACKR", "NACK", "REJECT", "EXTEND", "EXPIRED"),
)
