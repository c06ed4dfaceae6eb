"""Bearer-token auth with scopes, per-client rate limits, TLS and mutual TLS, client message limits and
the audit log, on real servers from ``services.server.build_server`` on 127.0.0.1 (port 0).

The servers carry stand-in AngleService/ScoreService servicers that report the client id and request id
they see: what is under test is the interceptor chain and the transport, not the models.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from hipgen.api.v1 import angle_pb2, angle_pb2_grpc, score_pb2, score_pb2_grpc
from hipgen.logs import JsonFormatter, request_id_var
from hipgen.settings import Settings
from services.audit import audit
from services.auth import (
    AuthInterceptor,
    TokenError,
    auth_interceptor,
    client_id_var,
    load_secret,
    make_token,
    required_scope,
    verify_token,
)
from services.ratelimit import RateLimiter, peer_host
from services.server import build_server
from services.tls import open_channel

REPO = Path(__file__).resolve().parents[1]
ANGLE, SCORE = "hipgen.v1.AngleService", "hipgen.v1.ScoreService"
T = 10.0  # per-RPC deadline (seconds)
SECRET = b"0123456789abcdef0123456789abcdef-test-secret"
Code = grpc.StatusCode


def _settings(**kw: Any) -> Settings:
    """Settings independent of the caller's HIPGEN_* environment."""
    return Settings(**{"host": "127.0.0.1", "port": 0, "metrics_port": 0, "max_workers": 4, **kw})


class Angle(angle_pb2_grpc.AngleServiceServicer):
    """Answers with what the interceptors bound: client id in ``model_name``, request id in
    ``model_version``; ``overlay_png`` of ``image.width`` bytes when asked (message-size checks)."""

    def PredictAngle(self, request, context):  # noqa: N802 - generated name
        return angle_pb2.PredictAngleResponse(
            model_name=client_id_var.get() or "",
            model_version=request_id_var.get() or "",
            overlay_png=b"\0" * request.image.width,
        )

    def StreamPredictAngle(self, request_iterator, context):  # noqa: N802
        for item in request_iterator:  # the client id must be bound for every message of the stream
            yield angle_pb2.StreamPredictAngleResponse(item_id=f"{item.item_id}:{client_id_var.get()}")


class Score(score_pb2_grpc.ScoreServiceServicer):
    def ScoreSets(self, request, context):  # noqa: N802
        return score_pb2.ScoreSetsResponse(feature_backbone=client_id_var.get() or "")


@contextmanager
def _server(settings: Settings) -> Iterator[int]:
    server, port = build_server(settings, services=[ANGLE, SCORE], servicers={ANGLE: Angle(), SCORE: Score()})
    server.start()
    try:
        yield port
    finally:
        server.stop(None).wait()


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "secret"
    path.write_bytes(SECRET + b"\n")
    return path


@pytest.fixture(scope="module")
def auth_port(secret_file: Path) -> Iterator[int]:
    with _server(_settings(auth_secret_file=secret_file)) as port:
        yield port


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("make_certs", REPO / "scripts" / "make_certs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_certs(tmp_path_factory.mktemp("certs"))


def _token(*scopes: str, subject: str = "lab-a", **kw: Any) -> str:
    return make_token(SECRET, subject, scopes, 3600, **kw)


def _predict(channel: grpc.Channel, token: str | None = None, **kw: Any) -> angle_pb2.PredictAngleResponse:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    return angle_pb2_grpc.AngleServiceStub(channel).PredictAngle(
        angle_pb2.PredictAngleRequest(**kw), metadata=metadata, timeout=T
    )


def _error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


# --- authentication and scopes -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("authorization", "says"),
    [
        (None, "missing bearer token"),
        ("Bearer not-a-jwt", "malformed"),
        ("Bearer ", "Bearer <token>"),
        (f"Basic {_token('measure')}", "Bearer <token>"),
        (f"Bearer {_token('measure', now=time.time() - 7200)}", "expired"),
        (
            f"Bearer {make_token(b'another-secret-of-at-least-32-bytes!!', 'lab-a', ['admin'], 60)}",
            "signature",
        ),
        (f"Bearer {jwt.encode({'sub': 'lab-a', 'scope': 'admin'}, SECRET, algorithm='HS256')}", "'exp'"),
    ],
    ids=["none", "garbled", "empty", "not-bearer", "expired", "wrong-signature", "no-exp"],
)
def test_bad_tokens_are_unauthenticated_saying_why(auth_port: int, authorization: str | None, says: str):
    metadata = (("authorization", authorization),) if authorization is not None else None
    with grpc.insecure_channel(f"127.0.0.1:{auth_port}") as ch:
        stub = angle_pb2_grpc.AngleServiceStub(ch)
        err = _error(lambda: stub.PredictAngle(angle_pb2.PredictAngleRequest(), metadata=metadata, timeout=T))
    assert err.code() == Code.UNAUTHENTICATED
    assert says in err.details()
    token = (authorization or "").partition(" ")[2]
    assert not token or token not in err.details()  # never echoed


