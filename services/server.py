"""The hipgen gRPC server: the four hipgen.v1 services, grpc.health.v1, reflection and /metrics.

``build_server`` is importable by tests and returns the bound, not yet started server; ``serve`` runs
one until a stop event (SIGTERM/SIGINT in ``main``) and then stops it gracefully: health turns
NOT_SERVING, new RPCs are refused and in-flight ones get ``grace_period_s`` to finish. ``main`` wires
arguments, settings and logging::

    python -m services.server --port 0     # logs {"msg": "server listening", "port": ...} on stderr

Each service's servicer comes from its factory below. Until its issue lands a factory returns the
generated base class, which answers every RPC with UNIMPLEMENTED; an issue replaces one factory (and
nothing else here) with its own servicer, constructed from the settings.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hipgen.api.v1 import (
    angle_pb2,
    angle_pb2_grpc,
    dataset_pb2,
    dataset_pb2_grpc,
    generate_pb2,
    generate_pb2_grpc,
    score_pb2,
    score_pb2_grpc,
)
from hipgen.logs import configure_logging
from hipgen.settings import Settings, get_settings
from services.tls import server_credentials

if TYPE_CHECKING:
    from services.admission import AdmissionExecutor

log = logging.getLogger("services.server")


def _backend(settings: Settings) -> Any:
    """The configured backend (``make_backend``), timed per model for ``/metrics``."""
    from hipgen.inference import make_backend
    from services.metrics import InstrumentedBackend

    return InstrumentedBackend(make_backend(settings), settings.backend)


# --- servicer factories: one per service; each issue replaces its own ---------------------------------
def angle_servicer(settings: Settings) -> angle_pb2_grpc.AngleServiceServicer:
    """AngleService on the backend ``settings.backend`` names (``hipgen.inference.make_backend``), measuring
    with ``hipgen.angle.measure.DEFAULT_ANGLE_MODEL`` unless a request names another model.

    The models load now, not on the first request. Without them the server still starts (and health
    still says SERVING, so the other services stay reachable): a warning is logged and PredictAngle
    answers FAILED_PRECONDITION naming the missing model.
    """
    from hipgen.angle.measure import DEFAULT_ANGLE_MODEL
    from services.angle import AngleServicer

    servicer = AngleServicer(_backend(settings), DEFAULT_ANGLE_MODEL, settings)
    servicer.warm_up()
    return servicer


def generate_servicer(settings: Settings) -> generate_pb2_grpc.GenerateServiceServicer:
    """GenerateService on the backend the settings name: ``generator_ddpm`` (DDPM/DDIM) and
    ``generator_lcm`` (LCM), labelled by the default angle model. Models load now; without them the
    server still starts and Generate answers FAILED_PRECONDITION naming the missing model."""
    from services.generate import GenerateServicer

    servicer = GenerateServicer(_backend(settings), settings)
    servicer.warm_up()
    return servicer


def score_servicer(settings: Settings) -> score_pb2_grpc.ScoreServiceServicer:
    """ScoreService on the backend the settings name: feature backbones from the repository (the
    default angle_locator domain encoder, or exported ImageNet backbones), the default angle model for
    angle fidelity. Models load now; without them the server still starts and ScoreSets answers
    FAILED_PRECONDITION."""
    from services.score import ScoreServicer

    servicer = ScoreServicer(_backend(settings), settings)
    servicer.warm_up()
    return servicer


class GatewayOnlyDatasetService(dataset_pb2_grpc.DatasetServiceServicer):
    """DatasetService here answers UNIMPLEMENTED with a pointer: dataset jobs need the gateway's job
    database and runner, so the gateway (``python -m services.gateway``) serves them."""


def _gateway_only(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(
        grpc.StatusCode.UNIMPLEMENTED, "DatasetService is served by the gateway (python -m services.gateway)"
    )


for _method in dataset_pb2.DESCRIPTOR.services_by_name["DatasetService"].methods:
    setattr(GatewayOnlyDatasetService, _method.name, _gateway_only)


def dataset_servicer(settings: Settings) -> dataset_pb2_grpc.DatasetServiceServicer:
    """DatasetService belongs to the gateway (:mod:`services.gateway.server`); see
    :class:`GatewayOnlyDatasetService`."""
    return GatewayOnlyDatasetService()


@dataclass(frozen=True)
class ServiceSpec:
    """How one hipgen.v1 service is put on a server."""

    full_name: str  # e.g. "hipgen.v1.AngleService": the health and reflection name
    add_to_server: Callable[[Any, grpc.Server], None]
    factory: Callable[[Settings], Any]


def _full_name(module: Any, service: str) -> str:
    return module.DESCRIPTOR.services_by_name[service].full_name


#: Every hipgen.v1 service, by full name.
SERVICES: dict[str, ServiceSpec] = {
    spec.full_name: spec
    for spec in (
        ServiceSpec(
            _full_name(angle_pb2, "AngleService"),
            angle_pb2_grpc.add_AngleServiceServicer_to_server,
            angle_servicer,
        ),
        ServiceSpec(
            _full_name(generate_pb2, "GenerateService"),
            generate_pb2_grpc.add_GenerateServiceServicer_to_server,
            generate_servicer,
        ),
        ServiceSpec(
            _full_name(score_pb2, "ScoreService"),
            score_pb2_grpc.add_ScoreServiceServicer_to_server,
            score_servicer,
        ),
        ServiceSpec(
            _full_name(dataset_pb2, "DatasetService"),
            dataset_pb2_grpc.add_DatasetServiceServicer_to_server,
            dataset_servicer,
        ),
    )
}


def default_interceptors(
    settings: Settings, host: str, executor: AdmissionExecutor | None = None
) -> list[grpc.ServerInterceptor]:
    """The interceptor chain every server gets: metrics and request ids first (so that refused calls
    are counted and logged too), then bearer-token auth (binds the client id), then per-client rate
    limits (keyed by that client id), then server-wide admission control on ``executor``, the server's
    thread pool (:mod:`services.admission`: over ``max_concurrent_rpcs`` running or queued,
    RESOURCE_EXHAUSTED with RetryInfo); each of the last three only when ``settings`` turn it on."""
    from services.admission import admission_interceptor
    from services.auth import auth_interceptor
    from services.metrics import MetricsInterceptor
    from services.ratelimit import rate_limit_interceptor

    chain = [
        MetricsInterceptor(),
        auth_interceptor(settings, host),
        rate_limit_interceptor(settings),
        admission_interceptor(settings, executor),
    ]
    return [i for i in chain if i is not None]


def connection_age_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC's server-side connection ageing, when ``max_connection_age_s`` is set. Why: a client
    balances only over the addresses it resolved when it connected; behind a headless Service, new pods
    (a scale-up) get traffic only once clients reconnect and re-resolve, which an aged-out connection
    (GOAWAY: new calls go out on a new connection) makes them do. The calls already on it get
    ``max_connection_age_grace_s`` to finish before the connection is closed under them."""
    if settings.max_connection_age_s <= 0:
        return []
    return [
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)),
    ]


