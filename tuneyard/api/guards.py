"""Guards around the whole app (pure ASGI, outside every other middleware).

``NoSniff`` puts ``X-Content-Type-Options: nosniff`` on every response, errors, static files
and streams included: a browser then never runs as a script or renders as a page what the
server labelled as something else (a log or a study name rendered as text/plain).

``LoopbackOnly`` protects a server running without authentication (``--insecure-no-auth``,
bound to a loopback address), which trusts whoever can connect to it. A web page the user
visits can connect to it too: by DNS rebinding (its own name re-pointed to 127.0.0.1, so the
browser thinks it talks to the page's own origin) or by a plain cross-origin form or fetch.
So such a server answers only requests whose ``Host`` names it as the loopback it is
(``localhost``, ``127.0.0.1``, ``[::1]``, its own address, with its own port), and refuses
a POST, PUT, PATCH or DELETE that a browser marks as sent from another origin (``Origin`` or
``Sec-Fetch-Site``). A client outside a browser (the CLI, workers, curl) sends no ``Origin``
and is not affected.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneyard.api.errors import problem

NOSNIFF = (b"x-content-type-options", b"nosniff")
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class NoSniff:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != NOSNIFF[0]]
                message = {**message, "headers": [*headers, NOSNIFF]}
            await send(message)

        await self.app(scope, receive, send_nosniff)


def _header(scope: Scope, name: bytes) -> str | None:
    values = [v for k, v in scope.get("headers", ()) if k.lower() == name]
    if len(values) != 1:  # absent, or sent twice (which one would a proxy have read?)
        return None if not values else "\x00"
    return bytes(values[0]).decode("latin-1")


def split_host(value: str, scheme: str) -> tuple[str, int] | None:
    """(host, port) of a ``Host`` header value; None when it does not parse."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6]:port
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = value.partition(":")
    if not host:
        return None
    if not port_text:
        port = DEFAULT_PORTS.get(scheme)
        return None if port is None else (host, port)
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        return None
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackOnly:
    """Refuses (400) a request whose ``Host`` is not this loopback server, and (403) an unsafe
    request a browser sent from another origin. For a server without authentication only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scheme = scope.get("scheme", "http")
        host = _header(scope, b"host")
        found = split_host(host, scheme) if host and host != "\x00" else None
        if found is None or not self._is_this_server(found, scope.get("server")):
            await self._refuse(
                scope,
                receive,
                send,
                400,
                "Bad request",
                f"Host {host or '(none)'!r} does not name this server: without authentication "
                "it answers only at its loopback address (localhost, 127.0.0.1 or [::1], with "
                "its port), which protects it from web pages that re-point their own name "
                "at it (DNS rebinding)",
            )
            return
        if scope["type"] == "http" and scope["method"] in UNSAFE:
            why = self._cross_origin(scope, scheme, host or "")
            if why is not None:
                await self._refuse(
                    scope,
                    receive,
                    send,
                    403,
                    "Forbidden",
                    f"{why}: a server without authentication takes changes only from its own "
                    "pages and from clients outside a browser",
                )
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _is_this_server(found: tuple[str, int], server: Iterable[object] | None) -> bool:
        host, port = found
        if server is None:  # a Unix socket: no port to compare
            return _is_loopback(host)
        bound_host, bound_port = tuple(server)
        if port != bound_port:
            return False
        # Its own address as bound (an IP address under uvicorn), or any loopback name: a web
        # page's name can't be either, whatever its DNS says.
        return host == str(bound_host).lower() or _is_loopback(host)

    @staticmethod
    def _cross_origin(scope: Scope, scheme: str, host: str) -> str | None:
        origin = _header(scope, b"origin")
        if origin is not None and origin.lower() != f"{scheme}://{host.strip().lower()}":
            return f"the request comes from another origin ({origin!r})"
        site = _header(scope, b"sec-fetch-site")
        if site is not None and site.lower() not in ("same-origin", "none"):
            return f"the browser marks the request as {site!r}"
        return None

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, status: int, title: str, detail: str
    ) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await problem(status, title, detail)(scope, receive, send)
