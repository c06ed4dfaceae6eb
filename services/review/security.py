"""The review app's web security: CSRF tokens, rate limits and response headers, as ASGI middleware.

CSRF uses the synchronizer-token pattern: a random token lives in the signed session cookie and every
unsafe request (POST, PUT, PATCH, DELETE) must echo it, in the ``X-CSRF-Token`` header (fetch calls)
or the ``csrf_token`` field of a urlencoded form. It is written here rather than taken from
starlette-csrf because that package implements the double-submit-cookie variant (a second, readable
cookie) and checks headers only; the session already holds a secret, and one middleware that also
reads form posts covers both kinds of request. The session cookie is ``SameSite=Strict`` besides.

Rate limits reuse the gRPC services' token bucket (:class:`services.ratelimit.RateLimiter`) keyed by
client address, with a much smaller bucket for invitation links (guessing one is the attack).
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from services.ratelimit import RateLimiter

log = logging.getLogger("services.review")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = b"x-csrf-token"
CSRF_FIELD = "csrf_token"
MAX_BODY = 1 << 20  # requests here are clicks and small JSON; nothing uploads files

#: No inline script or style, nothing from another origin, never framed, forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),  # an invitation link must never leak through Referer
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-store"),
]


def csrf_token(session: MutableMapping[str, Any]) -> str:
    """The session's CSRF token, made on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


async def _plain(send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class CSRFMiddleware:
    """Refuses an unsafe request whose token does not match the session's (403). Must run inside
    Starlette's SessionMiddleware (it reads ``scope["session"]``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE:
            await self.app(scope, receive, send)
            return
        body, too_big = b"", False
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                too_big = True
                break
            if not message.get("more_body"):
                break
        if too_big:
            await _plain(send, 413, "request body too large")
            return
        headers = dict(scope["headers"])
        sent = headers.get(CSRF_HEADER, b"")
        if not sent and headers.get(b"content-type", b"").startswith(b"application/x-www-form-urlencoded"):
            sent = (parse_qs(body.decode("utf-8", "replace")).get(CSRF_FIELD) or [""])[0].encode()
        expected = scope.get("session", {}).get("csrf")
        # bytes on both sides: compare_digest refuses non-ASCII str, and a header may carry anything
        if not isinstance(expected, str) or not sent or not hmac.compare_digest(sent, expected.encode()):
            await _plain(send, 403, "CSRF token missing or wrong: reload the page and try again")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RateLimitMiddleware:
    """429 with ``Retry-After`` when a client address runs out of tokens."""

    def __init__(self, app: ASGIApp, *, rps: float, burst: int) -> None:
        self.app = app
        self.general = RateLimiter(rps, burst)
        self.invites = RateLimiter(min(rps, 0.2), min(burst, 10))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = (scope.get("client") or ("?", 0))[0]
            limiter = self.invites if scope["path"].startswith("/invite/") else self.general
            wait = limiter.acquire(client)
            if wait > 0:
                retry = str(max(1, math.ceil(wait))).encode()
                await _plain(send, 429, "too many requests; slow down", [(b"retry-after", retry)])
                return
        await self.app(scope, receive, send)


class SecurityHeadersMiddleware:
    """Adds :data:`SECURITY_HEADERS` to every response (HTML, JSON and images alike)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in SECURITY_HEADERS if k not in names),
                ]
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except Exception:
            # an unexpected error: answer 500 here, inside this middleware, so that it too carries the
            # headers (Starlette's own error page is made outside every user middleware), with no trace
            log.exception("review app: unhandled error on %s", scope.get("path"))
            if started:
                raise
            await _plain(with_headers, 500, "internal error: the app logged it; nothing was changed")
