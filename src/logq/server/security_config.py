"""The `auth:`, `quotas:` and `tls:` sections of the config file.

    auth:
      users:
        alice: {password: "pbkdf2-sha256$...", roles: [producer]}   # logq auth hash-password
        ci:    {token: "sha256$...", roles: [admin]}                # logq auth new-token
      roles:
        producer: [{topics: "orders*", allow: [publish]}]
        billing:  [{topics: "orders*", groups: "billing*", allow: [consume]}]
    quotas:
      default: {messagesPerSecond: 0, bytesPerSecond: 0, requestsPerSecond: 0}   # 0: none
      clients: {alice: {messagesPerSecond: 1000}}
    tls: {certFile: server.pem, keyFile: server.key}

Every key is checked; a bad one is a ConfigError naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logq.server.auth import ADMIN_ROLE, PERMISSIONS, AuthConfig, Grant, User
from logq.server.config_parsing import ConfigError, check_keys, mapping
from logq.server.quotas import Quota


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    auth: AuthConfig = field(default_factory=AuthConfig)
    quota: Quota = field(default_factory=Quota)
    client_quotas: dict[str, Quota] = field(default_factory=dict)
    tls: TlsConfig | None = None


def parse_security(data: Mapping[str, Any], base: SecurityConfig) -> SecurityConfig:
    auth = _auth(mapping("auth", data.get("auth"))) if "auth" in data else base.auth
    quota, clients = base.quota, base.client_quotas
    if "quotas" in data:
        quotas = mapping("quotas", data["quotas"])
        check_keys("quotas", quotas, {"default", "clients"})
        quota = _quota("quotas.default", quotas.get("default"))
        clients = {
            str(name): _quota(f"quotas.clients.{name}", value)
            for name, value in mapping("quotas.clients", quotas.get("clients")).items()
        }
    tls = base.tls
    if "tls" in data:
        section = mapping("tls", data["tls"])
        check_keys("tls", section, {"certFile", "keyFile"})
        tls = tls_files(section.get("certFile"), section.get("keyFile"), "tls.")
    return SecurityConfig(auth, quota, clients, tls)


def tls_files(cert: object, key: object, prefix: str = "--tls-") -> TlsConfig:
    names = ("certFile", "keyFile") if prefix == "tls." else ("cert", "key")
    paths: list[Path] = []
    for name, value in zip(names, (cert, key), strict=True):
        if not isinstance(value, str | Path) or not Path(value).is_file():
            raise ConfigError(f"{prefix}{name}: expected a readable file, got {value!r}")
        paths.append(Path(value))
    return TlsConfig(paths[0], paths[1])


def _auth(section: Mapping[str, Any]) -> AuthConfig:
    check_keys("auth", section, {"users", "roles"})
    roles = _roles(mapping("auth.roles", section.get("roles")))
    users: list[User] = []
    for name, value in mapping("auth.users", section.get("users")).items():
        key = f"auth.users.{name}"
        entry = mapping(key, value)
        check_keys(key, entry, {"password", "token", "roles"})
        if ("password" in entry) == ("token" in entry):
            raise ConfigError(f"{key}: give exactly one of password and token")
        role_names = entry.get("roles", [])
        if not isinstance(role_names, list) or not role_names:
            raise ConfigError(f"{key}.roles: expected a list of role names")
        grants: list[Grant] = []
        for role in role_names:
            if role not in roles:
                raise ConfigError(f"{key}.roles: no role {role!r} (known: {', '.join(roles)})")
            grants.extend(roles[role])
        users.append(
            User(
                str(name),
                tuple(grants),
                password_hash=_secret(f"{key}.password", entry.get("password"), "pbkdf2-sha256$"),
                token_hash=_secret(f"{key}.token", entry.get("token"), "sha256$"),
            )
        )
    return AuthConfig(tuple(users))


def _roles(section: Mapping[str, Any]) -> dict[str, tuple[Grant, ...]]:
    roles: dict[str, tuple[Grant, ...]] = {"admin": ADMIN_ROLE}
    for name, grants in section.items():
        if not isinstance(grants, list):
            raise ConfigError(f"auth.roles.{name}: expected a list of grants")
        parsed: list[Grant] = []
        for index, item in enumerate(grants):
            where = f"auth.roles.{name}[{index}]"
            grant = mapping(where, item)
            check_keys(where, grant, {"topics", "groups", "allow"})
            allow = grant.get("allow")
            if not isinstance(allow, list) or not allow or any(a not in PERMISSIONS for a in allow):
                raise ConfigError(f"{where}.allow: expected a list of {', '.join(PERMISSIONS)}")
            parsed.append(
                Grant(
                    str(grant.get("topics", "*")), str(grant.get("groups", "*")), frozenset(allow)
                )
            )
        roles[str(name)] = tuple(parsed)
    return roles


def _secret(key: str, value: object, prefix: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(prefix):
        tool = "logq auth new-token" if prefix == "sha256$" else "logq auth hash-password"
        raise ConfigError(f"{key}: expected a {prefix}... value made by `{tool}`")
    return value


def _quota(key: str, value: object) -> Quota:
    section = mapping(key, value)
    check_keys(key, section, {"messagesPerSecond", "bytesPerSecond", "requestsPerSecond"})
    numbers: list[int] = []
    for name in ("messagesPerSecond", "bytesPerSecond", "requestsPerSecond"):
        number = section.get(name, 0)
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= 2**40:
            raise ConfigError(f"{key}.{name}: expected an integer >= 0 (0: no limit)")
        numbers.append(number)
    return Quota(*numbers)
