"""Per-client rate limits: a token bucket per client, refusing with RESOURCE_EXHAUSTED and RetryInfo.

The client is the bearer-token subject when auth is on (:data:`services.auth.client_id_var`), else the
peer's address without its port (each connection has a new port; one machine is one client). Each RPC
takes one token, a stream as much as a unary call (a long Generate stream costs its own time through
the generation limits, not here); buckets refill at ``rate_limit_rps`` up to ``rate_limit_burst``.
Over the limit the call fails before its handler runs, with a ``google.rpc.RetryInfo`` detail saying
when the next token will be there, so that well-behaved clients back off by exactly that much.

Health and reflection are exempt: a probe must never be refused because a client is busy. Limits are
per server process: with N replicas behind a load balancer a client gets up to N times the rate.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from services.auth import client_id_var, is_exempt
from services.errors import RequestError
from services.metrics import Behavior, wrap_behavior

if TYPE_CHECKING:
    from hipgen.settings import Settings

MAX_CLIENTS = 10_000  # buckets kept; the least recently seen client beyond that starts afresh


class RateLimiter:
    """Token buckets by client key: thread-safe, ``O(1)`` per call, bounded memory."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate} and {burst}")
        self.rate, self.burst = float(rate), burst
        self._clock = clock
        self._max = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take a token for ``key``: ``0.0`` when one was there, else the seconds until one will be
        (nothing is taken then)."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens - 1.0 if wait == 0.0 else tokens, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        return wait


def peer_host(peer: str) -> str:
    """``ipv4:10.0.0.7:53412`` -> ``10.0.0.7``; ``ipv6:[::1]:53412`` -> ``::1``; anything else as is."""
    kind, _, address = peer.partition(":")
    if kind == "ipv6" and address.startswith("["):
        return address[1:].partition("]")[0]
    if kind == "ipv4":
        return address.rpartition(":")[0] or address
    return peer


def client_key(context: grpc.ServicerContext) -> str:
    """Whom a call counts against: ``client:<token subject>``, else ``peer:<address>``."""
    subject = client_id_var.get()
    return f"client:{subject}" if subject else f"peer:{peer_host(context.peer())}"


class RateLimitInterceptor(grpc.ServerInterceptor):
    """Refuses calls over the client's rate with RESOURCE_EXHAUSTED + RetryInfo (module docstring).

    Put it after the auth interceptor: it reads the subject that one binds.
    """

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details: Any
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or is_exempt(details.method):
            return handler
        limiter = self.limiter

        def wrap(behavior: Behavior, _handler: grpc.RpcMethodHandler) -> Behavior:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                key = client_key(context)
                wait = limiter.acquire(key)
                if wait > 0:
                    who = key.partition(":")[2]
                    RequestError.exhausted(
                        f"rate limit exceeded for {who}: {limiter.rate:g} requests/s, burst "
                        f"{limiter.burst}; retry in {wait:.3f} s",
                        retry_after_s=wait,
                    ).abort(context)
                return behavior(request, context)

            return wrapped

        return wrap_behavior(handler, wrap)


def rate_limit_interceptor(settings: Settings) -> RateLimitInterceptor | None:
    """The interceptor ``settings`` ask for; ``None`` when ``rate_limit_rps`` is 0 (off)."""
    if settings.rate_limit_rps <= 0:
        return None
    return RateLimitInterceptor(RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst))


__all__ = [
    "MAX_CLIENTS",
    "RateLimitInterceptor",
    "RateLimiter",
    "client_key",
    "peer_host",
    "rate_limit_interceptor",
]
