"""services.server on 127.0.0.1: health, reflection, placeholder servicers, graceful stop, and
``python -m services.server`` as a real process (DESIGN §3, §4)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import serving_channel
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from hipgen.api.v1 import (
    angle_pb2,
    angle_pb2_grpc,
    common_pb2,
    dataset_pb2,
    dataset_pb2_grpc,
    generate_pb2,
    generate_pb2_grpc,
    score_pb2,
    score_pb2_grpc,
)
from hipgen.settings import Settings
from services.server import SERVICES, build_server

REPO = Path(__file__).resolve().parents[1]
HEALTH = health_pb2.HealthCheckResponse
ALL = set(SERVICES)
T = 5.0  # per-RPC deadline (seconds)


def _settings(**kw: object) -> Settings:
    """Settings independent of the caller's HIPGEN_* environment."""
    return Settings(**{"host": "127.0.0.1", "port": 0, "metrics_port": 0, "max_workers": 4, **kw})


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    with serving_channel(_settings(), T) as ch:
        yield ch


def test_service_table_matches_the_protos():
    assert {
        "hipgen.v1.AngleService",
        "hipgen.v1.GenerateService",
        "hipgen.v1.ScoreService",
        "hipgen.v1.DatasetService",
    } == ALL


@pytest.mark.parametrize("service", ["", *sorted(ALL)])
def test_health_serving(channel: grpc.Channel, service: str):
    stub = health_pb2_grpc.HealthStub(channel)
    assert stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=T).status == HEALTH.SERVING


