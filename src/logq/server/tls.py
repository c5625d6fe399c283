"""TLS for the native listener (the HTTP listener takes the same files
through uvicorn): TLS 1.2 or newer, the system's default ciphers."""

from __future__ import annotations

import ssl

from logq.server.security_config import TlsConfig


def server_tls_context(config: TlsConfig | None) -> ssl.SSLContext | None:
    if config is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.cert_file, config.key_file)
    return context
