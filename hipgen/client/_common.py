"""What the sync and async clients share: channel settings, credentials and call metadata, deadlines and
the retry decision. Reimplemented here rather than imported from ``services.tls``: ``services`` is the
server side, and a client installation need not carry it."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from hipgen.client.errors import ClientError, RetryPolicy

log = logging.getLogger("hipgen.client")

#: The servers' default ``max_message_bytes``: without raising gRPC's 4 MiB default a client refuses
#: replies the server is willing to send (an overlay PNG, a batch of generated images).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_S = 30.0  # quick unary calls: measure one image, job bookkeeping
DEFAULT_LONG_TIMEOUT_S = 3600.0  # generation, scoring and watches run for minutes
DEFAULT_RETRIES = 4
#: gRPC waits 1 s .. 120 s between reconnect attempts by default, so after a gateway restart the
#: client's own retries would only see the channel's cached failure; keep the two on the same scale.
RECONNECT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
)


def _read(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise OSError(f"cannot read {what} {os.fspath(path)}: {err.strerror or err}") from None


@dataclass(frozen=True)
class ChannelConfig:
    """How to reach a hipgen server: TLS when ``tls`` or any file is given (``ca_file`` trusts a private
    CA, ``cert_file``/``key_file`` present a client certificate for mutual TLS); ``token`` is sent as
    ``authorization: Bearer`` on every call (call credentials on TLS, plain metadata otherwise)."""

    target: str
    tls: bool = False
    ca_file: str | os.PathLike[str] | None = None
    cert_file: str | os.PathLike[str] | None = None
    key_file: str | os.PathLike[str] | None = None
    token: str | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    options: Sequence[tuple[str, Any]] = field(default_factory=tuple)

    @property
    def secure(self) -> bool:
        return self.tls or self.ca_file is not None or self.cert_file is not None

    def channel_options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            *RECONNECT_OPTIONS,
            *self.options,
        ]

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA file"),
            private_key=_read(self.key_file, "client key"),
            certificate_chain=_read(self.cert_file, "client certificate"),
        )
        if self.token is not None:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(self.token))
        return creds

    def metadata(self, extra: Sequence[tuple[str, str]] = ()) -> tuple[tuple[str, str], ...]:
        """Metadata for every call: the bearer token on a plaintext channel (grpcio refuses call
        credentials there), then ``extra``."""
        own = (("authorization", f"Bearer {self.token}"),) if self.token and not self.secure else ()
        return (*own, *extra)

    def open_sync(self) -> grpc.Channel:
        if self.secure:
            return grpc.secure_channel(self.target, self.credentials(), options=self.channel_options())
        return grpc.insecure_channel(self.target, options=self.channel_options())

    def open_aio(self) -> grpc.aio.Channel:
        if self.secure:
            return grpc.aio.secure_channel(self.target, self.credentials(), options=self.channel_options())
        return grpc.aio.insecure_channel(self.target, options=self.channel_options())


@dataclass
class CallPolicy:
    """Deadlines and retries of one client."""

    timeout_s: float
    long_timeout_s: float
    retry: RetryPolicy

    def timeout(self, timeout_s: float | None, long: bool = False) -> float:
        if timeout_s is not None:
            if timeout_s <= 0:
                raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
            return timeout_s
        return self.long_timeout_s if long else self.timeout_s

    def next_delay(
        self, method: str, err: grpc.RpcError, attempt: int, remaining_s: float, retry: bool
    ) -> tuple[ClientError, float | None]:
        """The error a failed attempt carries and the wait before the next one (``None``: raise it)."""
        error = ClientError.from_rpc_error(err)
        delay = self.retry.delay(error, attempt, remaining_s) if retry else None
        if delay is not None:
            log.debug(
                "retrying %s after %s in %.2f s (retry %d of %d)",
                method,
                error.code_name,
                delay,
                attempt + 1,
                self.retry.retries,
            )
        return error, delay


def rpc_name(method: Any) -> str:
    """``/hipgen.v1.DatasetService/GetDatasetJob`` for a stub method (for log lines only)."""
    raw = getattr(method, "_method", None)
    return raw.decode() if isinstance(raw, bytes) else str(raw or "rpc")


def new_request_id() -> str:
    """An idempotency key for CreateDatasetJob: every retry of one create sends the same key, so the
    gateway answers a retry after a lost reply with the job it already made instead of a second one."""

    return uuid.uuid4().hex


__all__ = [
    "DEFAULT_LONG_TIMEOUT_S",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "CallPolicy",
    "ChannelConfig",
    "new_request_id",
    "rpc_name",
]