def test_health_unknown_service_is_not_found(channel: grpc.Channel):
    with pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="nope.Service"), timeout=T
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_every_service(channel: grpc.Channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    assert set(db.get_services()) == ALL | {health.SERVICE_NAME, reflection.SERVICE_NAME}
    pool = descriptor_pool.DescriptorPool(db)  # resolves files and their imports over reflection
    assert set(pool.FindServiceByName("hipgen.v1.AngleService").methods_by_name) == {
        "PredictAngle",
        "StreamPredictAngle",
    }
    assert "Generate" in pool.FindServiceByName("hipgen.v1.GenerateService").methods_by_name
    assert "left_head" in pool.FindMessageTypeByName("hipgen.v1.HipLabel").fields_by_name
    assert pool.FindMessageTypeByName("google.rpc.Status").name == "Status"


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def test_every_service_answers_unimplemented_until_its_issue_lands(channel: grpc.Channel):
    """AngleService, GenerateService and ScoreService have landed (tests/test_angle_service.py,
    tests/test_generate_service.py, tests/test_score_service.py) and refuse bad requests by name; the
    others answer UNIMPLEMENTED."""
    angle = angle_pb2_grpc.AngleServiceStub(channel)
    generate = generate_pb2_grpc.GenerateServiceStub(channel)
    score = score_pb2_grpc.ScoreServiceStub(channel)
    dataset = dataset_pb2_grpc.DatasetServiceStub(channel)
    image = common_pb2.Image(data=b"\x89PNG", encoding=common_pb2.IMAGE_ENCODING_PNG)
    calls = {
        "PredictAngle": lambda: angle.PredictAngle(angle_pb2.PredictAngleRequest(image=image), timeout=T),
        "Generate": lambda: list(
            generate.Generate(
                generate_pb2.GenerateRequest(
                    conditions=[common_pb2.NaCondition(na_left_deg=10, na_right_deg=95)]  # out of range
                ),
                timeout=T,
            )
        ),
        "ScoreSets": lambda: score.ScoreSets(score_pb2.ScoreSetsRequest(), timeout=T),
        "GetDatasetJob": lambda: dataset.GetDatasetJob(
            dataset_pb2.GetDatasetJobRequest(job_id="x"), timeout=T
        ),
    }
    codes = {name: _code(call) for name, call in calls.items()}
    assert codes.pop("PredictAngle") == grpc.StatusCode.INVALID_ARGUMENT  # a truncated PNG, named
    assert codes.pop("Generate") == grpc.StatusCode.INVALID_ARGUMENT
    assert codes.pop("ScoreSets") == grpc.StatusCode.INVALID_ARGUMENT  # no sets named
    assert codes == dict.fromkeys(codes, grpc.StatusCode.UNIMPLEMENTED)


def test_subset_of_services_and_servicer_override():
    class Score(score_pb2_grpc.ScoreServiceServicer):
        def ScoreSets(self, request, context):  # noqa: N802 (generated method name)
            return score_pb2.ScoreSetsResponse(feature_backbone="test")

    name = "hipgen.v1.ScoreService"
    server, port = build_server(_settings(), services=[name], servicers={name: Score()})
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            reply = score_pb2_grpc.ScoreServiceStub(ch).ScoreSets(score_pb2.ScoreSetsRequest(), timeout=T)
            assert reply.feature_backbone == "test"
            check = health_pb2_grpc.HealthStub(ch).Check
            assert check(health_pb2.HealthCheckRequest(service=name), timeout=T).status == HEALTH.SERVING
            code = _code(
                lambda: check(health_pb2.HealthCheckRequest(service="hipgen.v1.AngleService"), timeout=T)
            )
            assert code == grpc.StatusCode.NOT_FOUND
            assert set(ProtoReflectionDescriptorDatabase(ch).get_services()) == {
                name,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            }
    finally:
        server.stop(None).wait()


def test_unknown_service_name_is_rejected():
    with pytest.raises(ValueError, match="hipgen.v1.AngleService"):
        build_server(_settings(), services=["hipgen.v1.NopeService"])


def test_busy_port_fails_loudly():
    server, port = build_server(_settings())
    try:
        with pytest.raises(OSError, match=str(port)):
            build_server(_settings(), port=port)
    finally:
        server.stop(None).wait()


def test_graceful_stop_lets_in_flight_rpcs_finish():
    started = threading.Event()

    class SlowScore(score_pb2_grpc.ScoreServiceServicer):
        def ScoreSets(self, request, context):  # noqa: N802
            started.set()
            time.sleep(0.5)
            return score_pb2.ScoreSetsResponse(reference_count=1)

    hs = health.HealthServicer()
    server, port = build_server(
        _settings(), servicers={"hipgen.v1.ScoreService": SlowScore()}, health_servicer=hs
    )
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        future = score_pb2_grpc.ScoreServiceStub(ch).ScoreSets.future(score_pb2.ScoreSetsRequest(), timeout=T)
        assert started.wait(T)
        hs.enter_graceful_shutdown()
        server.stop(grace=T).wait()
        assert future.result().reference_count == 1  # finished within the grace period


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**kw: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HIPGEN_")}
    return {**env, **kw}


def test_python_m_services_server_runs_logs_its_port_and_stops_on_sigterm():
    metrics_port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.server", "--port", "0"],
        cwd=REPO,
        env=_clean_env(
            HIPGEN_LOG_FORMAT="json", HIPGEN_METRICS_PORT=str(metrics_port), HIPGEN_GRACE_PERIOD_S="5"
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    seen: list[str] = []

    def wait_for(msg: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                assert proc.poll() is None or not lines.empty(), f"server exited {proc.returncode}: {seen}"
                continue
            seen.append(line)
            record = json.loads(line)  # every line is JSON
            if record["msg"] == msg:
                return record
        raise AssertionError(f"no {msg!r} log line within {timeout} s: {seen}")

    try:
        listening = wait_for("server listening", 20)
        port = listening["port"]
        assert listening["address"] == f"127.0.0.1:{port}" and listening["metrics_port"] == metrics_port
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=T)
            assert reply.status == HEALTH.SERVING
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=T) as resp:
            assert b"python_info" in resp.read()
        proc.send_signal(signal.SIGTERM)
        wait_for("server stopped", 15)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_services_do_not_import_torch():
    code = "import sys, services.server; bad = {'torch', 'training'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_clean_env(), check=True, timeout=60)
