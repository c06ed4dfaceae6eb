"""Calls spread over every pod of a headless Service, and new pods get traffic (Kubernetes, issue 9).

Behind a headless Service the gateway's channel resolves one address per pod; ``downstream_lb_policy``
``round_robin`` must spread calls over all of them (kube-proxy would balance connections only, and a
gRPC channel is one long-lived connection), and ``max_connection_age_s`` must make clients reconnect
so that pods added later are reached. Both are shown on real servers on 127.0.0.1: the ``ipv4:`` target
with two addresses stands in for DNS returning two pod IPs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import grpc
import pytest

from hipgen.api.v1 import angle_pb2, angle_pb2_grpc
from hipgen.settings import Settings
from services.gateway.server import downstream_channel
from services.server import build_server

ANGLE = angle_pb2.DESCRIPTOR.services_by_name["AngleService"].full_name
T = 5.0


class PeerRecorder(angle_pb2_grpc.AngleServiceServicer):
    """Answers PredictAngle with an empty response and records which client connection called."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.peers: list[str] = []
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def PredictAngle(self, request, context):  # noqa: N802 - gRPC's method name
        with self._lock:
            self.peers.append(context.peer())
        time.sleep(self.delay_s)
        return angle_pb2.PredictAngleResponse()


def _settings(**kw: object) -> Settings:
    return Settings(**{"host": "127.0.0.1", "port": 0, "metrics_port": 0, "max_workers": 4, **kw})


@contextmanager
def angle_servers(n: int, delay_s: float = 0.0, **kw: object) -> Iterator[list[tuple[int, PeerRecorder]]]:
    """``n`` real servers carrying AngleService on free 127.0.0.1 ports."""
    with ExitStack() as stack:
        out = []
        for _ in range(n):
            rec = PeerRecorder(delay_s)
            server, port = build_server(
                _settings(**kw), services=[ANGLE], servicers={ANGLE: rec}, interceptors=()
            )
            server.start()
            stack.callback(server.stop, None)
            out.append((port, rec))
        yield out


def _call(channel: grpc.Channel, timeout: float = T) -> None:
    channel.unary_unary(
        f"/{ANGLE}/PredictAngle",
        request_serializer=angle_pb2.PredictAngleRequest.SerializeToString,
        response_deserializer=angle_pb2.PredictAngleResponse.FromString,
    )(angle_pb2.PredictAngleRequest(), timeout=timeout, wait_for_ready=True)


@pytest.mark.parametrize(("policy", "both_reached"), [("round_robin", True), ("pick_first", False)])
def test_downstream_channel_spreads_calls_over_every_address(policy: str, both_reached: bool) -> None:
    with angle_servers(2) as servers:
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port, _ in servers)
        with downstream_channel(_settings(downstream_lb_policy=policy), target) as channel:
            for _ in range(20):
                _call(channel)
        counts = [len(rec.peers) for _, rec in servers]
        assert sum(counts) == 20
        if both_reached:
            assert min(counts) >= 5, counts  # round robin: about 10 each once both subchannels are up
        else:
            assert sorted(counts) == [0, 20], counts


def test_connection_age_makes_clients_reconnect() -> None:
    """With ``max_connection_age_s`` the server ends each connection after that age (GOAWAY); the
    client's next call goes out on a new connection (a new peer port), re-resolving on the way."""
    with angle_servers(1, max_connection_age_s=0.3, grace_period_s=1.0) as [(port, rec)]:
        with downstream_channel(_settings(), f"127.0.0.1:{port}") as channel:
            _call(channel)
            deadline = time.monotonic() + 10
            while len(set(rec.peers)) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
                _call(channel)
        assert len(set(rec.peers)) >= 2, rec.peers  # at least one reconnect

    with angle_servers(1) as [(port, rec)]:  # and without it the connection lives on
        with downstream_channel(_settings(), f"127.0.0.1:{port}") as channel:
            for _ in range(5):
                _call(channel)
                time.sleep(0.2)
        assert len(set(rec.peers)) == 1, rec.peers


@pytest.mark.parametrize(("grace_s", "survives"), [(30.0, True), (0.5, False)])
def test_calls_longer_than_the_connection_age_finish_within_the_grace(grace_s: float, survives: bool) -> None:
    """Ageing must not cut a long call (a scoring run, a Generate shard): the calls on an aged-out
    connection get ``max_connection_age_grace_s``; only past it is the connection closed under them."""
    servers = angle_servers(1, delay_s=2.0, max_connection_age_s=0.3, max_connection_age_grace_s=grace_s)
    with servers as [(port, _)], downstream_channel(_settings(), f"127.0.0.1:{port}") as channel:
        if survives:
            _call(channel, timeout=10)
        else:
            with pytest.raises(grpc.RpcError) as e:
                _call(channel, timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
