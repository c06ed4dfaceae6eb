"""hipgen.client (sync and asyncio) and the ``hipgen dataset`` CLI against real servers on 127.0.0.1.

Two kinds of server: the gateway in front of a model server on the committed models (results, streams,
dataset jobs end to end, errors with field violations), and a stand-in DatasetService behind the real
interceptor chain that fails on purpose — UNAVAILABLE a few times, RESOURCE_EXHAUSTED with RetryInfo,
slower than the deadline, a Watch stream that breaks — so that retries, delays and deadlines are measured
rather than assumed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_gateway import MODEL_SERVICES, Running, gateway_settings, phantom_png
from typer.testing import CliRunner

from hipgen.api.v1 import dataset_pb2, dataset_pb2_grpc
from hipgen.cli import app
from hipgen.client import (
    AsyncHipgenClient,
    ClientError,
    DatasetJob,
    GeneratedImage,
    GenerateProgress,
    HipgenClient,
    RetryPolicy,
    dataset_spec,
    to_uri,
)
from hipgen.data.manifest import read_manifest
from hipgen.errors import FieldError
from hipgen.settings import Settings
from services.auth import client_id_var, make_token
from services.errors import FieldViolation, RequestError
from services.server import build_server

T = 120.0
PNG = b"\x89PNG\r\n\x1a\n"
DATASET = "hipgen.v1.DatasetService"
Code = grpc.StatusCode
FAST = RetryPolicy(retries=4, initial_backoff_s=0.02, max_backoff_s=0.2)


# --- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A gateway (dataset jobs under ``tmp``) in front of one model server (Angle, Generate, Score)."""
    tmp = tmp_path_factory.mktemp("client")
    model, port = build_server(Settings(port=0, metrics_port=0, score_data_root=tmp), services=MODEL_SERVICES)
    model.start()
    run = Running(gateway_settings(tmp, f"127.0.0.1:{port}", dataset_max_running=1, dataset_max_queued=16))
    yield f"127.0.0.1:{run.gw.port}", tmp
    run.close()
    model.stop(None).wait()


class Flaky(dataset_pb2_grpc.DatasetServiceServicer):
    """A DatasetService that misbehaves by job id prefix: ``flaky-`` UNAVAILABLE twice, ``down-`` always
    UNAVAILABLE, ``busy-`` RESOURCE_EXHAUSTED (RetryInfo 0.4 s) once, ``bad-`` INVALID_ARGUMENT, ``slow-``
    answers after 3 s; otherwise the job, with the caller's token subject as its display name. Create is
    refused once with RetryInfo 0.3 s; Watch of ``drop-`` breaks (UNAVAILABLE) after one message once."""

    BUSY_S, CREATE_BUSY_S = 0.4, 0.3

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.request_ids: list[str] = []
        self._lock = threading.Lock()

    def _count(self, key: str) -> int:
        with self._lock:
            self.calls[key] += 1
            return self.calls[key]

    @staticmethod
    def _job(job_id: str, state: str = "SUCCEEDED", **spec: Any) -> dataset_pb2.DatasetJob:
        return dataset_pb2.DatasetJob(
            job_id=job_id,
            state=dataset_pb2.DatasetJobState.Value(f"DATASET_JOB_STATE_{state}"),
            spec=dataset_pb2.DatasetJobSpec(**spec),
        )

    def GetDatasetJob(self, request, context):  # noqa: N802 - generated name
        key = request.job_id
        n, kind = self._count(key), key.split("-")[0]
        if (kind == "flaky" and n <= 2) or kind == "down":
            RequestError(Code.UNAVAILABLE, "warming up").abort(context)
        if kind == "busy" and n == 1:
            RequestError.exhausted("queue full; retry later", self.BUSY_S).abort(context)
        if kind == "bad":
            RequestError.invalid([FieldViolation("job_id", "not a dataset job id")]).abort(context)
        if kind == "slow":
            end = time.monotonic() + 3
            while context.is_active() and time.monotonic() < end:
                time.sleep(0.02)
        job = self._job(key, display_name=client_id_var.get() or "")
        return dataset_pb2.GetDatasetJobResponse(job=job)

    def CreateDatasetJob(self, request, context):  # noqa: N802
        self.request_ids.append(request.request_id)
        if self._count(f"create:{request.spec.display_name}") == 1:
            RequestError.exhausted("queue full", self.CREATE_BUSY_S).abort(context)
        return dataset_pb2.CreateDatasetJobResponse(job=self._job("0" * 32, "QUEUED"))

    def WatchDatasetJob(self, request, context):  # noqa: N802
        n = self._count(request.job_id)
        yield dataset_pb2.WatchDatasetJobResponse(job=self._job(request.job_id, "RUNNING"))
        if request.job_id.startswith("drop-") and n == 1:
            RequestError(Code.UNAVAILABLE, "gateway restarting").abort(context)
        yield dataset_pb2.WatchDatasetJobResponse(job=self._job(request.job_id, "SUCCEEDED"))


