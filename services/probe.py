"""A gRPC health probe for the container images: ``python -m services.probe``.

Why it exists: Docker's ``HEALTHCHECK`` (and so ``docker run``, ``docker compose`` and ``docker ps``)
runs a command inside the container and cannot speak gRPC itself; the images have neither curl nor
grpc_health_probe, so this module calls ``grpc.health.v1.Health/Check`` with the grpcio already there.
Kubernetes does not use it: its native ``grpc:`` liveness/readiness probes call the same Health service
without starting a Python process.

Exit status 0 when the service answers SERVING; 1 otherwise, with one line saying why (NOT_SERVING,
UNAVAILABLE and the reason, unknown service, a deadline)::

    python -m services.probe                                   # 127.0.0.1:$HIPGEN_PORT, the whole server
    python -m services.probe --service hipgen.v1.AngleService --timeout 2
    python -m services.probe --address 127.0.0.1:50052 --tls --ca-file /etc/hipgen/tls/ca.crt

TLS: when the server itself serves TLS (``HIPGEN_TLS_CERT_FILE`` set) the probe speaks TLS too and
verifies the server against ``--ca-file`` (default ``HIPGEN_DOWNSTREAM_CA_FILE``, else the system
roots); ``--server-name`` names the certificate's host when it is not the probed address (127.0.0.1
inside the container). Under mutual TLS (``HIPGEN_TLS_CLIENT_CA_FILE``) the handshake needs a client
certificate: pass ``--cert-file`` and ``--key-file``. Health needs no bearer token (auth exempts it).

Imports only grpc, grpc_health, :mod:`hipgen.settings` and :mod:`services.tls`: no numpy, no models,
so a probe every few seconds stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hipgen.settings import get_settings
from services.tls import open_channel

SERVING = health_pb2.HealthCheckResponse.SERVING


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.probe",
        description="gRPC health probe (Docker HEALTHCHECK): exit 0 when SERVING, 1 otherwise.",
    )
    parser.add_argument("--address", help="host:port to probe (default: 127.0.0.1:$HIPGEN_PORT)")
    parser.add_argument(
        "--service",
        default="",
        help='service to check, e.g. hipgen.v1.AngleService (default: "": the server)',
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds for the call (default: 2)")
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="speak TLS (default: when HIPGEN_TLS_CERT_FILE is set, i.e. the server in this container does)",
    )
    parser.add_argument(
        "--ca-file", type=Path, help="CA to verify the server with (default: HIPGEN_DOWNSTREAM_CA_FILE)"
    )
    parser.add_argument("--server-name", help="host name the server's certificate must carry (TLS)")
    parser.add_argument("--cert-file", type=Path, help="client certificate, for mutual TLS")
    parser.add_argument("--key-file", type=Path, help="key of --cert-file")
    return parser


def check(
    address: str,
    service: str = "",
    *,
    timeout: float = 2.0,
    tls: bool = False,
    ca_file: Path | None = None,
    server_name: str | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> tuple[bool, str]:
    """``(serving, reason)`` of one Health/Check call of ``service`` at ``address``."""
    options = [("grpc.ssl_target_name_override", server_name)] if tls and server_name else []
    label = f"{service or 'server'} at {address}"
    try:
        channel = open_channel(
            address, tls=tls, ca_file=ca_file, cert_file=cert_file, key_file=key_file, options=options
        )
    except (OSError, ValueError) as err:  # an unreadable CA or certificate, half a client key pair
        return False, f"{label}: {err}"
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as err:
            code = err.code()
            if code == grpc.StatusCode.NOT_FOUND:
                return False, f"{label}: unknown service"
            return False, f"{label}: {code.name} ({err.details()})"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == SERVING, f"{label}: {status}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = get_settings()
    except Exception as err:  # an invalid HIPGEN_* value: unhealthy, and say which
        print(f"probe: invalid settings: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    address = args.address or f"127.0.0.1:{settings.port}"
    tls = args.tls
    if tls is None:  # not said: TLS when this container's server serves it, or a CA was given
        tls = settings.tls_cert_file is not None or args.ca_file is not None
    ok, reason = check(
        address,
        args.service,
        timeout=args.timeout,
        tls=tls,
        ca_file=(args.ca_file or settings.downstream_ca_file) if tls else None,
        server_name=args.server_name,
        cert_file=args.cert_file if tls else None,
        key_file=args.key_file if tls else None,
    )
    print(f"probe: {reason}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
