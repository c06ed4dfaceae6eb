"""How long a shard waits before its next try: exponential, capped, never sooner than RetryInfo asks."""

from __future__ import annotations

import grpc
import pytest

from services.errors import RequestError
from services.gateway.shard import MAX_BACKOFF_S, backoff_s


class _Refused(grpc.RpcError):
    """A failed call as grpcio raises it: a code, a message and the rich status in trailing metadata."""

    def __init__(self, error: RequestError) -> None:
        self._status = error.to_status()
        self._code = error.code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._status.message

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return (("grpc-status-details-bin", self._status.SerializeToString()),)


def test_backoff_doubles_and_is_capped():
    err = OSError(28, "No space left on device")
    assert [backoff_s(err, a, 1.0) for a in range(7)] == [1, 2, 4, 8, 16, MAX_BACKOFF_S, MAX_BACKOFF_S]


@pytest.mark.parametrize(
    ("advised", "attempt", "want"), [(7.5, 0, 7.5), (0.2, 2, 4.0), (600.0, 0, MAX_BACKOFF_S)]
)
def test_a_servers_retry_info_is_honoured_within_the_cap(advised: float, attempt: int, want: float):
    err = _Refused(RequestError.exhausted("server busy", retry_after_s=advised))
    assert backoff_s(err, attempt, 1.0) == pytest.approx(want)