def _serve(servicer: Flaky, port: int = 0, **settings: Any) -> tuple[grpc.Server, int]:
    server, bound = build_server(
        Settings(host="127.0.0.1", port=port, metrics_port=0, **settings),
        services=[DATASET],
        servicers={DATASET: servicer},
    )
    server.start()
    return server, bound


@pytest.fixture(scope="module")
def flaky() -> Iterator[tuple[str, Flaky]]:
    servicer = Flaky()
    server, port = _serve(servicer)
    yield f"127.0.0.1:{port}", servicer
    server.stop(None).wait()


# --- through the gateway -----------------------------------------------------------------------------------
def test_sync_client_measures_generates_and_runs_a_dataset_job(gateway: tuple[str, Path]) -> None:
    target, tmp = gateway
    png = phantom_png()
    (tmp / "study.png").write_bytes(png)
    with HipgenClient(target, timeout_s=T) as c:
        c.wait_ready()
        a = c.predict_angle(png, include_overlay=True)
        b = c.predict_angle(tmp / "study.png")  # a path sends its bytes and its name
        assert 40 < a.na_left_deg < 160 and 40 < a.na_right_deg < 160
        assert a.class_left in ("BIG", "SMALL") and a.image_class in ("BIG", "SMALL")
        assert a.overlay_png is not None and a.overlay_png.startswith(PNG) and b.overlay_png is None
        assert (b.na_left_deg, b.left_head) == (a.na_left_deg, a.left_head)
        assert b.raw.label.file_name == "study.png" and a.image_width == 256 and a.model_version

        events = list(c.generate_stream([(100, 90)], images_per_condition=2, seed=5, sampler="lcm"))
        progress = [e for e in events if isinstance(e, GenerateProgress)]
        images = [e for e in events if isinstance(e, GeneratedImage)]
        assert progress and progress[-1].step == progress[-1].total_steps
        assert [i.seed for i in images] == [5, 6] and [i.index for i in images] == [0, 1]
        assert all(
            i.sampler == "LCM" and i.data.startswith(PNG) and i.raw.label.provenance.synthetic for i in images
        )
        assert (images[0].requested_na_left_deg, images[0].requested_na_right_deg) == (100, 90)

        labeled = c.generate_labeled([(95, 95)], seed=9, sampler="lcm")
        assert len(labeled.images) == 1 and labeled.images[0].attempts == 1 and not labeled.rejected
        assert labeled.images[0].error_left_deg == pytest.approx(labeled.images[0].image.na_left_deg - 95)

        out = tmp / "sync-set"
        kw: dict[str, Any] = {"count": 4, "na_range": (80, 115), "sampler": "lcm", "seed": 3}
        job = c.create_dataset_job(output_uri=out, images_per_shard=2, request_id="sync-1", **kw)
        assert job.state == "QUEUED" and job.count == 4 and job.output_uri == f"file://{out}"
        assert (
            c.create_dataset_job(output_uri=out, images_per_shard=2, request_id="sync-1", **kw).job_id
            == job.job_id
        )
        with pytest.raises(ClientError) as err:  # the same key for another spec is a client bug, not a retry
            c.create_dataset_job(output_uri=out, request_id="sync-1", **kw)
        assert err.value.code_name == "ALREADY_EXISTS"
        updates = list(c.watch_dataset_job(job.job_id))
        final = updates[-1]
        assert final.state == "SUCCEEDED" and final.done, final.error_message
        assert all(not u.done for u in updates[:-1])
        assert final.progress.images_done == 4 and final.progress.shards_done == 2
        assert final.fidelity is not None and final.fidelity.angles == 8
        assert sum(read_manifest(out).split_counts.values()) == 4
        assert c.get_dataset_job(job.job_id).to_dict() == final.to_dict()
        listed = list(c.list_dataset_jobs(page_size=1))  # one job per page: every page is fetched
        assert job.job_id in [j.job_id for j in listed]
        assert len({j.job_id for j in listed}) == len(listed)
        assert [j.job_id for j in c.list_dataset_jobs(state="succeeded")].count(job.job_id) == 1
        assert job.job_id not in [j.job_id for j in c.list_dataset_jobs(state="running")]

        report = c.score_sets(out, out, metrics=["ssim"])
        assert report.reference_count == report.candidate_count == 4 and "ssim" in report.metrics