def build_server(
    settings: Settings,
    *,
    port: int | None = None,
    host: str | None = None,
    services: Iterable[str] | None = None,
    servicers: Mapping[str, Any] | None = None,
    health_servicer: health.HealthServicer | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] | None = None,
    proxied: Mapping[str, grpc.GenericRpcHandler] | None = None,
) -> tuple[grpc.Server, int]:
    """Build and bind (not start) a server; return it with the port it bound.

    Args:
        settings: host, port, ``max_workers``, ``max_concurrent_rpcs`` and ``max_message_bytes`` come
            from here.
        port: overrides ``settings.port``; 0 binds a free port (the returned one).
        host: overrides ``settings.host``.
        services: full names of the services to carry (default: all of :data:`SERVICES`); the
            per-service deployments carry one each, the gateway carries DatasetService.
        servicers: full name -> servicer instance, replacing that service's factory (tests).
        health_servicer: the ``grpc.health.v1`` servicer to use (default: a new one); pass one to
            flip it to NOT_SERVING at shutdown, as :func:`serve` does.
        interceptors: server interceptors, outermost first; default: :func:`default_interceptors`
            (metrics and request ids, auth, rate limits, admission control, as ``settings`` ask);
            ``()`` for none.
        proxied: full service name -> a generic handler answering it (the gateway's proxies to the
            model services); listed in health and reflection like the carried services.

    Every carried service, and ``""`` (the whole server), is SERVING in health; reflection lists
    the carried services, health and reflection. Raises ``ValueError`` for an unknown service name
    and ``OSError`` when the address cannot be bound.
    """
    names = list(SERVICES) if services is None else list(services)
    unknown = sorted(set(names) - set(SERVICES)) + sorted(set(servicers or ()) - set(names))
    if unknown:
        raise ValueError(f"unknown or not carried service(s) {unknown}; choose from {sorted(SERVICES)}")
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    credentials = server_credentials(settings)  # TLS / mutual TLS when the settings name a certificate

    from services.admission import AdmissionExecutor

    # counts its tasks (RPCs running + queued) for the admission interceptor; see services.admission
    executor = AdmissionExecutor(settings.max_workers, thread_name_prefix="grpc")
    server = grpc.server(
        executor,
        interceptors=(
            default_interceptors(settings, host, executor) if interceptors is None else list(interceptors)
        ),
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a busy port must fail loudly, not be shared with another server
            *connection_age_options(settings),
        ],
    )
    for name in names:
        spec = SERVICES[name]
        servicer = (servicers or {}).get(name) or spec.factory(settings)
        spec.add_to_server(servicer, server)
    if proxied:
        server.add_generic_rpc_handlers(tuple(proxied.values()))
    names = [*names, *sorted(set(proxied or ()) - set(names))]

    health_servicer = health_servicer or health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as err:  # grpcio raises on bind failure; older versions returned 0
        raise OSError(f"cannot bind gRPC server to {address}: {err}") from None
    if bound == 0:
        raise OSError(f"cannot bind gRPC server to {address}")
    return server, bound


