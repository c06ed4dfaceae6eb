"""TLS and mutual TLS for the gRPC server, and the client channel every hipgen caller should open.

Server: ``tls_cert_file`` + ``tls_key_file`` set -> TLS; ``tls_client_ca_file`` set too -> mutual TLS,
where a client without a certificate chaining to that CA is refused in the handshake (the call fails
UNAVAILABLE before any RPC runs). Nothing set -> plaintext, as ``make run`` on 127.0.0.1 uses.
``make certs`` (scripts/make_certs.py) writes a development CA, server and client certificate.

Client: :func:`open_channel` builds a channel with the server's message-size limits on both sides,
TLS/mTLS credentials and a bearer token, so the gateway, the demo and tests do not repeat that.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from services.auth import BearerTokenInterceptor, bearer_call_credentials

if TYPE_CHECKING:
    from hipgen.settings import Settings

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # = the server's default max_message_bytes


def _read(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise OSError(f"cannot read {what} {path}: {err.strerror or err}") from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from ``settings`` (mutual TLS with ``tls_client_ca_file``), or ``None`` for
    plaintext. Raises ``ValueError`` for an incomplete pair and ``OSError`` for an unreadable file."""
    cert, key, ca = settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    if cert is None and key is None:
        if ca is not None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file (mutual TLS is TLS)")
        return None
    if cert is None or key is None:
        raise ValueError("TLS needs both tls_cert_file and tls_key_file")
    ca_pem = _read(ca, "tls_client_ca_file")
    return grpc.ssl_server_credentials(
        [(_read(key, "tls_key_file"), _read(cert, "tls_cert_file"))],
        root_certificates=ca_pem,
        require_client_auth=ca_pem is not None,
    )


def channel_credentials(
    ca_file: str | Path | None = None, cert_file: str | Path | None = None, key_file: str | Path | None = None
) -> grpc.ChannelCredentials:
    """Client TLS credentials trusting ``ca_file`` (default: the system roots), presenting
    ``cert_file``/``key_file`` for mutual TLS when given (both or neither)."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs both cert_file and key_file")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "CA file"),
        private_key=_read(key_file, "client key"),
        certificate_chain=_read(cert_file, "client certificate"),
    )


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    """Client options matching the server's limits: without them a client refuses replies over gRPC's
    4 MiB default (an overlay PNG, a generated batch) that the server is willing to send."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def open_channel(
    target: str,
    *,
    tls: bool = False,
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    token: str | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to ``target`` (``host:port``): TLS when ``tls`` or any file is given (``ca_file`` to
    trust a private CA, ``cert_file``/``key_file`` for mutual TLS), sending ``token`` as a bearer token
    on every call when given (call credentials on TLS, metadata on plaintext), with message limits of
    ``max_message_bytes`` and any extra ``options``. Close it (``with`` or ``.close()``) when done."""
    opts = [*channel_options(max_message_bytes), *options]
    if tls or ca_file is not None or cert_file is not None:
        creds = channel_credentials(ca_file, cert_file, key_file)
        if token is not None:
            creds = grpc.composite_channel_credentials(creds, bearer_call_credentials(token))
        return grpc.secure_channel(target, creds, options=opts)
    channel = grpc.insecure_channel(target, options=opts)
    return grpc.intercept_channel(channel, BearerTokenInterceptor(token)) if token is not None else channel


__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "channel_credentials",
    "channel_options",
    "open_channel",
    "server_credentials",
]