def test_async_client_generates_runs_lists_and_cancels_jobs(gateway: tuple[str, Path]) -> None:
    target, tmp = gateway

    async def main() -> None:
        async with AsyncHipgenClient(target, timeout_s=T) as c:
            await c.wait_ready()
            a = await c.predict_angle(phantom_png(seed=4))
            assert a.class_left in ("BIG", "SMALL") and a.overlay_png is None
            seen: list[GenerateProgress] = []
            images = await c.generate(
                [(110, 85)], images_per_condition=2, seed=40, sampler="lcm", on_progress=seen.append
            )
            assert [i.seed for i in images] == [40, 41] and seen and seen[-1].images_total == 2
            assert all(i.na_left_deg is not None for i in images)

            job = await c.create_dataset_job(
                dataset_spec(tmp / "async-set", 4, angles_list=[(100, 100), (90, 110)], sampler="lcm", seed=1)
            )
            states = [u.state async for u in c.watch_dataset_job(job.job_id)]
            assert states[-1] == "SUCCEEDED" and len(states) >= 2
            assert sum(read_manifest(tmp / "async-set").split_counts.values()) == 4
            ids = [j.job_id async for j in c.list_dataset_jobs(page_size=1)]
            assert job.job_id in ids and len(ids) == len(set(ids))

            big = await c.create_dataset_job(
                output_uri=tmp / "async-cancel",
                count=40,
                na_range=(80, 120),
                images_per_shard=2,
                sampler="lcm",
            )
            cancelling = await c.cancel_dataset_job(big.job_id)
            assert cancelling.state in ("CANCELLING", "CANCELLED")
            final = await c.wait_dataset_job(big.job_id)
            assert final.state == "CANCELLED" and final.progress.images_done < 40
            assert (await c.cancel_dataset_job(big.job_id)).state == "CANCELLED"  # a no-op once final

    asyncio.run(main())


def test_bad_requests_raise_client_errors_naming_the_fields(gateway: tuple[str, Path]) -> None:
    target, tmp = gateway
    with HipgenClient(target, timeout_s=T) as c:
        with pytest.raises(ClientError) as e:
            c.create_dataset_job(output_uri=tmp / "bad", count=0, na_range=(120, 80), test_fraction=1.5)
        assert e.value.code == Code.INVALID_ARGUMENT and e.value.code_name == "INVALID_ARGUMENT"
        assert {"spec.count", "spec.angles.uniform", "spec.test_fraction"} <= set(e.value.field_violations)
        assert e.value.retry_after_s is None and "spec.count" in str(e.value)
        with pytest.raises(ClientError) as e:
            c.get_dataset_job("nope")
        assert e.value.code == Code.INVALID_ARGUMENT and "job_id" in e.value.field_violations
        with pytest.raises(ClientError) as e:
            c.get_dataset_job("0" * 32)
        assert e.value.code == Code.NOT_FOUND and not e.value.field_violations
        with pytest.raises(ClientError) as e:  # the upstream AngleService's BadRequest, through the gateway
            c.predict_angle(b"not an image")
        assert "image.data" in e.value.field_violations
        with pytest.raises(FieldError) as fe:  # structural mistakes never leave the process
            c.generate([(100, 100)], sampler="euler")
        assert fe.value.field == "sampler"
        with pytest.raises(FieldError):
            dataset_spec("x", 4, na_range=(80, 90), histogram=([80, 90], [1]))

    async def main() -> None:
        async with AsyncHipgenClient(target, timeout_s=T) as c:
            with pytest.raises(ClientError) as e:
                await c.create_dataset_job(output_uri=tmp / "bad", count=2, na_range=(120, 80))
            assert e.value.code == Code.INVALID_ARGUMENT and "spec.angles.uniform" in e.value.field_violations

    asyncio.run(main())


