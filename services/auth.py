"""Bearer-token authentication and per-service scopes for the hipgen gRPC services.

Tokens are JWTs signed with HS256 under one shared secret (setting ``auth_secret_file``), with the claims
``sub`` (the client id), ``scope`` (space-separated scopes, OAuth style) and ``exp``. HS256 rather than
an identity provider: the services and the gateway are one deployment that shares a Kubernetes secret,
and ``hipgen token create`` mints a token offline. Clients send ``authorization: Bearer <jwt>``.

The server interceptor answers UNAUTHENTICATED when the token is missing, garbled, expired or signed
with another key (the message says which, never the token), PERMISSION_DENIED naming the scope when the
token lacks the one the RPC needs (:data:`REQUIRED_SCOPE`), and lets ``grpc.health.v1`` and reflection
through untouched (probes and ``grpcurl list`` carry no token). The authenticated subject is bound to
:data:`client_id_var` for the handler, the rate limiter and the audit log.

Auth is off when ``auth_secret_file`` is unset (the default, so that ``make run`` works on 127.0.0.1);
serving that way on any other address logs a warning.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import jwt

from services.metrics import Behavior, bound_var, iterate_bound, split_method, wrap_behavior

if TYPE_CHECKING:
    from hipgen.settings import Settings

log = logging.getLogger("services.auth")

ADMIN = "admin"
#: Every scope a token may carry; ``admin`` grants all of them.
SCOPES = ("measure", "generate", "score", "datasets", ADMIN)

#: The scope each RPC needs, as data: a ``"service/Method"`` entry beats its ``"service"`` entry. An RPC
#: of a service not listed here (and not in :data:`EXEMPT_SERVICES`) needs ``admin``: deny by default.
REQUIRED_SCOPE: dict[str, str] = {
    "hipgen.v1.AngleService": "measure",
    "hipgen.v1.GenerateService": "generate",
    "hipgen.v1.ScoreService": "score",
    "hipgen.v1.DatasetService": "datasets",
    "hipgen.v1.DatasetService/GenerateLabeled": "generate",  # it generates images: the generate scope
}
#: Services anyone may call: health probes and server reflection.
EXEMPT_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash output
LEEWAY_S = 10.0  # clock skew tolerated on exp/iat between the minting and the serving machine

#: The authenticated client id (token subject) of the RPC this thread is serving; ``None`` without one.
client_id_var: ContextVar[str | None] = ContextVar("hipgen_client_id", default=None)
#: The scopes of that token (the gateway lets ``admin`` see every client's dataset jobs).
scopes_var: ContextVar[frozenset[str] | None] = ContextVar("hipgen_scopes", default=None)


@contextlib.contextmanager
def _bound_principal(principal: Principal) -> Iterator[None]:
    with bound_var(client_id_var, principal.subject), bound_var(scopes_var, principal.scopes):
        yield


def is_exempt(method: str) -> bool:
    """Whether ``/pkg.Service/Method`` needs no token at all."""
    return split_method(method)[0] in EXEMPT_SERVICES


def required_scope(method: str) -> str:
    """The scope ``/pkg.Service/Method`` needs (see :data:`REQUIRED_SCOPE`)."""
    service, name = split_method(method)
    return REQUIRED_SCOPE.get(f"{service}/{name}") or REQUIRED_SCOPE.get(service) or ADMIN


# --- tokens -----------------------------------------------------------------------------------------
def load_secret(path: str | Path) -> bytes:
    """The signing secret in ``path`` (surrounding whitespace stripped). Raises ``OSError`` when it
    cannot be read and ``ValueError`` when it is shorter than :data:`MIN_SECRET_BYTES`."""
    secret = Path(path).read_bytes().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"auth secret {path} has {len(secret)} bytes, fewer than {MIN_SECRET_BYTES}: make one with "
            "`hipgen token secret`"
        )
    return secret


def _scopes(scopes: Iterable[str]) -> list[str]:
    names = sorted({s.strip() for s in scopes if s.strip()})
    bad = [s for s in names if s not in SCOPES]
    if bad or not names:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(bad) or 'none'}")
    return names


def make_token(
    secret: bytes | str, subject: str, scopes: Iterable[str], ttl_s: float, *, now: float | None = None
) -> str:
    """A signed token for client ``subject`` granting ``scopes`` for ``ttl_s`` seconds from ``now``
    (default: the current time). Raises ``ValueError`` for an empty subject, an unknown scope or a
    non-positive ttl."""
    if not subject.strip():
        raise ValueError("subject (client id) must not be empty")
    if ttl_s <= 0:
        raise ValueError(f"ttl must be positive, got {ttl_s}")
    issued = int(time.time() if now is None else now)
    claims = {"sub": subject, "scope": " ".join(_scopes(scopes)), "iat": issued, "exp": issued + int(ttl_s)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for."""

    subject: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes


class TokenError(Exception):
    """Why a token was refused, in words safe to send back (never the token itself)."""


