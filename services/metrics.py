"""Per-RPC Prometheus metrics and request ids: the outermost server interceptor (DESIGN §4).

Metric names and labels are py-grpc-prometheus's (and go-grpc-prometheus's), so its dashboards and
alerts work unchanged::

    grpc_server_started_total{grpc_type, grpc_service, grpc_method}
    grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}
    grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method, grpc_code}   (histogram)
    grpc_server_msg_received_total / grpc_server_msg_sent_total{grpc_type, grpc_service, grpc_method}
    hipgen_grpc_in_flight{grpc_service, grpc_method}                                (gauge)

The histogram also carries ``grpc_code`` (DESIGN §4: latency by method *and* code); queries written for
the library's labels still work, they aggregate over it.

Why not ``py_grpc_prometheus.PromServerInterceptor`` (0.8, tried against grpcio 1.85 on unary and
server-streaming RPCs ending OK and in ``abort_with_status``):

* a response-streaming RPC never reaches ``grpc_server_handled_total`` nor the histogram: the library
  only counts the messages sent, so every Generate/Watch call would be missing from error rates;
* client-streaming and bidi RPCs are never counted in ``grpc_server_started_total``;
* it registers its collectors on every construction, so a second interceptor in one process (tests
  build many servers) raises ``DuplicateTimeseries``;
* it reads the code from the private ``context._state`` and cannot see a client that cancels a stream
  (the abandoned response generator is never finished).

Unary calls ending in ``abort_with_status`` did get the right code (INVALID_ARGUMENT); the code here
keeps that and uses only public ``ServicerContext`` methods: ``code()`` (what ``abort``/``set_code``
set), ``is_active()``/``time_remaining()`` for cancellation and deadlines, and ``add_callback`` for
streams the server stops iterating.

The collectors below are module globals on the default registry: registered once per process, shared by
every server, exposed by ``services.server.start_metrics``.

This module also holds the two helpers the other interceptors (auth, rate limits) wrap handlers with:
:func:`wrap_behavior` and :func:`iterate_bound`. They exist because grpcio calls ``intercept_service``
on its polling thread, not the thread that runs the handler, so context variables (request id, client
id) must be set inside the wrapped behaviour, and around every ``next()`` of a response stream.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

from hipgen.logs import new_request_id, request_id_var

log = logging.getLogger("services.metrics")

_SERVICE_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# generation and scoring take tens of seconds: the default buckets stop at 10 s
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

STARTED = Counter("grpc_server_started_total", "Total number of RPCs started on the server.", _SERVICE_LABELS)
HANDLED = Counter(
    "grpc_server_handled_total",
    "Total number of RPCs completed on the server, regardless of success or failure.",
    (*_SERVICE_LABELS, "grpc_code"),
)
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
    (*_SERVICE_LABELS, "grpc_code"),
    buckets=BUCKETS,
)
MSG_RECEIVED = Counter(
    "grpc_server_msg_received_total",
    "Total number of RPC stream messages received on the server.",
    _SERVICE_LABELS,
)
MSG_SENT = Counter(
    "grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.", _SERVICE_LABELS
)
IN_FLIGHT = Gauge("hipgen_grpc_in_flight", "RPCs being handled now.", ("grpc_service", "grpc_method"))

#: Incoming metadata a caller (the gateway, a client) may pass its own request id in.
REQUEST_ID_KEY = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")  # anything else is replaced: it ends up in logs

Behavior = Callable[[Any, grpc.ServicerContext], Any]


# --- handler wrapping shared by the interceptors ------------------------------------------------------
def grpc_type(handler: grpc.RpcMethodHandler) -> str:
    """``UNARY``, ``CLIENT_STREAMING``, ``SERVER_STREAMING`` or ``BIDI_STREAMING``."""
    if handler.request_streaming:
        return "BIDI_STREAMING" if handler.response_streaming else "CLIENT_STREAMING"
    return "SERVER_STREAMING" if handler.response_streaming else "UNARY"


def split_method(method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> ``("pkg.Service", "Method")``."""
    _, _, rest = method.partition("/")
    service, _, name = rest.partition("/")
    return service, name


