"""A hipgen model server with slowed inference, for the fault-injection harness's deadline scenario::

    BENCH_FAULT_DELAY_S=1 BENCH_FAULT_RPC_LOG=rpcs.jsonl python -m bench.reliability.slow_server --port 0

It is ``python -m services.server`` (same arguments) with two additions made here, not in production code:

- every backend ``infer`` call sleeps ``BENCH_FAULT_DELAY_S`` seconds first (a slow GPU, an overloaded
  Triton): AngleService, GenerateService and ScoreService all run on the wrapped backend;
- a server interceptor appends one JSON line per RPC to ``BENCH_FAULT_RPC_LOG``: the method, the deadline
  the server saw (``remaining_s``, null without one), and how long the handler ran — which shows whether a
  caller's deadline reached this server through the gateway.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
import numpy as np

import services.server as server

DELAY_ENV, LOG_ENV = "BENCH_FAULT_DELAY_S", "BENCH_FAULT_RPC_LOG"


class SlowBackend:
    """A backend whose ``infer`` sleeps ``delay_s`` before answering; everything else is the wrapped one's."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s

    def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.delay_s)
        return self.inner.infer(model, inputs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RpcLog(grpc.ServerInterceptor):
    """One JSON line per RPC: ``{"method", "remaining_s", "seconds"}`` (``seconds``: handler time)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _write(self, method: str, remaining: float | None, t0: float) -> None:
        rec = {
            "method": method,
            "remaining_s": None if remaining is None or remaining > 1e8 else round(remaining, 3),
            "seconds": round(time.monotonic() - t0, 3),
        }
        with self._lock, open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or details.method.startswith("/grpc."):
            return handler
        method = details.method

        def unary(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            def run(request: Any, context: grpc.ServicerContext) -> Any:
                t0, remaining = time.monotonic(), context.time_remaining()
                try:
                    return behaviour(request, context)
                finally:
                    self._write(method, remaining, t0)

            return run

        def streaming(behaviour: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
            def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                t0, remaining = time.monotonic(), context.time_remaining()
                try:
                    yield from behaviour(request, context)
                finally:
                    self._write(method, remaining, t0)

            return run

        if handler.unary_unary:
            return handler._replace(unary_unary=unary(handler.unary_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=streaming(handler.unary_stream))
        if handler.stream_unary:
            return handler._replace(stream_unary=unary(handler.stream_unary))
        return handler._replace(stream_stream=streaming(handler.stream_stream))


def main(argv: list[str] | None = None) -> int:
    delay = float(os.environ.get(DELAY_ENV, "1.0"))
    make_backend, interceptors = server._backend, server.default_interceptors
    server._backend = lambda settings: SlowBackend(make_backend(settings), delay)  # type: ignore[assignment]
    log_path = os.environ.get(LOG_ENV)
    if log_path:
        server.default_interceptors = lambda *args, **kwargs: [  # type: ignore[assignment]
            RpcLog(log_path),
            *interceptors(*args, **kwargs),
        ]
    return server.main(argv)


if __name__ == "__main__":
    sys.exit(main())
