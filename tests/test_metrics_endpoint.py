"""/metrics of a real server (127.0.0.1, port 0): per-RPC counters, latency histograms and in-flight
gauges under the py-grpc-prometheus names, with the real status code of every way an RPC ends — OK,
``abort_with_status`` in a unary call and mid-stream, a client that cancels a stream, a missed deadline
(DESIGN §4). Counters are process-wide, so every check compares two scrapes.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from hipgen.api.v1 import (
    angle_pb2,
    angle_pb2_grpc,
    common_pb2,
    generate_pb2,
    generate_pb2_grpc,
    score_pb2,
    score_pb2_grpc,
)
from hipgen.data.images import encode_png
from hipgen.logs import request_id_var
from hipgen.phantom import PhantomSpec, render_phantom
from hipgen.settings import Settings
from services.server import build_server, start_metrics

ANGLE, GENERATE, SCORE = "hipgen.v1.AngleService", "hipgen.v1.GenerateService", "hipgen.v1.ScoreService"
T = 30.0  # per-RPC deadline (seconds): generous, the machine may be busy
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Generate(generate_pb2_grpc.GenerateServiceServicer):
    """Server streaming: 3 progress events; ``model_name`` "bad" aborts after the first one,
    "forever" streams until the client goes away."""

    def Generate(self, request, context):  # noqa: N802 - generated name
        for step in range(3 if request.model_name != "forever" else 1_000_000):
            if step == 1 and request.model_name == "bad":
                context.abort_with_status(
                    rpc_status.to_status(status_pb2.Status(code=3, message="bad steps"))
                )
            if not context.is_active():  # the client went away
                return
            yield generate_pb2.GenerateResponse(progress=generate_pb2.GenerateProgress(step=step))
            time.sleep(0.01 if request.model_name == "forever" else 0)


class SlowScore(score_pb2_grpc.ScoreServiceServicer):
    """Unary, slower than the caller's deadline; reports the request id it ran under."""

    seen: list[str | None] = []

    def ScoreSets(self, request, context):  # noqa: N802
        self.seen.append(request_id_var.get())
        time.sleep(0.5)
        return score_pb2.ScoreSetsResponse()


@pytest.fixture(scope="module")
def served(angle_repo: Path) -> Iterator[tuple[grpc.Channel, int]]:
    settings = Settings(
        host="127.0.0.1", port=0, metrics_port=_free_port(), max_workers=4, model_repository=angle_repo
    )
    server, port = build_server(
        settings,
        services=[ANGLE, GENERATE, SCORE],
        servicers={GENERATE: Generate(), SCORE: SlowScore()},
    )
    server.start()
    started = start_metrics(settings)
    assert started is not None
    httpd, metrics_port = started
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            grpc.channel_ready_future(ch).result(timeout=T)
            yield ch, metrics_port
    finally:
        httpd.shutdown()
        httpd.server_close()
        server.stop(None).wait()


def _scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=T) as resp:
        text = resp.read().decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def _labels(service: str, method: str, kind: str, **more: str) -> frozenset[tuple[str, str]]:
    return frozenset({"grpc_service": service, "grpc_method": method, "grpc_type": kind, **more}.items())


def _delta(before: Samples, after: Samples, name: str, labels: frozenset[tuple[str, str]]) -> float:
    return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)


def _good_png() -> bytes:
    return encode_png(render_phantom(PhantomSpec(width=256, height=256), seed=3).pixels)