# --- retries, delays and deadlines, measured on a server that fails on purpose ----------------------------
def test_unavailable_is_retried_until_it_succeeds_or_the_retries_run_out(flaky: tuple[str, Flaky]) -> None:
    target, srv = flaky
    with HipgenClient(target, retry_policy=FAST) as c:
        assert c.get_dataset_job("flaky-sync").state == "SUCCEEDED"
        assert srv.calls["flaky-sync"] == 3
        with pytest.raises(ClientError) as e:
            c.get_dataset_job("down-sync")
        assert e.value.code == Code.UNAVAILABLE and srv.calls["down-sync"] == 5  # 1 + 4 retries
        with pytest.raises(ClientError) as e:  # not retried: the same answer every time
            c.get_dataset_job("bad-sync")
        assert e.value.field_violations == {"job_id": "not a dataset job id"} and srv.calls["bad-sync"] == 1
    # the deadline bounds the retries too: many allowed, but none may start after it
    patient = RetryPolicy(retries=1000, initial_backoff_s=0.05, max_backoff_s=0.1)
    with HipgenClient(target, retry_policy=patient, timeout_s=0.6) as c:
        start = time.monotonic()
        with pytest.raises(ClientError) as e:
            c.get_dataset_job("down-deadline")
        assert e.value.code == Code.UNAVAILABLE and time.monotonic() - start < 1.0
        assert 3 <= srv.calls["down-deadline"] < 20

    async def main() -> None:
        async with AsyncHipgenClient(target, retry_policy=FAST) as c:
            assert (await c.get_dataset_job("flaky-async")).job_id == "flaky-async"
            with pytest.raises(ClientError) as e:
                await c.get_dataset_job("bad-async")
            assert e.value.code == Code.INVALID_ARGUMENT

    asyncio.run(main())
    assert srv.calls["flaky-async"] == 3 and srv.calls["bad-async"] == 1


def test_resource_exhausted_waits_the_servers_retry_info_and_create_keeps_its_request_id(
    flaky: tuple[str, Flaky],
) -> None:
    target, srv = flaky
    with HipgenClient(target, retry_policy=FAST) as c:
        start = time.monotonic()
        assert c.get_dataset_job("busy-sync").state == "SUCCEEDED"
        assert time.monotonic() - start >= Flaky.BUSY_S and srv.calls["busy-sync"] == 2
        start = time.monotonic()
        job = c.create_dataset_job(output_uri="s3://b/x", count=1, na_range=(90, 100), display_name="sync")
        assert job.state == "QUEUED" and time.monotonic() - start >= Flaky.CREATE_BUSY_S
        first, second = srv.request_ids[-2:]
        assert first == second and len(first) == 32  # one generated key for both attempts
    with HipgenClient(target, retry_policy=RetryPolicy(retries=0)) as c:  # retries off: the delay is reported
        with pytest.raises(ClientError) as e:
            c.get_dataset_job("busy-noretry")
        assert e.value.code == Code.RESOURCE_EXHAUSTED and e.value.retry_after_s == pytest.approx(
            Flaky.BUSY_S
        )

    async def main() -> None:
        async with AsyncHipgenClient(target, retry_policy=FAST) as c:
            start = time.monotonic()
            await c.get_dataset_job("busy-async")
            assert time.monotonic() - start >= Flaky.BUSY_S
            await c.create_dataset_job(
                output_uri="s3://b/y", count=1, na_range=(90, 100), display_name="async", request_id="mine"
            )

    asyncio.run(main())
    assert srv.calls["busy-async"] == 2 and srv.request_ids[-2:] == ["mine", "mine"]


