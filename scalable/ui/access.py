"""Who may talk to the explorer, and how: loopback by default, a token anywhere else, reads only.

:class:`AccessPolicy` is decided once, when the server starts (:func:`access_policy`): bound
to a loopback address, no token is needed unless one is given; bound anywhere else, a token is
required, and one is generated when none is given. :class:`AccessGuard` then checks every
request, before any page or endpoint sees it:

* only ``GET`` and ``HEAD`` are served: anything that could write is refused (405);
* on loopback, the ``Host`` header must name a loopback host, so a page elsewhere cannot reach
  the explorer by pointing a DNS name at 127.0.0.1 (DNS rebinding);
* with a token, a request carries it as ``Authorization: Bearer TOKEN`` or
  ``X-Scalable-Token: TOKEN``, or carries the session cookie. A browser gets the cookie from
  the one-time URL printed at start (``/login?code=...``, good once) or from
  ``/login?token=TOKEN``; either redirects to a URL without the secret. Tokens are compared in
  constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import threading
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

from scalable.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["READ_METHODS", "AccessGuard", "AccessPolicy", "access_policy", "is_loopback"]

#: The only HTTP methods the explorer answers.
READ_METHODS: Final = frozenset({"GET", "HEAD"})
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) means this machine only: every address it resolves to is loopback."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        pass
    if text.lower() in _LOOPBACK_NAMES:
        return True
    try:
        infos = socket.getaddrinfo(text, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


@dataclass
class AccessPolicy:
    """The explorer's access rules, fixed at start.

    Attributes:
        loopback: the server listens on a loopback address only.
        token: the secret every request must carry (``None``: no token, loopback only).
        generated: ``token`` was made here, not given (so it must be printed).
        port: the port, which names the session cookie (cookies do not tell ports apart).
    """

    loopback: bool
    token: str | None
    generated: bool = False
    port: int = 0
    _codes: set[str] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cookie_name(self) -> str:
        """The session cookie's name (one per port)."""
        return f"scalable_ui_{self.port}"

    def session_value(self) -> str:
        """What the session cookie holds: derived from the token, so the browser never stores the token itself."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"scalable-ui-session", hashlib.sha256).hexdigest()

    def login_code(self) -> str:
        """A new code for a one-time login URL (spent by its first use)."""
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes.add(code)
        return code

    def spend_code(self, code: str) -> bool:
        """Whether ``code`` is an unspent login code; spends it."""
        with self._lock:
            for known in list(self._codes):
                if hmac.compare_digest(known.encode(), code.encode()):
                    self._codes.discard(known)
                    return True
        return False

    def token_matches(self, given: str | None) -> bool:
        """Whether ``given`` is the token (constant time)."""
        return self.token is not None and given is not None and hmac.compare_digest(given.encode(), self.token.encode())


def access_policy(host: str, port: int, token: str | None) -> AccessPolicy:
    """Decide the access rules for a server bound to ``host``: a token off loopback, generated when none is given."""
    loopback = is_loopback(host)
    if token is not None and not token.strip():
        raise ConfigError("--token is empty; give a secret of at least 16 characters, or leave it out")
    if token is not None and len(token) < 16:
        raise ConfigError("--token is shorter than 16 characters; give a longer secret, or leave it out to get one")
    if token is None and not loopback:
        return AccessPolicy(loopback=False, token=secrets.token_urlsafe(32), generated=True, port=port)
    return AccessPolicy(loopback=loopback, token=token, port=port)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _host_is_loopback(host_header: str | None) -> bool:
    if not host_header:
        return False
    host = host_header.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    text = host.lower()
    if text in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


class AccessGuard:
    """ASGI middleware applying an :class:`AccessPolicy` to every HTTP request."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
            return  # no websockets
        method = scope["method"]
        if method not in READ_METHODS:
            await _refuse(
                send,
                405,
                f"{method} is not allowed: the explorer only reads (GET and HEAD)",
                scope,
                headers=[(b"allow", b"GET, HEAD")],
            )
            return
        policy = self.policy
        if policy.loopback and not _host_is_loopback(_header(scope, b"host")):
            await _refuse(
                send, 421, "this explorer answers only requests addressed to this machine (Host header)", scope
            )
            return
        if policy.token is None:
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/login":
            await self._login(scope, send)
            return
        if self._authorised(scope):
            await self.app(scope, receive, send)
            return
        await _refuse(
            send,
            401,
            "this explorer needs its access token: open the login URL `scalable ui` printed, "
            "or send the header 'Authorization: Bearer TOKEN'",
            scope,
            headers=[(b"www-authenticate", b'Bearer realm="scalable ui"')],
        )

    def _authorised(self, scope: Scope) -> bool:
        policy = self.policy
        auth = _header(scope, b"authorization")
        if auth and auth[:7].lower() == "bearer " and policy.token_matches(auth[7:].strip()):
            return True
        if policy.token_matches(_header(scope, b"x-scalable-token")):
            return True
        cookies = SimpleCookie()
        try:
            cookies.load(_header(scope, b"cookie") or "")
        except Exception:  # a malformed Cookie header is no session
            return False
        morsel = cookies.get(policy.cookie_name)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), policy.session_value().encode())

    async def _login(self, scope: Scope, send: Send) -> None:
        policy = self.policy
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
        code = query["code"][0] if query.get("code") else None
        token = query["token"][0] if query.get("token") else None
        if (code is not None and policy.spend_code(code)) or policy.token_matches(token):
            cookie = (f"{policy.cookie_name}={policy.session_value()}; Path=/; HttpOnly; SameSite=Strict").encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [
                        (b"location", b"/runs"),
                        (b"set-cookie", cookie),
                        (b"cache-control", b"no-store"),
                        (b"content-length", b"0"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        what = "this login URL was used already or is not valid" if code is not None else "the token does not match"
        await _refuse(
            send, 401, f"{what}; restart `scalable ui` for a new URL, or log in with /login?token=TOKEN", scope
        )


async def _refuse(
    send: Send, status: int, message: str, scope: Scope, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer with ``error: message``: JSON under ``/api/``, plain text elsewhere."""
    text = f"error: {message}"
    if str(scope.get("path", "")).startswith("/api/"):
        body = json.dumps({"error": text, "status": status}).encode()
        kind = b"application/json"
    else:
        body = (text + "\n").encode()
        kind = b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", kind),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})
