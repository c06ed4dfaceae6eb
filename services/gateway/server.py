"""The gateway: one front door for hospital systems and research teams.

It proxies AngleService, GenerateService and ScoreService to their deployments (bytes in, bytes out;
see :mod:`services.gateway.proxy`) and serves DatasetService itself (dataset jobs, GenerateLabeled),
with the same interceptor chain (metrics, auth, rate limits), health, reflection and ``/metrics`` as
every hipgen server::

    python -m services.gateway --port 50051     # services at HIPGEN_ANGLE_ADDRESS, _GENERATE_, _SCORE_

On SIGTERM/SIGINT health turns NOT_SERVING, RPCs get the grace period, and the job runner stops after
the shards in flight; jobs left RUNNING resume when a gateway starts on the same database.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health

from hipgen.api.v1 import angle_pb2, dataset_pb2, generate_pb2, generate_pb2_grpc, score_pb2, score_pb2_grpc
from hipgen.logs import configure_logging
from hipgen.settings import Settings, get_settings
from services.gateway.jobs import JobRunner, RunnerConfig
from services.gateway.kube import KubeOptions, KubernetesExecutor
from services.gateway.proxy import ServiceProxy, forwarded_metadata
from services.gateway.servicer import DatasetServicer
from services.gateway.store import JobStore
from services.server import build_server, start_metrics
from services.tls import open_channel

log = logging.getLogger("services.gateway")

ANGLE = angle_pb2.DESCRIPTOR.services_by_name["AngleService"].full_name
GENERATE = generate_pb2.DESCRIPTOR.services_by_name["GenerateService"].full_name
SCORE = score_pb2.DESCRIPTOR.services_by_name["ScoreService"].full_name
DATASET = dataset_pb2.DESCRIPTOR.services_by_name["DatasetService"].full_name
GENERATE_TIMEOUT_S = 900.0  # one Generate call of a shard (32 images, DDIM-50 on a CPU pod: minutes)
SCORE_TIMEOUT_S = 3600.0


def downstream_token(settings: Settings) -> str | None:
    """The token the gateway and workers send for their own calls (``downstream_token_file``)."""
    path = settings.downstream_token_file
    if path is None:
        return None
    token = Path(path).read_text().strip()
    return token or None


def downstream_channel(settings: Settings, address: str) -> grpc.Channel:
    return open_channel(
        address,
        ca_file=settings.downstream_ca_file,
        token=downstream_token(settings),
        max_message_bytes=settings.max_message_bytes,
        # round_robin over every address of a headless Service (one per pod): kube-proxy balances
        # connections, not calls, and a gRPC channel is one long-lived HTTP/2 connection
        options=[("grpc.lb_policy_name", settings.downstream_lb_policy)],
    )


def sqlite_parent(url: str) -> None:
    """Create the folder of a ``sqlite:///path`` database (SQLite creates the file, not its folder)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and url[len(prefix) :] not in ("", ":memory:"):
        Path(url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


@dataclass
class Gateway:
    server: grpc.Server
    port: int
    runner: JobRunner
    store: JobStore
    health: health.HealthServicer
    channels: dict[str, grpc.Channel] = field(default_factory=dict)

    def start(self) -> None:
        self.runner.start()  # first: it re-queues what the database holds before new jobs can arrive
        self.server.start()

    def stop(self, grace: float | None = None) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.runner.stop()
        for ch in self.channels.values():
            ch.close()
        self.store.close()


def build_gateway(settings: Settings, *, port: int | None = None) -> Gateway:
    """Bind (not start) the gateway: its database, downstream channels, job runner and server."""
    sqlite_parent(settings.dataset_db_url)
    store = JobStore(settings.dataset_db_url)
    channels = {
        name: downstream_channel(settings, addr)
        for name, addr in (
            (ANGLE, settings.angle_address),
            (GENERATE, settings.generate_address),
            (SCORE, settings.score_address),
        )
    }
    own_token = downstream_token(settings) is not None
    generate_stub = generate_pb2_grpc.GenerateServiceStub(channels[GENERATE])
    score_stub = score_pb2_grpc.ScoreServiceStub(channels[SCORE])
    kube = KubernetesExecutor(
        KubeOptions(
            namespace=settings.kubernetes_namespace,
            image=settings.kubernetes_worker_image,
            parallelism=settings.kubernetes_parallelism,
            shards_per_pod=settings.kubernetes_shards_per_pod,
            generate_address=settings.generate_address,
            # the workers carry the gateway's downstream token only where the gateway has one
            token_secret=KubeOptions.token_secret if own_token else None,
        )
    )
    runner = JobRunner(
        store,
        RunnerConfig(
            max_running=settings.dataset_max_running,
            max_queued=settings.dataset_max_queued,
            shard_workers=settings.dataset_shard_workers,
            shard_retries=settings.dataset_shard_retries,
        ),
        generate=lambda: functools.partial(generate_stub.Generate, timeout=GENERATE_TIMEOUT_S),
        score=functools.partial(score_stub.ScoreSets, timeout=SCORE_TIMEOUT_S),
        kube=kube,
    )

    def generate_for(context: grpc.ServicerContext) -> Any:
        """GenerateService calls on behalf of one GenerateLabeled caller: each call gets what is left of
        the caller's deadline (regeneration rounds included) and its metadata; a caller gone stops it."""

        def call(request: Any) -> Any:
            if not context.is_active():
                raise grpc.RpcError()  # the caller cancelled: no further rounds
            remaining = context.time_remaining()
            timeout = remaining if remaining is not None and remaining < 1e8 else GENERATE_TIMEOUT_S
            stream = generate_stub.Generate(
                request, timeout=timeout, metadata=forwarded_metadata(context, authorization=not own_token)
            )
            context.add_callback(stream.cancel)
            return stream

        return call

    servicer = DatasetServicer(
        store,
        runner,
        generate=generate_for,
        output_root=settings.dataset_output_root,
        max_images=settings.dataset_max_images,
        max_regenerations=settings.dataset_max_regenerations,
        images_per_shard=settings.dataset_images_per_shard,
        default_executor=settings.dataset_executor,
        max_watches=max(1, settings.max_workers // 2),  # Watch holds a thread: leave half for the rest
    )
    health_servicer = health.HealthServicer()
    server, bound = build_server(
        settings,
        port=port,
        services=[DATASET],
        servicers={DATASET: servicer},
        proxied={
            name: ServiceProxy(name, channels[name], forward_authorization=not own_token)
            for name in (ANGLE, GENERATE, SCORE)
        },
        health_servicer=health_servicer,
    )
    return Gateway(server, bound, runner, store, health_servicer, channels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="bind address (default: HIPGEN_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="gRPC port, 0 for a free one (default: HIPGEN_PORT, 50051)")
    parser.add_argument("--config", help="TOML settings file (default: HIPGEN_CONFIG)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = get_settings(args.config, **overrides)
    configure_logging(settings)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _f: stop.set())
    try:
        gw = build_gateway(settings)
    except OSError as err:
        log.error("gateway failed to start", extra={"error": str(err)})
        return 1
    metrics = start_metrics(settings)
    gw.start()
    log.info(
        "gateway listening",
        extra={
            "host": settings.host,
            "port": gw.port,
            "metrics_port": metrics[1] if metrics else None,
            "angle": settings.angle_address,
            "generate": settings.generate_address,
            "score": settings.score_address,
            "database": settings.dataset_db_url.split("@")[-1],  # never the password of a URL
        },
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        log.info("gateway stopping", extra={"grace_period_s": settings.grace_period_s})
        gw.stop(settings.grace_period_s)
        if metrics:
            metrics[0].shutdown()
            metrics[0].server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