def test_a_token_without_the_services_scope_is_permission_denied_naming_it(auth_port: int):
    with grpc.insecure_channel(f"127.0.0.1:{auth_port}") as ch:
        err = _error(lambda: _predict(ch, _token("score", "generate")))
        assert err.code() == Code.PERMISSION_DENIED
        assert "'measure'" in err.details() and "lab-a" in err.details()
        score = score_pb2_grpc.ScoreServiceStub(ch).ScoreSets
        err = _error(
            lambda: score(score_pb2.ScoreSetsRequest(), metadata=_meta(_token("measure")), timeout=T)
        )
        assert err.code() == Code.PERMISSION_DENIED and "'score'" in err.details()


def _meta(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_the_right_scope_or_admin_is_served_and_the_handler_sees_the_client_id(auth_port: int):
    with grpc.insecure_channel(f"127.0.0.1:{auth_port}") as ch:
        reply = _predict(ch, _token("measure", subject="lab-a"))
        assert reply.model_name == "lab-a"  # client_id_var, bound for the handler
        assert len(reply.model_version) == 32  # a request id, bound by the metrics interceptor
        admin = _token("admin", subject="ops")
        assert _predict(ch, admin).model_name == "ops"
        score = score_pb2_grpc.ScoreServiceStub(ch).ScoreSets
        assert score(score_pb2.ScoreSetsRequest(), metadata=_meta(admin), timeout=T).feature_backbone == "ops"


def test_a_callers_request_id_is_kept_and_a_bad_one_replaced(auth_port: int):
    with grpc.insecure_channel(f"127.0.0.1:{auth_port}") as ch:
        stub = angle_pb2_grpc.AngleServiceStub(ch)
        meta = _meta(_token("measure"))
        req = angle_pb2.PredictAngleRequest()
        kept = stub.PredictAngle(req, metadata=(*meta, ("x-request-id", "gw-123.4")), timeout=T)
        assert kept.model_version == "gw-123.4"
        bad = stub.PredictAngle(req, metadata=(*meta, ("x-request-id", 'a b {"x": 1}')), timeout=T)
        assert len(bad.model_version) == 32


def test_streams_are_authenticated_and_every_message_sees_the_client_id(auth_port: int):
    items = [angle_pb2.StreamPredictAngleRequest(item_id=str(i)) for i in range(3)]
    with grpc.insecure_channel(f"127.0.0.1:{auth_port}") as ch:
        stream = angle_pb2_grpc.AngleServiceStub(ch).StreamPredictAngle
        replies = list(stream(iter(items), metadata=_meta(_token("measure", subject="lab-b")), timeout=T))
        assert [r.item_id for r in replies] == ["0:lab-b", "1:lab-b", "2:lab-b"]
        err = _error(lambda: list(stream(iter(items), timeout=T)))
        assert err.code() == Code.UNAUTHENTICATED


def test_health_and_reflection_need_no_token(auth_port: int):
    with grpc.insecure_channel(f"127.0.0.1:{auth_port}") as ch:
        check = health_pb2_grpc.HealthStub(ch).Check
        assert check(health_pb2.HealthCheckRequest(service=ANGLE), timeout=T).status == 1  # SERVING
        assert ANGLE in ProtoReflectionDescriptorDatabase(ch).get_services()


def test_open_channel_sends_the_token_on_a_plaintext_channel(auth_port: int):
    with open_channel(f"127.0.0.1:{auth_port}", token=_token("measure", subject="lab-c")) as ch:
        assert _predict(ch).model_name == "lab-c"


def test_scope_table():
    assert required_scope("/hipgen.v1.AngleService/PredictAngle") == "measure"
    assert required_scope("/hipgen.v1.GenerateService/Generate") == "generate"
    assert required_scope("/hipgen.v1.ScoreService/ScoreSets") == "score"
    assert required_scope("/hipgen.v1.DatasetService/CreateDatasetJob") == "datasets"
    assert required_scope("/hipgen.v1.DatasetService/GenerateLabeled") == "generate"
    assert required_scope("/hipgen.v1.SomethingNew/Do") == "admin"  # deny by default


def test_tokens_round_trip_and_bad_inputs_are_refused(tmp_path: Path):
    principal = verify_token(SECRET, _token("measure", "generate", subject="x"))
    assert principal.subject == "x" and principal.scopes == {"measure", "generate"}
    assert principal.allows("measure") and not principal.allows("score")
    assert verify_token(SECRET, _token("admin")).allows("datasets")
    with pytest.raises(ValueError, match="bogus"):
        make_token(SECRET, "x", ["bogus"], 60)
    with pytest.raises(ValueError, match="subject"):
        make_token(SECRET, " ", ["measure"], 60)
    with pytest.raises(ValueError, match="ttl"):
        make_token(SECRET, "x", ["measure"], 0)
    unsigned = jwt.encode({"sub": "x", "scope": "admin", "exp": time.time() + 60}, None, algorithm="none")
    with pytest.raises(TokenError, match="HS256"):
        verify_token(SECRET, unsigned)
    short = tmp_path / "short"
    short.write_text("too short\n")
    with pytest.raises(ValueError, match="32"):
        load_secret(short)
    with pytest.raises(ValueError, match="32"):
        build_server(_settings(auth_secret_file=short), services=[SCORE], servicers={SCORE: Score()})


def test_auth_off_on_a_non_loopback_host_warns(caplog: pytest.LogCaptureFixture, secret_file: Path):
    with caplog.at_level(logging.WARNING, logger="services.auth"):
        assert auth_interceptor(_settings(), "127.0.0.1") is None
        assert not caplog.records
        assert auth_interceptor(_settings(), "0.0.0.0") is None
        assert "WITHOUT authentication" in caplog.records[-1].getMessage()
        assert isinstance(auth_interceptor(_settings(auth_secret_file=secret_file), "::1"), AuthInterceptor)


def test_the_token_cli_makes_a_secret_and_a_token_the_server_accepts(tmp_path: Path):
    from typer.testing import CliRunner

    from hipgen.cli import app

    runner = CliRunner()
    secret = tmp_path / "secret"
    assert runner.invoke(app, ["token", "secret", "-o", str(secret)]).exit_code == 0
    assert secret.stat().st_mode & 0o077 == 0
    res = runner.invoke(
        app,
        ["token", "create", "--secret-file", str(secret), "--subject", "cli", "--scopes", "measure,score"],
    )
    assert res.exit_code == 0, res.output
    principal = verify_token(load_secret(secret), res.stdout.strip())
    assert principal.subject == "cli" and principal.scopes == {"measure", "score"}
    bad = runner.invoke(
        app, ["token", "create", "--secret-file", str(secret), "--subject", "x", "--scopes", "no"]
    )
    assert bad.exit_code == 2


# --- rate limits -------------------------------------------------------------------------------------
def test_rate_limit_answers_resource_exhausted_with_retry_info_per_client(secret_file: Path):
    settings = _settings(auth_secret_file=secret_file, rate_limit_rps=0.5, rate_limit_burst=2)
    with _server(settings) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        a = _token("measure", subject="a")
        _predict(ch, a)
        _predict(ch, a)
        err = _error(lambda: _predict(ch, a))
        assert err.code() == Code.RESOURCE_EXHAUSTED and "rate limit" in err.details()
        status = rpc_status.from_call(err)
        assert status is not None and status.code == Code.RESOURCE_EXHAUSTED.value[0]
        infos = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert len(infos) == 1
        info = error_details_pb2.RetryInfo()
        infos[0].Unpack(info)
        assert 0 < info.retry_delay.ToTimedelta().total_seconds() <= 2.0  # one token at 0.5/s
        assert _predict(ch, _token("measure", subject="b")).model_name == "b"  # b has its own bucket
        check = health_pb2_grpc.HealthStub(ch).Check
        for _ in range(5):  # probes are exempt
            check(health_pb2.HealthCheckRequest(), timeout=T)


def test_without_auth_the_rate_limit_is_per_peer_address():
    with _server(_settings(rate_limit_rps=0.5, rate_limit_burst=1)) as port:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            _predict(ch)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:  # a new connection, a new port: same client
            assert _error(lambda: _predict(ch)).code() == Code.RESOURCE_EXHAUSTED


def test_token_bucket_refills_at_the_rate_up_to_the_burst():
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0], max_clients=2)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    now[0] += 0.25
    assert limiter.acquire("a") == pytest.approx(0.25)  # a refused call takes nothing
    now[0] += 0.25
    assert limiter.acquire("a") == 0.0
    now[0] += 100
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0  # refilled to the burst, not beyond
    limiter.acquire("b"), limiter.acquire("c")  # "a" is evicted: at most max_clients buckets
    assert len(limiter._buckets) == 2
    assert peer_host("ipv4:10.0.0.7:53412") == "10.0.0.7"
    assert peer_host("ipv6:[::1]:53412") == "::1"
    assert peer_host("unix:/tmp/s") == "unix:/tmp/s"


