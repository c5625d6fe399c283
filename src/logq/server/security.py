"""Authentication, authorization and quotas, as both listeners apply them.

Every native command and every REST route names the permission it needs
(`publish`, `consume` or `admin` on a topic, and a group where there is
one; `any`: any signed-in user). The tables below are the whole policy.
With authentication off everyone is `anonymous` with every permission,
and quotas still apply per client address.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from logq.errors import AuthRequiredError
from logq.server.auth import ANONYMOUS, Authenticator, Principal, require
from logq.server.quotas import Quotas
from logq.server.security_config import SecurityConfig

# The commands anyone may send before signing in.
OPEN_COMMANDS = frozenset({"HELLO", "AUTH", "PING", "QUIT"})
ID = -1  # the topic is that of the message id in the first argument

_CONSUME = ("consume", 0, 1)
# command -> (permission, index of the topic argument, index of the group argument)
COMMANDS: dict[str, tuple[str, int | None, int | None]] = {
    "CLIENT": ("any", None, None),
    "COMMAND": ("any", None, None),
    "TOPICS": ("any", None, None),
    "GROUPS": ("any", None, None),
    "STATS": ("any", None, None),
    "CREDIT": ("any", None, None),
    "STOP": ("any", None, None),
    "DESCRIBE": ("any", 0, None),
    "CREATE": ("admin", 0, None),
    "ALTER": ("admin", 0, None),
    "DROP": ("admin", 0, None),
    "REDRIVE": ("admin", 0, None),
    "PURGE": ("admin", 0, None),
    "REQUEUE": ("admin", 0, None),
    "GROUP": ("admin", 0, 1),
    "PUB": ("publish", 0, None),
    "PUBBATCH": ("publish", 0, None),
    "PEEK": ("consume", 0, None),
    "READ": ("consume", 0, None),
    "DLQ": ("consume", 0, None),
    "MSG": ("consume", ID, None),
    "TRACE": ("consume", ID, None),
    **dict.fromkeys(
        (
            "REPLAY",
            "GROUPINFO",
            "RECV",
            "FETCH",
            "ACK",
            "ACKR",
            "NACK",
            "REJECT",
            "EXTEND",
            "SEEK",
            "CONSUME",
            "JOIN",
            "HEARTBEAT",
            "LEAVE",
        ),
        _CONSUME,
    ),
}

# (method, route) -> (permission, topic path parameter, group path parameter);
# "id": the topic of the message id; "body": the "name" of the JSON body.
ROUTES: dict[tuple[str, str], tuple[str, str | None, str | None]] = {
    ("GET", "/metrics"): ("any", None, None),
    ("GET", "/v1/stats"): ("any", None, None),
    ("GET", "/openapi.json"): ("any", None, None),
    ("GET", "/"): ("any", None, None),
    ("GET", "/v1/topics"): ("any", None, None),
    ("GET", "/v1/groups"): ("any", None, None),
    ("POST", "/v1/topics"): ("admin", "body", None),
    ("GET", "/v1/topics/{topic}"): ("any", "topic", None),
    ("PATCH", "/v1/topics/{topic}"): ("admin", "topic", None),
    ("DELETE", "/v1/topics/{topic}"): ("admin", "topic", None),
    ("POST", "/v1/topics/{topic}/messages"): ("publish", "topic", None),
    ("GET", "/v1/topics/{topic}/messages"): ("consume", "topic", None),
    ("GET", "/v1/topics/{topic}/dlq"): ("consume", "topic", None),
    ("POST", "/v1/topics/{topic}/dlq/redrive"): ("admin", "topic", None),
    ("DELETE", "/v1/topics/{topic}/dlq"): ("admin", "topic", None),
    ("POST", "/v1/topics/{topic}/dlq/purge"): ("admin", "topic", None),
    ("POST", "/v1/topics/{topic}/dlq/requeue"): ("admin", "topic", None),
    ("GET", "/v1/events"): ("any", None, None),
    ("GET", "/assets/{name}"): ("any", None, None),
    ("GET", "/v1/messages/{id}"): ("consume", "id", None),
    ("GET", "/v1/messages/{id}/trace"): ("consume", "id", None),
    ("PUT", "/v1/topics/{topic}/groups/{group}"): ("admin", "topic", "group"),
    ("POST", "/v1/topics/{topic}/replay"): ("consume", "topic", None),
    **{
        (method, f"/v1/topics/{{topic}}/groups/{{group}}{tail}"): ("consume", "topic", "group")
        for method, tail in (
            ("GET", ""),
            ("POST", "/receive"),
            ("POST", "/ack"),
            ("POST", "/nack"),
            ("POST", "/reject"),
            ("POST", "/extend"),
            ("POST", "/seek"),
        )
    },
}
PUBLIC_ROUTES = frozenset({("GET", "/health")})


def topic_of_id(message_id: str) -> str:
    """The topic part of "topic:partition:offset" (topics may hold colons)."""
    return message_id.rsplit(":", 2)[0]


@dataclass
class Security:
    authenticator: Authenticator
    quotas: Quotas

    @classmethod
    def from_config(cls, config: SecurityConfig) -> Security:
        return cls(Authenticator(config.auth), Quotas(config.quota, config.client_quotas))

    def __post_init__(self) -> None:
        self.auth_enabled = self.authenticator.enabled  # read per request: computed once

    def initial_principal(self) -> Principal | None:
        return None if self.auth_enabled else ANONYMOUS

    def client_key(self, principal: Principal | None, address: str) -> str:
        return principal.name if self.auth_enabled and principal is not None else address

    # -- the native protocol ------------------------------------------------------------

    def authorize_command(self, principal: Principal | None, name: str, args: list[bytes]) -> None:
        if name in OPEN_COMMANDS:
            return
        rule = COMMANDS.get(name)
        if rule is None:  # unknown commands get their own error from dispatch
            require(principal, "any")
            return
        permission, topic_at, group_at = rule
        topic = group = None
        if topic_at == ID and args:
            topic = topic_of_id(args[0].decode(errors="replace"))
        elif topic_at is not None and topic_at < len(args):
            topic = args[topic_at].decode(errors="replace")
        if group_at is not None and group_at < len(args):
            group = args[group_at].decode(errors="replace")
        require(principal, permission, topic, group)

    # -- HTTP ------------------------------------------------------------------------------

    async def authorize_route(
        self,
        method: str,
        route: str,
        headers: Mapping[str, str],
        params: Mapping[str, Any],
        body: Callable[[], Awaitable[bytes]],
        run: Callable[[Callable[[], bool]], Awaitable[bool]],
    ) -> Principal:
        if (method, route) in PUBLIC_ROUTES:
            return ANONYMOUS
        principal = await self.http_principal(headers, run)
        permission, topic_from, group_from = ROUTES.get((method, route), ("admin", None, None))
        topic: str | None = None
        if topic_from == "id":
            topic = topic_of_id(str(params.get("id", "")))
        elif topic_from == "body":
            topic = await _body_name(body)
        elif topic_from is not None:
            topic = str(params.get(topic_from, ""))
        group = str(params.get(group_from, "")) if group_from else None
        require(principal, permission, topic, group)
        return principal

    async def http_principal(
        self,
        headers: Mapping[str, str],
        run: Callable[[Callable[[], bool]], Awaitable[bool]],
    ) -> Principal:
        if not self.auth_enabled:
            return ANONYMOUS
        header = headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials:
            return await self.authenticator.login(None, credentials.strip(), run)
        if scheme.lower() == "basic" and credentials:
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise AuthRequiredError("malformed Basic credentials") from None
            username, _, password = decoded.partition(":")
            return await self.authenticator.login(username, password, run)
        raise AuthRequiredError(
            "authentication required: send Authorization: Bearer <token> or Basic credentials"
        )


async def _body_name(body: Callable[[], Awaitable[bytes]]) -> str | None:
    """The topic a create-topic body names (the handler validates the rest)."""
    try:
        data = msgspec.json.decode(await body())
    except msgspec.DecodeError:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None