def verify_token(secret: bytes | str, token: str) -> Principal:
    """The principal of a valid ``token``; raises :class:`TokenError` saying what is wrong with it."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}, leeway=LEEWAY_S
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("bearer token has expired") from None
    except jwt.InvalidSignatureError:
        raise TokenError("bearer token signature is invalid (signed with another key)") from None
    except jwt.InvalidAlgorithmError:
        raise TokenError(f"bearer token is not signed with {ALGORITHM}") from None
    except jwt.MissingRequiredClaimError as err:
        raise TokenError(f"bearer token lacks the {err.claim!r} claim") from None
    except jwt.ImmatureSignatureError:
        raise TokenError("bearer token is not valid yet") from None
    except jwt.DecodeError:
        raise TokenError("bearer token is malformed (not a JWT)") from None
    except jwt.InvalidTokenError as err:  # any other claim check pyjwt makes
        raise TokenError(f"bearer token is invalid: {type(err).__name__}") from None
    subject, scope = claims.get("sub"), claims.get("scope", "")
    if not isinstance(subject, str) or not subject or not isinstance(scope, str):
        raise TokenError("bearer token claims are malformed ('sub' and 'scope' must be strings)")
    return Principal(subject, frozenset(scope.split()))


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The token of the ``authorization: Bearer <token>`` metadata; raises :class:`TokenError`."""
    values = [v for k, v in metadata or () if k == "authorization"]
    if not values:
        raise TokenError("missing bearer token: send metadata 'authorization: Bearer <token>'")
    scheme, _, token = str(values[0]).strip().partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer" or not token.strip():
        raise TokenError("authorization metadata must be exactly one 'Bearer <token>'")
    return token.strip()


# --- server side -------------------------------------------------------------------------------------
class AuthInterceptor(grpc.ServerInterceptor):
    """Checks each RPC's bearer token and scope (see the module docstring) and binds
    :data:`client_id_var` to the token subject for the handler (and every message of a response
    stream). Refusals are audited as ``auth.denied``."""

    def __init__(self, secret: bytes | str) -> None:
        self._secret = secret

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details: Any
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or is_exempt(details.method):
            return handler
        method, scope = details.method, required_scope(details.method)

        def wrap(behavior: Behavior, handler: grpc.RpcMethodHandler) -> Behavior:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                principal = self._authorize(context, method, scope)
                with bound_var(client_id_var, principal.subject), bound_var(scopes_var, principal.scopes):
                    result = behavior(request, context)
                if handler.response_streaming:
                    return iterate_bound(result, lambda: _bound_principal(principal))
                return result

            return wrapped

        return wrap_behavior(handler, wrap)

    def _authorize(self, context: grpc.ServicerContext, method: str, scope: str) -> Principal:
        try:
            principal = verify_token(self._secret, bearer_token(context.invocation_metadata()))
        except TokenError as err:
            _deny(context, grpc.StatusCode.UNAUTHENTICATED, str(err), method)
        if not principal.allows(scope):
            with bound_var(client_id_var, principal.subject):
                _deny(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"client {principal.subject!r} lacks scope {scope!r}, which {method.lstrip('/')} needs",
                    method,
                )
        return principal


def _deny(context: grpc.ServicerContext, code: grpc.StatusCode, message: str, method: str) -> NoReturn:
    from services.audit import audit  # services.audit reads client_id_var from here

    audit("auth.denied", method=method.lstrip("/"), code=code.name, reason=message, peer=context.peer())
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover - it always raises


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_interceptor(settings: Settings, host: str) -> AuthInterceptor | None:
    """The interceptor ``settings`` ask for, or ``None`` with auth off; warns when a non-loopback
    ``host`` is served without auth, or with tokens but without TLS (they would travel in clear)."""
    exposed = not is_loopback(host)
    if settings.auth_secret_file is None:
        if exposed:
            log.warning(
                "serving WITHOUT authentication on a non-loopback address: anyone who reaches it may call "
                "every RPC; set auth_secret_file (HIPGEN_AUTH_SECRET_FILE)",
                extra={"host": host},
            )
        return None
    if exposed and settings.tls_cert_file is None:
        log.warning(
            "bearer tokens are checked but the server speaks plaintext on a non-loopback address: tokens "
            "travel in clear; set tls_cert_file and tls_key_file",
            extra={"host": host},
        )
    return AuthInterceptor(load_secret(settings.auth_secret_file))


# --- client side -------------------------------------------------------------------------------------
def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """Call metadata carrying ``token`` (``stub.Method(req, metadata=bearer_metadata(t))``)."""
    return (("authorization", f"Bearer {token}"),)


def bearer_call_credentials(token: str) -> grpc.CallCredentials:
    """Call credentials sending ``token`` on every call of a TLS channel: combine them with
    ``grpc.composite_channel_credentials(services.tls.channel_credentials(...), ...)``. grpcio refuses
    call credentials on plaintext channels; there use :class:`BearerTokenInterceptor`."""
    return grpc.access_token_call_credentials(token)


class _CallDetails(
    namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class BearerTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call of a channel, plaintext ones included
    (``grpc.intercept_channel(channel, BearerTokenInterceptor(token))``): for 127.0.0.1 and for the
    gateway calling the services inside the cluster network."""

    def __init__(self, token: str) -> None:
        self._metadata = bearer_metadata(token)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [(k, v) for k, v in details.metadata or () if k != "authorization"]
        return _CallDetails(
            details.method,
            details.timeout,
            [*metadata, *self._metadata],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


__all__ = [
    "ADMIN",
    "EXEMPT_SERVICES",
    "REQUIRED_SCOPE",
    "SCOPES",
    "AuthInterceptor",
    "BearerTokenInterceptor",
    "Principal",
    "TokenError",
    "auth_interceptor",
    "bearer_call_credentials",
    "bearer_metadata",
    "bearer_token",
    "client_id_var",
    "is_exempt",
    "is_loopback",
    "load_secret",
    "make_token",
    "required_scope",
    "verify_token",
]