# --- TLS and mutual TLS -------------------------------------------------------------------------------
def test_tls_with_the_dev_ca(certs: dict[str, Path], secret_file: Path):
    settings = _settings(
        tls_cert_file=certs["server.pem"], tls_key_file=certs["server.key"], auth_secret_file=secret_file
    )
    with _server(settings) as port:
        with open_channel(f"127.0.0.1:{port}", ca_file=certs["ca.pem"], token=_token("measure")) as ch:
            assert _predict(ch).model_name == "lab-a"  # TLS + bearer call credentials
        with open_channel(f"localhost:{port}", ca_file=certs["ca.pem"]) as ch:
            assert _error(lambda: _predict(ch)).code() == Code.UNAUTHENTICATED  # TLS is no token
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:  # plaintext to a TLS port
            assert _error(lambda: _predict(ch, _token("measure"))).code() == Code.UNAVAILABLE


def test_mutual_tls_refuses_a_client_without_a_certificate(certs: dict[str, Path]):
    settings = _settings(
        tls_cert_file=certs["server.pem"],
        tls_key_file=certs["server.key"],
        tls_client_ca_file=certs["ca.pem"],
    )
    with _server(settings) as port:
        with open_channel(f"127.0.0.1:{port}", ca_file=certs["ca.pem"]) as ch:
            assert _error(lambda: _predict(ch)).code() == Code.UNAVAILABLE
        with open_channel(
            f"127.0.0.1:{port}",
            ca_file=certs["ca.pem"],
            cert_file=certs["client.pem"],
            key_file=certs["client.key"],
        ) as ch:
            assert _predict(ch).model_name == ""  # auth off: no client id