def wrap_behavior(
    handler: grpc.RpcMethodHandler | None, wrap: Callable[[Behavior, grpc.RpcMethodHandler], Behavior]
) -> grpc.RpcMethodHandler | None:
    """``handler`` with its behaviour replaced by ``wrap(behavior, handler)`` (same arity, same
    (de)serializers); ``None`` (an unknown method: grpcio answers UNIMPLEMENTED) stays ``None``."""
    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        factory, behavior = grpc.stream_stream_rpc_method_handler, handler.stream_stream
    elif handler.request_streaming:
        factory, behavior = grpc.stream_unary_rpc_method_handler, handler.stream_unary
    elif handler.response_streaming:
        factory, behavior = grpc.unary_stream_rpc_method_handler, handler.unary_stream
    else:
        factory, behavior = grpc.unary_unary_rpc_method_handler, handler.unary_unary
    return factory(
        wrap(behavior, handler),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def iterate_bound(iterator: Iterator[Any], bind: Callable[[], AbstractContextManager[Any]]) -> Iterator[Any]:
    """Iterate ``iterator`` with ``bind()`` entered around each ``next()`` only: a response generator
    then sees the RPC's context variables, and nothing leaks into the pooled thread between messages."""
    it = iter(iterator)
    while True:
        with bind():
            try:
                item = next(it)
            except StopIteration:
                return
        yield item


class bound_var(AbstractContextManager[None]):  # noqa: N801 - used like a function
    """Set a context variable for the block and restore it after."""

    def __init__(self, var: ContextVar[Any], value: Any) -> None:
        self._var, self._value = var, value

    def __enter__(self) -> None:
        self._token = self._var.set(self._value)

    def __exit__(self, *exc: object) -> None:
        self._var.reset(self._token)


# --- the metrics interceptor --------------------------------------------------------------------------
def _final_code(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    """The status code grpcio sends for this call once the handler is done (its ``_completion_code`` /
    ``_abortion_code`` logic, through public methods): a gone client is CANCELLED, or
    DEADLINE_EXCEEDED when the deadline passed; else what ``abort``/``set_code`` set; else OK, or
    UNKNOWN when the handler raised."""
    if not context.is_active():  # the status is not sent yet, so inactive means the client left
        return (
            grpc.StatusCode.DEADLINE_EXCEEDED if context.time_remaining() <= 0 else grpc.StatusCode.CANCELLED
        )
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


class _Rpc:
    """One call's bookkeeping: finished exactly once, by the handler's end or by grpcio's termination
    callback (a stream the server stopped iterating because the client went away)."""

    def __init__(self, kind: str, service: str, method: str, request_id: str) -> None:
        self.labels = (kind, service, method)
        self.request_id = request_id
        self.start = time.perf_counter()
        self._done = False
        self._lock = threading.Lock()
        STARTED.labels(*self.labels).inc()
        IN_FLIGHT.labels(service, method).inc()

    def finish(self, code: grpc.StatusCode) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        elapsed = time.perf_counter() - self.start
        kind, service, method = self.labels
        HANDLED.labels(kind, service, method, code.name).inc()
        HANDLING_SECONDS.labels(kind, service, method, code.name).observe(elapsed)
        IN_FLIGHT.labels(service, method).dec()
        quiet = service.startswith(("grpc.health.", "grpc.reflection."))  # probes every few seconds
        with bound_var(request_id_var, self.request_id):
            log.log(
                logging.DEBUG if quiet else logging.INFO,
                "rpc finished",
                extra={"method": f"{service}/{method}", "code": code.name, "duration_s": round(elapsed, 4)},
            )

    def terminated(self, context: grpc.ServicerContext) -> None:
        """grpcio's termination callback: only reached first when the handler never ended, i.e. the
        client cancelled or its deadline passed."""
        late = context.time_remaining() <= 0
        self.finish(grpc.StatusCode.DEADLINE_EXCEEDED if late else grpc.StatusCode.CANCELLED)


def _request_id(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return new_request_id()


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts, times and gauges every RPC (names above) and binds :data:`hipgen.logs.request_id_var`
    for its handler: the caller's ``x-request-id`` metadata when it is a sane id, else a new one.

    Put it first in the chain, so that calls refused by the auth and rate-limit interceptors are counted
    with their codes and logged with a request id. Cheap to construct: the collectors are shared.
    """

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details: Any
    ) -> grpc.RpcMethodHandler | None:
        service, method = split_method(details.method)
        handler = continuation(details)
        if handler is None:
            return None
        kind = grpc_type(handler)

        def wrap(behavior: Behavior, handler: grpc.RpcMethodHandler) -> Behavior:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                rpc = _Rpc(kind, service, method, _request_id(context))
                if handler.request_streaming:
                    request = _counted(request, MSG_RECEIVED.labels(*rpc.labels))
                with bound_var(request_id_var, rpc.request_id):
                    try:
                        result = behavior(request, context)
                    except BaseException:
                        rpc.finish(_final_code(context, failed=True))
                        raise
                if not handler.response_streaming:
                    rpc.finish(_final_code(context, failed=False))
                    return result
                if not context.add_callback(lambda: rpc.terminated(context)):  # already over
                    rpc.finish(_final_code(context, failed=False))
                return _finished_stream(
                    iterate_bound(result, lambda: bound_var(request_id_var, rpc.request_id)), rpc, context
                )

            return wrapped

        return wrap_behavior(handler, wrap)


def _counted(iterator: Iterator[Any], counter: Any) -> Iterator[Any]:
    for item in iterator:
        counter.inc()
        yield item


def _finished_stream(responses: Iterator[Any], rpc: _Rpc, context: grpc.ServicerContext) -> Iterator[Any]:
    sent = MSG_SENT.labels(*rpc.labels)
    try:
        for item in responses:
            sent.inc()
            yield item
    except GeneratorExit:  # grpcio dropped the stream (client gone): the callback counts it
        rpc.finish(_final_code(context, failed=False))
        raise
    except BaseException:
        rpc.finish(_final_code(context, failed=True))
        raise
    rpc.finish(_final_code(context, failed=False))


__all__ = [
    "BUCKETS",
    "HANDLED",
    "HANDLING_SECONDS",
    "IN_FLIGHT",
    "REQUEST_ID_KEY",
    "STARTED",
    "MetricsInterceptor",
    "bound_var",
    "grpc_type",
    "iterate_bound",
    "split_method",
    "wrap_behavior",
]


# --- inference time per model ------------------------------------------------------------------------
INFERENCE_SECONDS = Histogram(
    "hipgen_inference_seconds",
    "Seconds of one backend inference call, by model and backend (ort: in-process, triton: remote).",
    ["model", "backend"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
INFERENCE_ERRORS = Counter(
    "hipgen_inference_errors",
    "Backend inference calls that raised, by model and backend.",
    ["model", "backend"],
)


class InstrumentedBackend:
    """A :class:`hipgen.inference.backend.Backend` that times every ``infer`` per model. A wrapper here
    rather than inside the backends: ``hipgen.inference`` stays free of prometheus-client, which only
    the servers install."""

    def __init__(self, inner: Any, kind: str) -> None:
        self.inner, self.kind = inner, kind

    def infer(self, model: str, inputs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner.infer(model, inputs)
        except Exception:
            INFERENCE_ERRORS.labels(model, self.kind).inc()
            raise
        finally:
            INFERENCE_SECONDS.labels(model, self.kind).observe(time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:  # ready, model_info, repository, ...
        return getattr(self.inner, name)
