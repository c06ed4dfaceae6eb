"""Request errors shared by the services: a gRPC code, a one-line message and the bad request fields,
sent as ``google.rpc.Status`` with a ``BadRequest`` detail, or a ``RetryInfo`` detail when the caller may
retry later (rate limits, full queues) (DESIGN §3)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from hipgen.errors import FieldError
from hipgen.inference.backend import MODEL_NAME

MAX_VIOLATIONS = 10


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: its path in the request (``image.data``) and why, in one line."""

    field: str
    description: str


def violation(err: FieldError) -> FieldViolation:
    """The field violation a library's :class:`~hipgen.errors.FieldError` names."""
    return FieldViolation(err.field, err.reason)


class RequestError(Exception):
    """Why one request gets no answer: a gRPC code, a one-line message and the bad fields."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        violations: Sequence[FieldViolation] = (),
        *,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = tuple(violations)
        self.retry_after_s = retry_after_s

    @classmethod
    def exhausted(cls, message: str, retry_after_s: float):  # noqa: ANN206 - the calling subclass
        """RESOURCE_EXHAUSTED with a ``RetryInfo`` detail, so that clients back off for ``retry_after_s``
        seconds instead of retrying at once (rate limits, full queues)."""
        return cls(grpc.StatusCode.RESOURCE_EXHAUSTED, message, retry_after_s=retry_after_s)

    @classmethod
    def unavailable(cls, err: BaseException):  # noqa: ANN206 - the calling subclass
        """UNAVAILABLE for a backend that cannot be reached now (a Triton server restarting): callers
        retry that (the gateway's shards do), unlike INTERNAL, which says something is broken here."""
        return cls(grpc.StatusCode.UNAVAILABLE, f"inference backend unavailable: {str(err)[:300]}")

    @classmethod
    def invalid(cls, violations: Sequence[FieldViolation]):  # noqa: ANN206 - the calling subclass
        """INVALID_ARGUMENT naming every bad field — at most :data:`MAX_VIOLATIONS` of them, so that the
        status stays well inside gRPC's default 8 KiB of trailing metadata."""
        if len(violations) > MAX_VIOLATIONS:
            more = len(violations) - MAX_VIOLATIONS + 1
            violations = [
                *violations[: MAX_VIOLATIONS - 1],
                FieldViolation("…", f"and {more} more bad fields like these"),
            ]
        return cls(
            grpc.StatusCode.INVALID_ARGUMENT,
            "; ".join(f"{v.field}: {v.description}" for v in violations),
            violations,
        )

    def to_status(self) -> status_pb2.Status:
        """The ``google.rpc.Status`` of this error, with a ``BadRequest`` detail when fields are named and
        a ``RetryInfo`` detail when ``retry_after_s`` is set."""
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.retry_after_s is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(max(0, round(self.retry_after_s * 1e9)))
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
            status.details.append(detail)
        if self.violations:
            detail = any_pb2.Any()
            detail.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in self.violations
                    ]
                )
            )
            status.details.append(detail)
        return status

    def abort(self, context: grpc.ServicerContext) -> None:
        """End the RPC with this error (raises, as ``context.abort`` does)."""
        context.abort_with_status(rpc_status.to_status(self.to_status()))


__all__ = ["MAX_VIOLATIONS", "MODEL_NAME", "FieldViolation", "RequestError", "violation"]