def test_tls_settings_must_be_complete(certs: dict[str, Path]):
    with pytest.raises(ValueError, match="tls_key_file"):
        build_server(
            _settings(tls_cert_file=certs["server.pem"]), services=[SCORE], servicers={SCORE: Score()}
        )
    with pytest.raises(ValueError, match="tls_client_ca_file"):
        build_server(
            _settings(tls_client_ca_file=certs["ca.pem"]), services=[SCORE], servicers={SCORE: Score()}
        )
    assert _settings(tls_cert_file="", auth_secret_file=" ").tls_cert_file is None  # empty env: unset


# --- message sizes -----------------------------------------------------------------------------------
def test_client_helper_takes_the_servers_message_size():
    big = 5 * 1024 * 1024  # over gRPC's 4 MiB default, under the server's 64 MiB
    with _server(_settings()) as port:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            assert _error(lambda: _predict(ch, image={"width": big})).code() == Code.RESOURCE_EXHAUSTED
        with open_channel(f"127.0.0.1:{port}") as ch:
            assert len(_predict(ch, image={"width": big}).overlay_png) == big


# --- audit log ---------------------------------------------------------------------------------------
@contextmanager
def _audit_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("hipgen.audit")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def test_audit_lines_carry_client_and_request_ids_and_no_identifiers():
    with _audit_lines() as out:
        token_c, token_r = client_id_var.set("lab-a"), request_id_var.set("req-1")
        try:
            audit(
                "dataset_job.created",
                job_id="j-1",
                count=200,
                output_uri="s3://bucket/set",
                patient_name="Rex",
                name="clash",
                overlay=b"\x89PNG" * 100,
            )
        finally:
            client_id_var.reset(token_c), request_id_var.reset(token_r)
    line = json.loads(out.getvalue())
    assert line["logger"] == "hipgen.audit" and line["msg"] == line["event"] == "dataset_job.created"
    assert line["client_id"] == "lab-a" and line["request_id"] == "req-1"
    assert (line["job_id"], line["count"], line["output_uri"]) == ("j-1", 200, "s3://bucket/set")
    assert line["patient_name"] == "<redacted>" and line["field_name"] == "clash"
    assert line["overlay"] == "<bytes: 400>"


def test_refusals_are_audited(auth_port: int):
    with _audit_lines() as out, grpc.insecure_channel(f"127.0.0.1:{auth_port}") as ch:
        _error(lambda: _predict(ch, _token("score", subject="lab-z")))
    lines = [json.loads(ln) for ln in out.getvalue().splitlines()]
    denied = [ln for ln in lines if ln["event"] == "auth.denied" and ln["client_id"] == "lab-z"]
    assert denied and denied[0]["code"] == "PERMISSION_DENIED"
    assert denied[0]["method"] == "hipgen.v1.AngleService/PredictAngle" and denied[0]["request_id"]
