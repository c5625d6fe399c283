"""How a client signs in and what TLS it speaks: from arguments, else the
environment (LOGQ_TOKEN, LOGQ_USERNAME and LOGQ_PASSWORD, LOGQ_TLS_CA)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping


def credentials_from(
    token: str | None,
    username: str | None,
    password: str | None,
    environ: Mapping[str, str],
) -> tuple[str | None, str] | None:
    """(None, token), (username, password), or None to send no AUTH."""
    if token is None and username is None:
        token = environ.get("LOGQ_TOKEN") or None
        username = environ.get("LOGQ_USERNAME") or None
        password = password if password is not None else environ.get("LOGQ_PASSWORD")
    if token is not None:
        return None, token
    if username is not None:
        if password is None:
            raise ValueError("a username needs a password (or LOGQ_PASSWORD)")
        return username, password
    return None


def tls_context(
    tls: ssl.SSLContext | bool | None, environ: Mapping[str, str]
) -> ssl.SSLContext | None:
    """The client's TLS context: given, the system's CAs (True), a CA file
    from LOGQ_TLS_CA, or None for plain TCP."""
    if isinstance(tls, ssl.SSLContext):
        return tls
    ca_file = environ.get("LOGQ_TLS_CA")
    if tls is False or (tls is None and not ca_file):
        return None
    return ssl.create_default_context(cafile=ca_file or None)