def start_metrics(settings: Settings) -> tuple[Any, int] | None:
    """Start the Prometheus ``/metrics`` HTTP server on ``settings.metrics_port`` (0: disabled).

    Returns ``(http_server, bound_port)``, or ``None`` when disabled.
    """
    if settings.metrics_port == 0:
        return None
    from prometheus_client import start_http_server

    httpd, _thread = start_http_server(settings.metrics_port, addr=settings.host)
    return httpd, httpd.server_port


def serve(
    settings: Settings,
    stop: threading.Event,
    *,
    port: int | None = None,
    services: Iterable[str] | None = None,
) -> None:
    """Run a server carrying ``services`` (default all) until ``stop`` is set, then stop it
    gracefully (see the module docstring)."""
    names = sorted(SERVICES if services is None else services)
    health_servicer = health.HealthServicer()
    server, bound = build_server(settings, port=port, services=names, health_servicer=health_servicer)
    metrics = start_metrics(settings)
    server.start()
    log.info(
        "server listening",
        extra={
            "address": f"{settings.host}:{bound}",
            "host": settings.host,
            "port": bound,
            "metrics_port": metrics[1] if metrics else None,
            "services": names,
            "tls": "mutual" if settings.tls_client_ca_file else bool(settings.tls_cert_file),
            "auth": settings.auth_secret_file is not None,
            "rate_limit_rps": settings.rate_limit_rps or None,
        },
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        log.info("server stopping", extra={"grace_period_s": settings.grace_period_s})
        health_servicer.enter_graceful_shutdown()
        server.stop(settings.grace_period_s).wait()
        if metrics:
            metrics[0].shutdown()
            metrics[0].server_close()
        log.info("server stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="bind address (default: HIPGEN_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="gRPC port, 0 for a free one (default: HIPGEN_PORT, 50051)")
    parser.add_argument("--config", help="TOML settings file (default: HIPGEN_CONFIG)")
    parser.add_argument(
        "--services",
        help="comma-separated services to carry, e.g. `angle` or `generate,score` (default: all); one per "
        "deployment, with the gateway in front",
    )
    args = parser.parse_args(argv)

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = get_settings(args.config, **overrides)
    configure_logging(settings)
    services = None
    if args.services:
        short = {name.rsplit(".", 1)[-1].removesuffix("Service").lower(): name for name in SERVICES}
        unknown = [n for n in args.services.split(",") if n.strip().lower() not in short]
        if unknown:
            parser.error(f"unknown service(s) {unknown}; choose from {', '.join(sorted(short))}")
        services = [short[n.strip().lower()] for n in args.services.split(",")]

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        serve(settings, stop, services=services)
    except (OSError, ValueError) as err:  # a busy port, an unreadable certificate, a too-short secret
        log.error("server failed to start", extra={"error": str(err)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
