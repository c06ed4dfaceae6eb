"""Client errors and the retry policy.

Every failed call surfaces as one :class:`ClientError` built from the server's ``google.rpc.Status``: the
code, the one-line message, the bad fields of a ``BadRequest`` detail and the delay of a ``RetryInfo``
detail, so that callers (and the CLI) never have to unpack status details themselves.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from hipgen.errors import HipgenError

_DETAILS_KEY = "grpc-status-details-bin"


class ClientError(HipgenError):
    """A call that failed: ``code`` (a ``grpc.StatusCode``), ``message`` (one line), ``field_violations``
    (request field path -> why, from ``BadRequest``), ``retry_after_s`` (from ``RetryInfo``; ``None``
    without one), and the raw ``google.rpc.Status`` when the server sent one."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        field_violations: Mapping[str, str] | None = None,
        retry_after_s: float | None = None,
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
        self.field_violations: dict[str, str] = dict(field_violations or {})
        self.retry_after_s = retry_after_s
        self.status = status

    @property
    def code_name(self) -> str:
        """The code as its name, e.g. ``"INVALID_ARGUMENT"``."""
        return self.code.name

    @property
    def details(self) -> list[any_pb2.Any]:
        """The status details as sent (``Any`` messages), for details this class does not unpack."""
        return list(self.status.details) if self.status is not None else []

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> ClientError:
        """The error a failed call (sync or ``grpc.aio``) carries, with its status details unpacked."""
        code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
        message = err.details() if callable(getattr(err, "details", None)) else str(err)
        status = _status_of(err)
        violations: dict[str, str] = {}
        retry_after: float | None = None
        for detail in status.details if status is not None else ():
            bad, info = error_details_pb2.BadRequest(), error_details_pb2.RetryInfo()
            if detail.Unpack(bad):
                violations.update({v.field: v.description for v in bad.field_violations})
            elif detail.Unpack(info):
                retry_after = info.retry_delay.ToNanoseconds() / 1e9
        return cls(
            code or grpc.StatusCode.UNKNOWN,
            message or (status.message if status is not None else ""),
            field_violations=violations,
            retry_after_s=retry_after,
            status=status,
        )


def _status_of(err: grpc.RpcError) -> status_pb2.Status | None:
    """The rich status of a failed call; a proxy that rewrote the message (so that ``from_call`` refuses
    the mismatch) still leaves the details worth reading."""
    if not callable(getattr(err, "trailing_metadata", None)):
        return None
    try:
        return rpc_status.from_call(err)  # type: ignore[arg-type]
    except ValueError:
        for key, value in err.trailing_metadata() or ():  # type: ignore[attr-defined]
            if key == _DETAILS_KEY:
                return status_pb2.Status.FromString(value)
    return None


@dataclass
class RetryPolicy:
    """When and how long to wait before retrying a call that is safe to retry.

    UNAVAILABLE (server restarting, connection refused) is retried with exponential backoff and jitter;
    RESOURCE_EXHAUSTED only when the server said when (``RetryInfo``), after that delay — without one it
    may mean "message too large", which no retry fixes. Nothing else is retried: INVALID_ARGUMENT and
    friends give the same answer every time, and a DEADLINE_EXCEEDED has used up the caller's budget.
    """

    #: Retries after the first attempt (0: never retry).
    retries: int = 4
    #: Backoff before the first retry, in seconds; it grows by ``multiplier`` per retry.
    initial_backoff_s: float = 0.1
    #: Longest backoff between two attempts, in seconds.
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    #: Longest server-requested delay honoured, in seconds; a longer one is raised to the caller.
    max_retry_after_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def delay(self, error: ClientError, attempt: int, remaining_s: float | None) -> float | None:
        """Seconds to wait before retry ``attempt + 1`` after ``error``, or ``None`` to give up (not
        retryable, retries used up, or the wait would not end before the deadline in ``remaining_s``)."""
        if attempt >= self.retries:
            return None
        if error.code == grpc.StatusCode.UNAVAILABLE:
            cap = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**attempt)
            wait = cap / 2 + self.rng.uniform(0, cap / 2)  # jitter, so that clients do not retry in step
        elif error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_after_s is not None:
            if error.retry_after_s > self.max_retry_after_s:
                return None
            wait = error.retry_after_s * (1 + self.rng.uniform(0, 0.1))  # never earlier than asked
        else:
            return None
        if remaining_s is not None and wait >= remaining_s:
            return None
        return wait


__all__ = ["ClientError", "RetryPolicy"]
