"""The gateway's pass-through to the model services: one generic handler per proxied service.

Messages pass as bytes (no deserialisation: the gateway neither pays for nor depends on decoding a
60 MB image), the method's streaming shape comes from the service descriptor, and everything a
client relies on is carried across: call metadata (the bearer token and request id included), the
deadline (the remaining time), cancellation (a cancelled client call cancels the upstream call), and
the upstream status with its details (``grpc-status-details-bin``: BadRequest violations, RetryInfo).

Why not an off-the-shelf proxy (Envoy): the gateway also *is* a service (DatasetService,
GenerateLabeled) that calls the model services itself, and one process with one interceptor chain
(auth, rate limits, metrics) in front of all of them keeps the deployment to a single front door.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import descriptor_pool

log = logging.getLogger("services.gateway.proxy")

# metadata a server must not forward: transport-level keys that grpcio sets itself
_HOP_BY_HOP = ("grpc-", ":")
_DROP = {"user-agent", "content-type", "te", "host"}


def forwarded_metadata(context: grpc.ServicerContext, *, authorization: bool = True) -> list[tuple[str, Any]]:
    """The caller's metadata to pass upstream. ``authorization=False`` when the gateway's channel sends
    its own token (the gateway's interceptor has already checked the caller's)."""
    drop = _DROP if authorization else _DROP | {"authorization"}
    return [
        (k, v) for k, v in context.invocation_metadata() if k not in drop and not k.startswith(_HOP_BY_HOP)
    ]


def relay_error(err: grpc.RpcError, context: grpc.ServicerContext) -> None:
    """End the server call with the upstream call's code, message and trailing details."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    trailing = (
        [
            (k, v)
            for k, v in (err.trailing_metadata() or ())
            if k == "grpc-status-details-bin" or not k.startswith("grpc-")
        ]
        if hasattr(err, "trailing_metadata")
        else []
    )
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"upstream unavailable: {details}"
    context.set_trailing_metadata(trailing)
    context.abort(code, details or "")


class ServiceProxy(grpc.GenericRpcHandler):
    """Forwards every method of ``service`` (a full name, e.g. ``hipgen.v1.AngleService``) to ``channel``."""

    def __init__(self, service: str, channel: grpc.Channel, *, forward_authorization: bool = True) -> None:
        self.service_name = service
        self.channel = channel
        self.forward_authorization = forward_authorization
        desc = descriptor_pool.Default().FindServiceByName(service)
        self._methods = {
            f"/{service}/{m.name}": (m.client_streaming, m.server_streaming) for m in desc.methods
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        shape = self._methods.get(method)
        if shape is None:
            return None
        client_streaming, server_streaming = shape
        ch = self.channel

        def md(context: grpc.ServicerContext) -> list[tuple[str, Any]]:
            return forwarded_metadata(context, authorization=self.forward_authorization)

        def timeout(context: grpc.ServicerContext) -> float | None:
            remaining = context.time_remaining()
            return remaining if remaining is not None and remaining < 1e8 else None

        if not client_streaming and not server_streaming:

            def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
                fut = ch.unary_unary(method).future(request, timeout=timeout(context), metadata=md(context))
                context.add_callback(fut.cancel)  # the client went away: stop the upstream work too
                try:
                    resp = fut.result()
                except grpc.RpcError as e:
                    relay_error(e, context)
                    raise  # unreachable: abort raises
                except grpc.FutureCancelledError:
                    context.abort(grpc.StatusCode.CANCELLED, "cancelled")
                context.set_trailing_metadata(
                    [(k, v) for k, v in (fut.trailing_metadata() or ()) if not k.startswith("grpc-")]
                )
                return resp

            return grpc.unary_unary_rpc_method_handler(unary)

        def stream_out(upstream: Any, context: grpc.ServicerContext) -> Iterator[bytes]:
            context.add_callback(upstream.cancel)  # the client went away: stop the upstream work too
            try:
                yield from upstream
            except grpc.RpcError as e:
                if context.is_active():
                    relay_error(e, context)

        if not client_streaming:

            def unary_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
                up = ch.unary_stream(method)(request, timeout=timeout(context), metadata=md(context))
                yield from stream_out(up, context)

            return grpc.unary_stream_rpc_method_handler(unary_stream)

        if server_streaming:

            def stream_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
                up = ch.stream_stream(method)(requests, timeout=timeout(context), metadata=md(context))
                yield from stream_out(up, context)

            return grpc.stream_stream_rpc_method_handler(stream_stream)

        def stream_unary(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            fut = ch.stream_unary(method).future(requests, timeout=timeout(context), metadata=md(context))
            context.add_callback(fut.cancel)
            try:
                return fut.result()
            except grpc.RpcError as e:
                relay_error(e, context)
                raise
            except grpc.FutureCancelledError:
                context.abort(grpc.StatusCode.CANCELLED, "cancelled")
                raise

        return grpc.stream_unary_rpc_method_handler(stream_unary)


__all__ = ["ServiceProxy", "forwarded_metadata", "relay_error"]