def test_counters_histograms_and_codes_of_unary_and_streaming_rpcs(served: tuple[grpc.Channel, int]):
    ch, port = served
    _, before = _scrape(port)
    angle = angle_pb2_grpc.AngleServiceStub(ch)
    angle.PredictAngle(angle_pb2.PredictAngleRequest(image=common_pb2.Image(data=_good_png())), timeout=T)
    with pytest.raises(grpc.RpcError) as err:  # a truncated PNG: abort_with_status(INVALID_ARGUMENT)
        angle.PredictAngle(angle_pb2.PredictAngleRequest(image=common_pb2.Image(data=b"\x89PNG")), timeout=T)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    generate = generate_pb2_grpc.GenerateServiceStub(ch).Generate
    assert len(list(generate(generate_pb2.GenerateRequest(), timeout=T))) == 3
    with pytest.raises(grpc.RpcError) as err:
        list(generate(generate_pb2.GenerateRequest(model_name="bad"), timeout=T))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=T)
    text, after = _scrape(port)

    unary = _labels(ANGLE, "PredictAngle", "UNARY")
    stream = _labels(GENERATE, "Generate", "SERVER_STREAMING")
    assert _delta(before, after, "grpc_server_started_total", unary) == 2
    assert _delta(before, after, "grpc_server_started_total", stream) == 2
    for labels in (unary, stream):
        for code in ("OK", "INVALID_ARGUMENT"):
            coded = labels | {("grpc_code", code)}
            assert _delta(before, after, "grpc_server_handled_total", coded) == 1, (labels, code)
            assert _delta(before, after, "grpc_server_handling_seconds_count", coded) == 1, (labels, code)
            assert _delta(before, after, "grpc_server_handling_seconds_bucket", coded | {("le", "+Inf")}) == 1
    assert _delta(before, after, "grpc_server_msg_sent_total", stream) == 4  # 3 + 1 before the abort
    health = _labels("grpc.health.v1.Health", "Check", "UNARY", grpc_code="OK")
    assert _delta(before, after, "grpc_server_handled_total", health) == 1
    # the exposition itself, as Prometheus scrapes it
    assert (
        'grpc_server_handled_total{grpc_code="INVALID_ARGUMENT",grpc_method="PredictAngle",'
        'grpc_service="hipgen.v1.AngleService",grpc_type="UNARY"}'
    ) in text
    assert "# TYPE grpc_server_handling_seconds histogram" in text
    assert 'grpc_server_handling_seconds_bucket{grpc_code="OK",grpc_method="Generate"' in text
    assert (
        after[
            ("hipgen_grpc_in_flight", frozenset({("grpc_service", ANGLE), ("grpc_method", "PredictAngle")}))
        ]
        == 0
    )
    # the angle servicer's own metrics are on the same endpoint, and inference time per model
    assert "hipgen_angle_inference_seconds_bucket" in text
    for model in ("angle_locator", "angle_keypoints"):
        timed = frozenset({"model": model, "backend": "ort"}.items())
        assert _delta(before, after, "hipgen_inference_seconds_count", timed) >= 1, model


def test_bidi_stream_counts_messages_both_ways(served: tuple[grpc.Channel, int]):
    ch, port = served
    _, before = _scrape(port)
    png = _good_png()
    items = [
        angle_pb2.StreamPredictAngleRequest(
            item_id=str(i), request=angle_pb2.PredictAngleRequest(image=common_pb2.Image(data=png))
        )
        for i in range(2)
    ]
    assert len(list(angle_pb2_grpc.AngleServiceStub(ch).StreamPredictAngle(iter(items), timeout=T))) == 2
    _, after = _scrape(port)
    bidi = _labels(ANGLE, "StreamPredictAngle", "BIDI_STREAMING")
    assert _delta(before, after, "grpc_server_started_total", bidi) == 1
    assert _delta(before, after, "grpc_server_msg_received_total", bidi) == 2
    assert _delta(before, after, "grpc_server_msg_sent_total", bidi) == 2
    assert _delta(before, after, "grpc_server_handled_total", bidi | {("grpc_code", "OK")}) == 1


def _wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_cancelled_stream_and_a_missed_deadline_get_their_codes(served: tuple[grpc.Channel, int]):
    ch, port = served
    _, before = _scrape(port)
    call = generate_pb2_grpc.GenerateServiceStub(ch).Generate(
        generate_pb2.GenerateRequest(model_name="forever"), timeout=T
    )
    next(call)
    call.cancel()
    with pytest.raises(grpc.RpcError) as err:
        list(
            generate_pb2_grpc.GenerateServiceStub(ch).Generate(
                generate_pb2.GenerateRequest(model_name="forever"), timeout=0.3
            )
        )
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.RpcError) as err:
        score_pb2_grpc.ScoreServiceStub(ch).ScoreSets(score_pb2.ScoreSetsRequest(), timeout=0.1)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stream = _labels(GENERATE, "Generate", "SERVER_STREAMING", grpc_code="CANCELLED")
    stream_late = _labels(GENERATE, "Generate", "SERVER_STREAMING", grpc_code="DEADLINE_EXCEEDED")
    late = _labels(SCORE, "ScoreSets", "UNARY", grpc_code="DEADLINE_EXCEEDED")

    def counted() -> bool:
        _, after = _scrape(port)
        return (
            _delta(before, after, "grpc_server_handled_total", stream) == 1
            and _delta(before, after, "grpc_server_handled_total", stream_late) == 1
            and _delta(before, after, "grpc_server_handled_total", late) == 1
        )

    assert _wait_for(counted)
    _, after = _scrape(port)
    gauge = frozenset({("grpc_service", GENERATE), ("grpc_method", "Generate")})
    assert after[("hipgen_grpc_in_flight", gauge)] == 0
    assert SlowScore.seen and len(SlowScore.seen[-1] or "") == 32  # the handler ran under a request id
