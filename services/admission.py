"""Server-wide admission control: at most ``max_concurrent_rpcs`` RPCs running or queued; more are
refused at once with RESOURCE_EXHAUSTED and a ``RetryInfo`` detail (DESIGN §3) instead of waiting in an
unbounded queue until their deadline passes.

Where grpcio does what (``grpc/_server.py``, 1.85): a call's interceptors run on the server's single
polling thread when the call arrives (``_process_event_and_continue`` -> ``_handle_call`` ->
``_find_method_handler``, inside the call's own ``contextvars.Context``); the handler they return is then
submitted to the server's thread pool as one task (``thread_pool.submit(state.context.run, ...)``) that
lasts until the unary answer is sent or the response stream ends. Calls beyond the pool's threads wait
in the pool's queue, without bound. A task runs to its end in every case, but the handler's behaviour
may never run at all: a call cancelled, or past its deadline, while it waited in the queue ends inside
grpcio (``_unary_request`` returns ``None``) without calling it.

So the count lives in the thread pool, not in the interceptor or the behaviour: :class:`AdmissionExecutor`
counts a task from ``submit`` until its future is done (completed, raised, or cancelled unrun), the
same bookkeeping grpcio's own ``maximum_concurrent_rpcs`` does. Nothing the client or the handler does
(cancelling while queued, abandoning a response stream, an exception, a deadline) can leave a slot
taken without a thread being taken too: a slot is exactly a task in the pool, running or queued. A
streaming RPC holds its slot until its stream ends (the task iterates it), as the brief of the limit
says: it holds a thread that long.

:class:`AdmissionInterceptor` reads that count on the polling thread as each call arrives (one thread
decides and submits, so the count it reads is exact) and refuses a call when ``limit`` tasks are in the
pool. A refusal is answered by a small separate pool (the *fast lane*, not counted): the interceptor
marks the call's context and the executor routes the task by that mark, so a refusal does not queue
behind the very calls it refuses to join. ``grpc.health.v1.Health/Check`` takes the fast lane too and
is never refused: a Kubernetes probe (1 s timeout) must not wait behind a full queue and have a busy pod
restarted. Reflection and ``Health/Watch`` (long-lived streams) stay exempt from refusal but run on the
counted pool. Should a grpcio version stop submitting ``Context.run`` (the mark cannot be read), every
task goes to the counted pool: refusals are still correct, only queued (a test checks the fast lane).

Why not ``grpc.server(maximum_concurrent_rpcs=...)``: it refuses with a bare RESOURCE_EXHAUSTED
("Concurrent RPC limit exceeded!"), no ``RetryInfo`` for clients to back off by; it refuses health
checks too, so probes fail exactly when a pod is busy; and it refuses before any handler runs, so the
metrics interceptor never counts the refused calls.

The advised delay is one typical call: a moving average of the counted tasks' run time (a slot frees
when a running call ends), between :data:`MIN_RETRY_S` and :data:`MAX_RETRY_S`, jittered ±50 % so that
the clients refused together do not come back together.
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc

from services.auth import is_exempt
from services.errors import RequestError
from services.metrics import Behavior, wrap_behavior

if TYPE_CHECKING:
    from hipgen.settings import Settings

log = logging.getLogger("services.admission")

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
FAST_LANE_WORKERS = 2  # refusals and health checks: each takes well under a millisecond of a thread
MIN_RETRY_S, MAX_RETRY_S = 0.1, 2.0
INITIAL_TYPICAL_S = 0.5  # the advised delay before any call has finished
EWMA_ALPHA = 0.2

_FAST = "fast"
#: Set (inside the call's context, by the interceptor) to send that call's task to the fast lane.
_LANE: contextvars.ContextVar[str | None] = contextvars.ContextVar("hipgen_admission_lane", default=None)


def _fast_lane(fn: Callable[..., Any]) -> bool:
    """Whether a submitted task belongs to the fast lane: grpcio submits ``state.context.run``, the
    bound ``run`` of the call's context, which carries the interceptor's mark."""
    ctx = getattr(fn, "__self__", None)
    return isinstance(ctx, contextvars.Context) and ctx.get(_LANE) == _FAST


class AdmissionExecutor(futures.ThreadPoolExecutor):
    """The server's thread pool, counting its tasks (running + queued) for :class:`AdmissionInterceptor`,
    with a small uncounted fast lane for refusals and health checks (module docstring)."""

    def __init__(
        self,
        max_workers: int,
        *,
        thread_name_prefix: str = "grpc",
        fast_lane_workers: int = FAST_LANE_WORKERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.max_workers = max_workers
        self._fast = futures.ThreadPoolExecutor(
            fast_lane_workers, thread_name_prefix=f"{thread_name_prefix}-fast"
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._outstanding = 0
        self._typical_s = INITIAL_TYPICAL_S
        self.fast_lane_tasks = 0  # tasks sent to the fast lane so far

    @property
    def outstanding(self) -> int:
        """Counted tasks submitted and not yet done: RPCs running plus RPCs queued for a thread."""
        return self._outstanding

    @property
    def typical_call_s(self) -> float:
        """Moving average of the counted tasks' run time, in seconds."""
        return self._typical_s

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        if _fast_lane(fn):
            self.fast_lane_tasks += 1
            return self._fast.submit(fn, *args, **kwargs)
        with self._lock:
            self._outstanding += 1
        try:
            future = super().submit(self._timed, fn, *args, **kwargs)
        except BaseException:  # shut down: nothing was queued
            self._done(None)
            raise
        # called exactly once: when the task returns or raises, or when it is cancelled unrun
        future.add_done_callback(self._done)
        return future

    def _timed(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = self._clock()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = self._clock() - start
            with self._lock:
                self._typical_s += EWMA_ALPHA * (elapsed - self._typical_s)

    def _done(self, _future: futures.Future[Any] | None) -> None:
        with self._lock:
            self._outstanding -= 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        self._fast.shutdown(wait, cancel_futures=cancel_futures)


class AdmissionInterceptor(grpc.ServerInterceptor):
    """Refuses calls while ``limit`` RPCs run or wait in ``executor`` (module docstring): RESOURCE_EXHAUSTED
    with ``RetryInfo``; health and reflection never. Put it after the metrics interceptor, so that refused
    calls are counted, and after auth, so that a caller without a valid token still hears so."""

    def __init__(self, executor: AdmissionExecutor, limit: int, *, rng: random.Random | None = None) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if limit < executor.max_workers:
            log.warning(
                "max_concurrent_rpcs is below max_workers: threads stay idle while calls are refused",
                extra={"max_concurrent_rpcs": limit, "max_workers": executor.max_workers},
            )
        self.executor, self.limit = executor, limit
        self._rng = rng or random.Random()

    def retry_after_s(self) -> float:
        """The delay to advise: one typical call, clamped, jittered ±50 %."""
        typical = min(MAX_RETRY_S, max(MIN_RETRY_S, self.executor.typical_call_s))
        return typical * self._rng.uniform(0.5, 1.5)

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details: Any
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        if method == HEALTH_CHECK:
            _LANE.set(_FAST)  # runs inside this call's context: its task goes to the fast lane
            return handler
        outstanding = self.executor.outstanding  # read on the polling thread, which alone submits
        if is_exempt(method) or outstanding < self.limit:
            return handler
        _LANE.set(_FAST)
        delay = self.retry_after_s()
        message = (
            f"server busy: {outstanding} RPCs running or queued (limit {self.limit}); retry in {delay:.2f} s"
        )

        def wrap(_behavior: Behavior, _handler: grpc.RpcMethodHandler) -> Behavior:
            def refuse(request: Any, context: grpc.ServicerContext) -> Any:
                RequestError.exhausted(message, retry_after_s=delay).abort(context)

            return refuse

        return wrap_behavior(handler, wrap)


def admission_interceptor(
    settings: Settings, executor: AdmissionExecutor | None
) -> AdmissionInterceptor | None:
    """The interceptor ``settings`` ask for on ``executor`` (the server's pool); ``None`` when
    ``max_concurrent_rpcs`` is 0 (off) or the pool does not count its tasks."""
    if settings.max_concurrent_rpcs <= 0 or executor is None:
        return None
    return AdmissionInterceptor(executor, settings.max_concurrent_rpcs)


__all__ = [
    "FAST_LANE_WORKERS",
    "HEALTH_CHECK",
    "MAX_RETRY_S",
    "MIN_RETRY_S",
    "AdmissionExecutor",
    "AdmissionInterceptor",
    "admission_interceptor",
]