def test_every_call_has_a_deadline(flaky: tuple[str, Flaky]) -> None:
    target, srv = flaky
    with HipgenClient(target, timeout_s=0.3, retry_policy=FAST) as c:
        start = time.monotonic()
        with pytest.raises(ClientError) as e:
            c.get_dataset_job("slow-sync")
        assert e.value.code == Code.DEADLINE_EXCEEDED and time.monotonic() - start < 1.5
        assert srv.calls["slow-sync"] == 1  # a spent deadline is not retried
        start = time.monotonic()
        with pytest.raises(ClientError) as e:  # overridden per call
            c.get_dataset_job("slow-override", timeout_s=0.1)
        assert e.value.code == Code.DEADLINE_EXCEEDED and time.monotonic() - start < 1.0

    async def main() -> None:
        async with AsyncHipgenClient(target, timeout_s=0.3) as c:
            with pytest.raises(ClientError) as e:
                await c.get_dataset_job("slow-async")
            assert e.value.code == Code.DEADLINE_EXCEEDED

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 1.5


def test_watch_resumes_after_the_stream_breaks(flaky: tuple[str, Flaky]) -> None:
    target, srv = flaky
    with HipgenClient(target, retry_policy=FAST) as c:
        assert [j.state for j in c.watch_dataset_job("drop-sync")] == ["RUNNING", "RUNNING", "SUCCEEDED"]

    async def main() -> list[str]:
        async with AsyncHipgenClient(target, retry_policy=FAST) as c:
            return [j.state async for j in c.watch_dataset_job("drop-async")]

    assert asyncio.run(main()) == ["RUNNING", "RUNNING", "SUCCEEDED"]
    assert srv.calls["drop-sync"] == srv.calls["drop-async"] == 2


def test_a_server_that_starts_late_is_reached_by_retrying(tmp_path: Path) -> None:
    with socket.socket() as s:  # a free port nobody listens on yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servicer, started = Flaky(), []
    timer = threading.Timer(0.5, lambda: started.append(_serve(servicer, port)[0]))
    timer.start()
    try:
        policy = RetryPolicy(retries=10, initial_backoff_s=0.1, max_backoff_s=0.4)
        with HipgenClient(f"127.0.0.1:{port}", retry_policy=policy, timeout_s=10) as c:
            start = time.monotonic()
            assert c.get_dataset_job("late").job_id == "late"
            assert time.monotonic() - start >= 0.4
    finally:
        timer.join()
        for server in started:
            server.stop(None).wait()


