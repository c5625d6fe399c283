"""Who may do what: users, their credentials, roles and grants.

A user signs in with a password or a token:

- Passwords are stored as `pbkdf2-sha256$<iterations>$<salt>$<hash>`: a salted
  PBKDF2-HMAC-SHA256 (SCRAM's hashing), so the config never holds a
  password. `logq auth hash-password` makes one. A check costs about a
  third of a second on purpose. It runs off the event loop, and a
  successful one is remembered (by a SHA-256 of the password), so HTTP Basic
  on every request stays cheap.
- Tokens are random (`logq auth new-token`) and stored as `sha256$<hex>`.
  They have 256 bits, so one SHA-256 is enough.

Roles are lists of grants: topic and group patterns (shell-style, `orders*`)
with the permissions `publish`, `consume` and `admin`. The built-in role
`admin` grants everything. Secrets are never logged; failures say only that
the credentials are not valid.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, TypeVar

from logq.errors import AuthRequiredError, ForbiddenError
from logq.server.auth_throttle import SignInThrottle

PERMISSIONS = ("publish", "consume", "admin")
PBKDF2_ITERATIONS = 600_000
_VERIFIED_MAX = 4096
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Grant:
    topics: str = "*"
    groups: str = "*"
    allow: frozenset[str] = frozenset(PERMISSIONS)

    def covers(self, permission: str, topic: str | None, group: str | None) -> bool:
        return (
            permission in self.allow
            and (topic is None or fnmatchcase(topic, self.topics))
            and (group is None or fnmatchcase(group, self.groups))
        )


ADMIN_ROLE = (Grant(),)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    grants: tuple[Grant, ...]
    password_hash: str | None = None
    token_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, as a connection or request carries it."""

    name: str
    grants: tuple[Grant, ...]

    def allows(self, permission: str, topic: str | None = None, group: str | None = None) -> bool:
        return any(grant.covers(permission, topic, group) for grant in self.grants)


ANONYMOUS = Principal("anonymous", ADMIN_ROLE)  # everyone, while authentication is off


@dataclass(frozen=True, slots=True)
class AuthConfig:
    users: tuple[User, ...] = ()
    iterations: int = PBKDF2_ITERATIONS

    @property
    def enabled(self) -> bool:
        return bool(self.users)


# -- credentials -------------------------------------------------------------------------


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2-sha256${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, iterations, salt, digest = encoded.split("$")
        if scheme != "pbkdf2-sha256":
            return False
        expected = base64.b64decode(digest)
        found = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(salt), int(iterations)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, expected)


def new_token() -> tuple[str, str]:
    """A fresh token and the `sha256$...` form the config stores."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return "sha256$" + hashlib.sha256(token.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- the authenticator ---------------------------------------------------------------------


@dataclass
class Authenticator:
    config: AuthConfig
    throttle: SignInThrottle = field(default_factory=SignInThrottle)
    _by_name: dict[str, User] = field(init=False)
    _by_token: dict[str, User] = field(init=False)
    _verified: OrderedDict[bytes, str] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self._by_name = {user.name: user for user in self.config.users}
        self._by_token = {u.token_hash: u for u in self.config.users if u.token_hash}

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    async def login(
        self,
        username: str | None,
        secret: str,
        run: Callable[[Callable[[], bool]], Any] | None = None,
        address: str = "local",
    ) -> Principal:
        """The principal for a token (no username) or a username and password,
        signing in from `address`; `run` runs the password check off the event
        loop. Failures are throttled per user and per address."""
        self.throttle.check(username, address)
        try:
            principal = await self._login(username, secret, run)
        except AuthRequiredError:
            self.throttle.failed(username, address)
            raise
        self.throttle.succeeded(username)
        return principal

    async def _login(
        self,
        username: str | None,
        secret: str,
        run: Callable[[Callable[[], bool]], Any] | None,
    ) -> Principal:
        if username is None:
            user = self._by_token.get(hash_token(secret))
            if user is None:
                raise AuthRequiredError("invalid token")
            return Principal(user.name, user.grants)
        user = self._by_name.get(username)
        key = hashlib.sha256(f"{username}\0{secret}".encode()).digest()
        if user is not None and self._verified.get(key) == user.name:
            self._verified.move_to_end(key)
            return Principal(user.name, user.grants)
        if user is None or user.password_hash is None:
            # the same work either way, so timing does not tell which names exist
            dummy = f"pbkdf2-sha256${self.config.iterations}$AAAAAAAAAAAAAAAAAAAAAA==$AAAA"
            await _run(run, lambda: verify_password(secret, dummy))
            raise AuthRequiredError("invalid username or password")
        encoded = user.password_hash
        if not await _run(run, lambda: verify_password(secret, encoded)):
            raise AuthRequiredError("invalid username or password")
        self._verified[key] = user.name
        while len(self._verified) > _VERIFIED_MAX:
            self._verified.popitem(last=False)
        return Principal(user.name, user.grants)


async def _run(run: Callable[[Callable[[], bool]], Any] | None, check: Callable[[], bool]) -> bool:
    if run is None:
        return await asyncio.get_running_loop().run_in_executor(None, check)
    return bool(await run(check))


def require(
    principal: Principal | None,
    permission: str,
    topic: str | None = None,
    group: str | None = None,
) -> None:
    """Refuse unless `principal` holds `permission` on the topic (and group)."""
    if principal is None:
        raise AuthRequiredError("authentication required: AUTH first (see docs/operations.md)")
    if permission == "any":
        if topic is None or any(principal.allows(p, topic, group) for p in PERMISSIONS):
            return
    elif principal.allows(permission, topic, group):
        return
    what = "use" if permission == "any" else permission
    target = "" if topic is None else f" topic {topic!r}" + (f" group {group!r}" if group else "")
    raise ForbiddenError(f"user {principal.name!r} may not {what}{target}")
