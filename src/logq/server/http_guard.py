"""What a browser must not be made to do: the HTTP listener's guard against
other web pages.

- **Cross-site requests.** A page on another site can make the browser send
  a form POST (no CORS preflight) to the broker, with the user's saved
  credentials. Requests that change something (POST, PUT, PATCH, DELETE)
  are refused when the browser says they come from another site
  (`Sec-Fetch-Site`) or another origin (`Origin`). Programs (curl, the
  clients) send neither header and are not affected.
- **DNS rebinding.** A page can make its own host name resolve to
  127.0.0.1 and then read the broker as same-origin. A broker listening on
  loopback only answers requests addressed to a loopback name or address,
  or to a name of `server.allowedHosts` (a reverse proxy in front).
- **Framing and sniffing.** Every answer says `X-Frame-Options: DENY` and
  `X-Content-Type-Options: nosniff`, so the dashboard cannot be framed for
  clickjacking nor an answer read as another type.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from logq.errors import ForbiddenError
from logq.server.http_common import error_response

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_HEADERS = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff")]


def _host_name(host: str) -> str:
    """'example.com:8080' -> 'example.com'; '[::1]:8080' -> '::1'; '' if malformed."""
    try:
        return (urlsplit(f"//{host}").hostname or "").lower()
    except ValueError:
        return ""


class BrowserGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: frozenset[str] | None = None,
        proxy_hosts: frozenset[str] = frozenset(),
    ) -> None:
        """`allowed_hosts`: the host names requests may address (None: any);
        `proxy_hosts`: names a reverse proxy serves the broker under, whose
        pages may change things even when the proxy rewrites Host."""
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.proxy_hosts = proxy_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await error_response(ForbiddenError(refusal))(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope) -> str | None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in (b"host", b"origin", b"sec-fetch-site"):
                headers[name] = value
        host = headers.get(b"host", b"").decode("latin-1")
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            return (
                f"host {host[:100]!r} is not this server's: it listens on loopback and answers"
                " only to localhost, 127.0.0.1 or [::1]"
            )
        if scope["method"] not in UNSAFE_METHODS:
            return None
        site = headers.get(b"sec-fetch-site")
        if site in (b"cross-site", b"same-site"):
            return f"a {site.decode()} request from a browser may not change anything here"
        origin = headers.get(b"origin")
        if origin is not None:
            parts = urlsplit(origin.decode("latin-1"))
            same = parts.netloc.lower() == host.lower()
            if not same and _host_name(parts.netloc) not in self.proxy_hosts:
                return (
                    f"a request from the page at {origin.decode('latin-1')[:100]!r} may not"
                    " change anything here (only this server's own pages may)"
                )
        return None


def loopback_hosts(bind_host: str) -> frozenset[str]:
    """The names a broker listening on `bind_host` (a loopback address) answers to."""
    return LOOPBACK_NAMES | {bind_host.strip("[]").lower()}