def test_tokens_and_mutual_tls(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_certs", Path(__file__).resolve().parents[1] / "scripts" / "make_certs.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    certs = module.make_certs(tmp_path / "certs")
    secret = b"0123456789abcdef0123456789abcdef-client-test"
    (tmp_path / "secret").write_bytes(secret)
    token = make_token(secret, "lab-z", ["datasets"], 600)
    server, port = _serve(Flaky(), auth_secret_file=tmp_path / "secret")
    try:  # plaintext: the token travels as metadata
        with HipgenClient(f"127.0.0.1:{port}", token=token) as c:
            assert c.get_dataset_job("who").display_name == "lab-z"
        with HipgenClient(f"127.0.0.1:{port}") as c, pytest.raises(ClientError) as e:
            c.get_dataset_job("who")
        assert e.value.code == Code.UNAUTHENTICATED
    finally:
        server.stop(None).wait()
    tls = {
        "tls_cert_file": certs["server.pem"],
        "tls_key_file": certs["server.key"],
        "tls_client_ca_file": certs["ca.pem"],
    }
    server, port = _serve(Flaky(), auth_secret_file=tmp_path / "secret", **tls)
    try:
        files = {
            "ca_file": certs["ca.pem"],
            "cert_file": certs["client.pem"],
            "key_file": certs["client.key"],
        }
        with HipgenClient(f"localhost:{port}", token=token, **files) as c:
            assert c.get_dataset_job("who").display_name == "lab-z"

        async def main() -> str:
            async with AsyncHipgenClient(f"localhost:{port}", token=token, **files) as c:
                return (await c.get_dataset_job("who")).display_name

        assert asyncio.run(main()) == "lab-z"
    finally:
        server.stop(None).wait()


def test_the_client_loads_neither_the_server_side_nor_torch() -> None:
    import subprocess

    code = (
        "import sys, hipgen.client; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('services', 'torch')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_locations_become_absolute_file_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert to_uri("out/set") == f"file://{tmp_path}/out/set"
    assert to_uri("file://rel") == f"file://{tmp_path}/rel"
    assert to_uri("file:///abs/x") == "file:///abs/x"
    assert to_uri("s3://bucket/prefix") == "s3://bucket/prefix"
    job = DatasetJob.from_proto(
        dataset_pb2.DatasetJob(job_id="j", state=dataset_pb2.DATASET_JOB_STATE_FAILED)
    )
    assert job.state == "FAILED" and json.dumps(job.to_dict())


# --- the CLI -----------------------------------------------------------------------------------------------
def test_cli_creates_watches_lists_gets_and_cancels(
    gateway: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    target, tmp = gateway
    monkeypatch.chdir(tmp)
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["dataset", "create", "--target", target, "--out", "cli-set", "--count", "4",
         "--na-range", "80", "115", "--sampler", "lcm", "--seed", "7", "--images-per-shard", "2",
         "--format", "classfolders", "--watch"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    job_id = res.stdout.strip().splitlines()[-1]
    assert "SUCCEEDED" in res.output and len(job_id) == 32
    assert sum(read_manifest(tmp / "cli-set").split_counts.values()) == 4

    res = runner.invoke(app, ["dataset", "list", "--target", target, "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    mine = [r for r in rows if r["job_id"] == job_id]
    assert mine and mine[0]["state"] == "SUCCEEDED" and mine[0]["output_uri"] == f"file://{tmp}/cli-set"
    assert mine[0]["format"] == "classfolders" and mine[0]["progress"]["images_done"] == 4

    res = runner.invoke(app, ["dataset", "get", job_id, "--target", target, "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["fidelity"]["angles"] == 8
    assert runner.invoke(app, ["dataset", "list", "--target", target, "--state", "succeeded"]).exit_code == 0

    res = runner.invoke(
        app,
        ["dataset", "create", "--target", target, "--out", "cli-cancel", "--count", "40",
         "--angles-list", "100,100;90,110", "--sampler", "lcm", "--images-per-shard", "2"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    big = res.stdout.strip().splitlines()[-1]
    res = runner.invoke(app, ["dataset", "cancel", big, "--target", target])
    assert res.exit_code == 0 and "CANCEL" in res.output
    res = runner.invoke(app, ["dataset", "watch", big, "--target", target])
    assert res.exit_code == 1 and "CANCELLED" in res.output


def test_cli_errors_are_one_line_with_the_field_named(gateway: tuple[str, Path]) -> None:
    target, tmp = gateway
    runner = CliRunner()
    base = ["dataset", "create", "--target", target, "--out", str(tmp / "cli-bad"), "--count", "4"]
    res = runner.invoke(app, [*base, "--na-range", "120", "80"])
    assert res.exit_code == 2, res.output
    assert "spec.angles.uniform (--na-range)" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, [*base, "--na-range", "80", "120", "--sampler", "euler"])
    assert res.exit_code == 2 and "--sampler" in res.output
    res = runner.invoke(app, [*base, "--na-range", "80", "120", "--angles-list", "100,100"])
    assert res.exit_code == 2 and "exactly one" in res.output
    res = runner.invoke(app, [*base, "--angles-list", "100;x"])
    assert res.exit_code == 2 and "--angles-list" in res.output
    res = runner.invoke(app, ["dataset", "get", "nope", "--target", target])
    assert res.exit_code == 2 and "job_id" in res.output
    res = runner.invoke(app, ["dataset", "get", "0" * 32, "--target", target])
    assert res.exit_code == 2 and "NOT_FOUND" in res.output
    res = runner.invoke(app, ["dataset", "list", "--target", "127.0.0.1:1", "--timeout", "2"])
    assert res.exit_code == 1 and "UNAVAILABLE" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["dataset", "list", "--target", target, "--token-file", str(tmp / "missing")])
    assert res.exit_code == 2 and "--token-file" in res.output
