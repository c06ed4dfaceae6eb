"""Dataset jobs beyond the happy path, against real processes on 127.0.0.1: the gateway killed with
SIGKILL mid-job and restarted (the job resumes and the manifest lists exactly the requested images), an
``s3://`` destination on moto's S3 server, job state on a real PostgreSQL server, the Kubernetes shard
worker run as its own process with ``JOB_COMPLETION_INDEX``, the Indexed Job object validated offline
against the Kubernetes schema, scoring against a reference set, and the angle distributions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from test_gateway import MODEL_SERVICES, Running, gateway_settings, spec, wait_final

from hipgen.api.v1 import dataset_pb2, dataset_pb2_grpc
from hipgen.data.manifest import read_manifest, verify_manifest
from hipgen.dataset.spec import AngleSpec, JobSpec
from hipgen.demo import start_server_process
from hipgen.settings import Settings
from services.gateway.kube import KubeOptions, build_indexed_job, job_manifest, job_status
from services.gateway.store import JobStore
from services.server import build_server

T = 180.0
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Angle, Generate and Score on the committed models; ScoreService reads sets under pytest's temp."""
    settings = Settings(port=0, metrics_port=0, score_data_root=tmp_path_factory.getbasetemp())
    server, port = build_server(settings, services=MODEL_SERVICES)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None).wait()


def hashes(root: Path) -> dict[str, str]:
    return {e.path: e.sha256 for e in read_manifest(root).files if e.record or e.samples}


# --- distributions and shards (pure) ------------------------------------------------------------------
def test_shards_are_deterministic_from_job_seed_and_index_alone() -> None:
    s = JobSpec(
        "file:///tmp/x", "imagefolder", 100, AngleSpec("uniform", 80, 120), seed=7, images_per_shard=16
    )
    assert s.shard_count == 7 and list(s.shard_range(6)) == list(range(96, 100))
    a, b = s.shard_plan(3), s.shard_plan(3)
    assert np.array_equal(a.angles, b.angles) and a.seed_base == b.seed_base
    other = JobSpec(**{**s.__dict__, "seed": 8})
    assert not np.array_equal(other.shard_plan(3).angles, a.angles)
    bases = {s.shard_plan(k).seed_base for k in range(s.shard_count)}
    assert len(bases) == s.shard_count  # shards never share seeds
    with pytest.raises(IndexError):
        s.shard_range(7)


def test_angle_distributions_draw_what_they_say() -> None:
    rng = np.random.default_rng(0)
    n = range(4000)
    u = AngleSpec("uniform", 80, 120).draw(rng, n)
    assert u.min() >= 80 and u.max() <= 120 and abs(u.mean() - 100) < 1 and u.shape == (4000, 2)
    bal = AngleSpec("balanced", 80, 120, threshold=105).draw(rng, n)
    big = np.all(bal >= 105, axis=1)
    assert big[::2].all() and not np.any(bal[1::2] >= 105)  # alternating, both sides in the class band
    lst = AngleSpec("list", conditions=((90, 100), (110, 120))).draw(rng, range(3, 7))
    assert lst.tolist() == [[110, 120], [90, 100], [110, 120], [90, 100]]  # by global index
    h = AngleSpec("histogram", edges=(80, 90, 100), weights=(0, 1)).draw(rng, n)
    assert h.min() >= 90 and h.max() <= 100
    sym = AngleSpec("uniform", 80, 120, symmetric=True).draw(rng, n)
    assert np.array_equal(sym[:, 0], sym[:, 1])


# --- resume after SIGKILL --------------------------------------------------------------------------------
def start_gateway(tmp: Path, address: str, db: str) -> tuple[subprocess.Popen[str], int]:
    env = {
        **os.environ,
        "HIPGEN_METRICS_PORT": "0",
        "HIPGEN_ANGLE_ADDRESS": address,
        "HIPGEN_GENERATE_ADDRESS": address,
        "HIPGEN_SCORE_ADDRESS": address,
        "HIPGEN_DATASET_DB_URL": db,
        "HIPGEN_DATASET_OUTPUT_ROOT": str(tmp),
        "HIPGEN_DATASET_SHARD_WORKERS": "1",
        "HIPGEN_LOG_FORMAT": "json",
    }
    proc, port, _ = start_server_process(env, ("services.gateway",), "gateway listening")
    return proc, port


def test_killed_gateway_resumes_the_job_and_writes_exactly_count_images(
    tmp_path: Path, model_address: str
) -> None:
    db = f"sqlite:///{tmp_path}/jobs.db"
    out = tmp_path / "resumed"
    proc, port = start_gateway(tmp_path, model_address, db)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = dataset_pb2_grpc.DatasetServiceStub(ch)
            job = stub.CreateDatasetJob(
                dataset_pb2.CreateDatasetJobRequest(spec=spec(f"file://{out}", count=24, images_per_shard=2)),
                timeout=T,
            ).job
            deadline = time.monotonic() + T
            while (
                stub.GetDatasetJob(
                    dataset_pb2.GetDatasetJobRequest(job_id=job.job_id), timeout=T
                ).job.progress.shards_done
                < 3
            ):
                assert time.monotonic() < deadline, "no progress"
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert not (out / "manifest.json").exists()
    records_before = len(list((out / "_shards").glob("*.json")))
    assert 3 <= records_before < 12

    proc, port = start_gateway(tmp_path, model_address, db)  # same database: the job resumes by itself
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            final = wait_final(dataset_pb2_grpc.DatasetServiceStub(ch), job.job_id, timeout=T)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert final.state == dataset_pb2.DATASET_JOB_STATE_SUCCEEDED, final.error
    assert final.progress.images_done == 24 and final.progress.shards_done == 12
    report = verify_manifest(out)
    assert report.ok and report.checked == 24 + 2, (
        report.problems
    )  # 24 images + metadata.csv + generation log
    assert sorted(hashes(out)) == [f"{i:06d}.png" for i in range(24)]  # no duplicates, none missing
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temp files left by the killed writer
    assert not (out / "_shards").exists() or not any((out / "_shards").iterdir())

    # the same job uninterrupted writes the same bytes: resumed shards were re-run with the same seeds
    run = Running(gateway_settings(tmp_path, model_address, dataset_db_url=f"sqlite:///{tmp_path}/other.db"))
    try:
        j = run.datasets.CreateDatasetJob(
            dataset_pb2.CreateDatasetJobRequest(
                spec=spec(f"file://{tmp_path}/straight", count=24, images_per_shard=2)
            ),
            timeout=T,
        ).job
        assert wait_final(run.datasets, j.job_id).state == dataset_pb2.DATASET_JOB_STATE_SUCCEEDED
    finally:
        run.close()
    assert hashes(tmp_path / "straight") == hashes(out)


# --- the Kubernetes shard worker ----------------------------------------------------------------------
def test_shard_worker_with_job_completion_index_writes_exactly_its_shards(
    tmp_path: Path, model_address: str
) -> None:
    s = JobSpec(
        f"file://{tmp_path}/k8s",
        "imagefolder",
        10,
        AngleSpec("uniform", 85, 115),
        seed=3,
        sampler="lcm",
        images_per_shard=2,
    )
    env = {
        **os.environ,
        "JOB_COMPLETION_INDEX": "1",
        "HIPGEN_SHARDS_PER_POD": "2",
        "HIPGEN_JOB_SPEC": s.to_json(),
        "HIPGEN_GENERATE_ADDRESS": model_address,
        "HIPGEN_METRICS_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.gateway.worker"],
        cwd=REPO,
        env=env,
        timeout=T,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "k8s"
    assert sorted(p.name for p in (out / "_shards").iterdir()) == ["000002.json", "000003.json"]
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:06d}.png" for i in range(4, 8)]
    rec = json.loads((out / "_shards" / "000002.json").read_text())
    assert [e["path"] for e in rec["entries"]] == ["000004.png", "000005.png"]
    # run again: the recorded shards are skipped, nothing is rewritten
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    again = subprocess.run(
        [sys.executable, "-m", "services.gateway.worker"],
        cwd=REPO,
        env=env,
        timeout=T,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == mtimes
    bad = subprocess.run(
        [sys.executable, "-m", "services.gateway.worker"],
        cwd=REPO,
        env={**env, "HIPGEN_JOB_SPEC": "{not json"},
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2  # a bad environment is not retried by Kubernetes as a transient failure


def test_indexed_job_validates_against_the_kubernetes_schema() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    s = JobSpec(
        "s3://bucket/ds", "webdataset", 1000, AngleSpec("uniform", 80, 120), seed=1, images_per_shard=32
    )
    job = build_indexed_job(
        "0123456789abcdef0123456789abcdef",
        s,
        KubeOptions("hipgen", "hipgen/worker:1", 8, 4, "generate:50053"),
    )
    obj = job_manifest(job)
    kv.validate(obj, "1.33.0", strict=True)  # raises ValidationError on any schema error
    spec_ = obj["spec"]
    assert spec_["completionMode"] == "Indexed" and spec_["completions"] == 8 and spec_["parallelism"] == 8
    container = spec_["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert JobSpec.from_json(env["HIPGEN_JOB_SPEC"]) == s and env["HIPGEN_SHARDS_PER_POD"] == "4"
    assert (
        container["securityContext"]["runAsNonRoot"]
        and container["securityContext"]["readOnlyRootFilesystem"]
    )
    assert len(obj["metadata"]["name"]) <= 63
    broken = json.loads(json.dumps(obj))
    broken["spec"]["completionMode"] = 7
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, "1.33.0", strict=True)


def test_job_status_reads_completion_and_failure() -> None:
    from kubernetes import client as k

    done = k.V1Job(
        status=k.V1JobStatus(succeeded=8, conditions=[k.V1JobCondition(type="Complete", status="True")])
    )
    assert job_status(done).complete and job_status(done).succeeded == 8
    failed = k.V1Job(
        status=k.V1JobStatus(
            failed=3,
            conditions=[
                k.V1JobCondition(
                    type="Failed", status="True", reason="BackoffLimitExceeded", message="index 2"
                )
            ],
        )
    )
    st = job_status(failed)
    assert not st.complete and st.failed_reason == "BackoffLimitExceeded: index 2"
    assert not job_status(k.V1Job(status=None)).complete


# --- S3 ---------------------------------------------------------------------------------------------------
def test_dataset_job_writes_to_s3_on_a_local_s3_server(
    tmp_path: Path, model_address: str, s3_fs: Any
) -> None:
    fs = s3_fs
    fs.mkdir("hipgen-out")
    run = Running(gateway_settings(tmp_path, model_address))
    try:
        job = run.datasets.CreateDatasetJob(
            dataset_pb2.CreateDatasetJobRequest(
                spec=spec(
                    "s3://hipgen-out/sets/a",
                    count=5,
                    images_per_shard=2,
                    format=dataset_pb2.DATASET_FORMAT_WEBDATASET,
                )
            ),
            timeout=T,
        ).job
        final = wait_final(run.datasets, job.job_id)
        assert final.state == dataset_pb2.DATASET_JOB_STATE_SUCCEEDED, final.error
        assert final.manifest_uri == "s3://hipgen-out/sets/a/manifest.json"
        with pytest.raises(grpc.RpcError) as e:  # a bucket that does not exist is named at once
            run.datasets.CreateDatasetJob(
                dataset_pb2.CreateDatasetJobRequest(spec=spec("s3://no-such-bucket/x")), timeout=T
            )
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        run.close()
    local = tmp_path / "from-s3"
    fs.get("hipgen-out/sets/a/", str(local), recursive=True)
    report = verify_manifest(local)
    assert report.ok, report.problems
    assert sum(read_manifest(local).split_counts.values()) == 5
    assert not [p for p in fs.find("hipgen-out/sets/a") if "/_shards/" in p]


# --- scoring against a reference --------------------------------------------------------------------------
def test_a_job_with_a_reference_set_is_scored_and_the_report_joins_the_manifest(
    tmp_path: Path, model_address: str, score_folders: dict[str, Path]
) -> None:
    ref = tmp_path / "reference"
    shutil.copytree(score_folders["real"], ref)
    run = Running(gateway_settings(tmp_path, model_address))
    try:
        out = tmp_path / "scored"
        job = run.datasets.CreateDatasetJob(
            dataset_pb2.CreateDatasetJobRequest(
                spec=spec(f"file://{out}", count=8, reference_uri=f"file://{ref}")
            ),
            timeout=T,
        ).job
        final = wait_final(run.datasets, job.job_id, timeout=300)
    finally:
        run.close()
    assert final.state == dataset_pb2.DATASET_JOB_STATE_SUCCEEDED, final.error
    assert final.score_report_uri == f"file://{out}/score/report.json"
    report = json.loads((out / "score" / "report.json").read_text())
    assert "error" not in report, report
    assert report["candidate_count"] == 8
    assert verify_manifest(out).ok  # the report is listed with its sha256


# --- PostgreSQL -------------------------------------------------------------------------------------
def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for cand in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(cand)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1 in a temp folder (Debian's postgresql binaries), as the
    ``postgres`` user when the tests run as root (the server refuses to run as root)."""
    pytest.importorskip("psycopg")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    # not under pytest's temp folder: that one is private to root, and the server runs as postgres
    base = Path(tempfile.mkdtemp(prefix="hipgen-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        if not runuser:
            pytest.skip("running as root without runuser to drop to the 'postgres' user")
        for p in (base, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        prefix = [runuser, "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "hipgen"], check=True, capture_output=True
    )
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", opts, "-w", "-t", "60", "-l", str(base / "log"), "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://hipgen@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_job_store_on_postgresql(postgres_url: str) -> None:
    store = JobStore(postgres_url)
    try:
        a, created = store.create('{"x": 1}', request_id="key-1", owner="lab", images_total=4, shards_total=2)
        assert created
        again, created = store.create(
            '{"x": 1}', request_id="key-1", owner="lab", images_total=4, shards_total=2
        )
        assert not created and again.job_id == a.job_id
        b, _ = store.create('{"x": 2}', request_id=None, owner="lab", images_total=1, shards_total=1)
        assert store.update(a.job_id, only_if_state=("RUNNING",), state="CANCELLED") is None  # guarded
        moved = store.update(a.job_id, only_if_state=("QUEUED",), state="RUNNING", images_done=2)
        assert moved is not None and moved.state == "RUNNING" and moved.version == a.version + 1
        page, token = store.page(1)
        assert [r.job_id for r in page] == [b.job_id] and token
        page2, token2 = store.page(1, token)
        assert [r.job_id for r in page2] == [a.job_id] and not token2
        assert store.count(("RUNNING",)) == 1
    finally:
        store.close()


def test_gateway_runs_a_job_with_its_state_in_postgresql(
    tmp_path: Path, model_address: str, postgres_url: str
) -> None:
    run = Running(gateway_settings(tmp_path, model_address, dataset_db_url=postgres_url))
    try:
        out = tmp_path / "pg-job"
        job = run.datasets.CreateDatasetJob(
            dataset_pb2.CreateDatasetJobRequest(spec=spec(f"file://{out}", count=4)), timeout=T
        ).job
        assert wait_final(run.datasets, job.job_id).state == dataset_pb2.DATASET_JOB_STATE_SUCCEEDED
    finally:
        run.close()
    assert verify_manifest(out).ok


def test_a_gateway_killed_after_the_manifest_does_not_redo_the_job(
    tmp_path: Path, model_address: str
) -> None:
    """The window between writing the manifest and recording SUCCEEDED: a restart finishes the job from
    the manifest (no image is generated again) instead of running every shard anew."""
    db = f"sqlite:///{tmp_path}/jobs.db"
    run = Running(gateway_settings(tmp_path, model_address, dataset_db_url=db))
    out = tmp_path / "done"
    try:
        job = run.datasets.CreateDatasetJob(
            dataset_pb2.CreateDatasetJobRequest(spec=spec(f"file://{out}", count=4)), timeout=T
        ).job
        assert wait_final(run.datasets, job.job_id).state == dataset_pb2.DATASET_JOB_STATE_SUCCEEDED
    finally:
        run.close()
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    store = JobStore(db)
    store.update(job.job_id, state="RUNNING", end_time=None)  # as if killed before recording SUCCEEDED
    store.close()
    run = Running(gateway_settings(tmp_path, model_address, dataset_db_url=db))
    try:
        final = wait_final(run.datasets, job.job_id)
    finally:
        run.close()
    assert final.state == dataset_pb2.DATASET_JOB_STATE_SUCCEEDED and final.progress.images_done == 4
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == mtimes
    assert verify_manifest(out).ok


def test_webdataset_with_a_test_split_logs_each_file_with_its_own_request(
    tmp_path: Path, model_address: str
) -> None:
    run = Running(gateway_settings(tmp_path, model_address))
    out = tmp_path / "wds-split"
    try:
        job = run.datasets.CreateDatasetJob(
            dataset_pb2.CreateDatasetJobRequest(
                spec=spec(
                    f"file://{out}",
                    count=8,
                    images_per_shard=8,
                    test_fraction=0.5,
                    format=dataset_pb2.DATASET_FORMAT_WEBDATASET,
                )
            ),
            timeout=T,
        ).job
        assert wait_final(run.datasets, job.job_id).state == dataset_pb2.DATASET_JOB_STATE_SUCCEEDED
    finally:
        run.close()
    manifest = read_manifest(out)
    assert set(manifest.split_counts) == {"train", "test"}  # two tars: samples grouped by split
    plan = JobSpec.from_json(json.dumps(manifest.provenance["spec"])).shard_plan(0)
    logged = [json.loads(line) for line in (out / "generation.jsonl").read_text().splitlines()]
    assert [r["file_name"] for r in logged] == [f"{i:06d}.png" for i in range(8)]
    for row, want in zip(logged, plan.angles.tolist(), strict=True):
        assert (row["requested_na_left"], row["requested_na_right"]) == pytest.approx(tuple(want))


# --- transient storage errors (a full disk, S3 answering 5xx) ----------------------------------------------
def test_a_shard_is_retried_on_a_transient_storage_error_but_not_on_a_permanent_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ENOSPC / EREMOTEIO (S3 5xx after botocore's retries) are retried with the shard's backoff like
    UNAVAILABLE; a forbidden or missing destination is not; a cancel between attempts gives up."""
    import errno

    from hipgen.dataset.destination import DestinationError
    from services.gateway import shard as shard_mod

    spec_ = JobSpec("file:///tmp/x", "imagefolder", 4, AngleSpec("uniform", 80, 120), images_per_shard=2)
    failures: list[BaseException] = []
    calls: list[int] = []

    def fake_run_shard(*args: Any, **kwargs: Any) -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "record"

    monkeypatch.setattr(shard_mod, "run_shard", fake_run_shard)
    waits: list[float] = []

    def run(**kw: Any) -> Any:
        calls.clear()
        waits.clear()
        args = {"retries": 3, "base_delay_s": 0.5, "wait": lambda d: waits.append(d) or False, **kw}
        return shard_mod.run_shard_retrying(spec_, 0, lambda: None, None, **args)  # type: ignore[arg-type]

    failures[:] = [OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EREMOTEIO, "500")]
    assert run() == "record" and len(calls) == 3 and waits == [0.5, 1.0]
    for permanent in (PermissionError(errno.EACCES, "denied"), DestinationError("no bucket")):
        failures[:] = [permanent]
        with pytest.raises(OSError):
            run()
        assert len(calls) == 1 and waits == []
    failures[:] = [OSError(errno.ENOSPC, "full")] * 4
    with pytest.raises(OSError, match="full"):  # the last failure, after 3 retries
        run()
    assert len(calls) == 4 and waits == [0.5, 1.0, 2.0]
    failures[:] = [OSError(errno.ENOSPC, "full")]
    assert run(cancelled=lambda: bool(calls)) is None and len(calls) == 1  # cancelled: no second try


@contextmanager
def running_job(tmp_path: Path, model_address: str, count: int = 4) -> Iterator[tuple[JobStore, str, Path]]:
    """One job (``count`` images, 2 per shard) run by a JobRunner with a fast backoff (2 retries) on the
    test's model server; yields its store, id and output folder."""
    import functools

    from hipgen.api.v1 import generate_pb2_grpc
    from services.gateway.jobs import JobRunner, RunnerConfig

    store = JobStore(f"sqlite:///{tmp_path}/jobs.db")
    channel = grpc.insecure_channel(model_address)
    stub = generate_pb2_grpc.GenerateServiceStub(channel)
    runner = JobRunner(
        store,
        RunnerConfig(shard_workers=1, shard_retries=2, retry_base_s=0.01),
        generate=lambda: functools.partial(stub.Generate, timeout=T),
    )
    out = tmp_path / "out"
    s = JobSpec(
        out.as_uri(),
        "imagefolder",
        count,
        AngleSpec("uniform", 80, 115),
        seed=3,
        sampler="lcm",
        images_per_shard=2,
    )
    row, _ = store.create(
        s.to_json(), request_id=None, owner="", images_total=count, shards_total=s.shard_count
    )
    try:
        runner.start()
        runner.submit(row.job_id)
        yield store, row.job_id, out
    finally:
        runner.stop()
        channel.close()
        store.close()


def _final(store: JobStore, job_id: str) -> Any:
    deadline = time.monotonic() + T
    while time.monotonic() < deadline:
        row = store.get(job_id)
        if row is not None and row.state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return row
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {store.get(job_id)}")


def test_transient_storage_errors_anywhere_in_a_job_are_retried_and_the_job_succeeds(
    tmp_path: Path, model_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard write (S3 500), the shard-record scan at the start (S3 500) and the manifest (a full disk)
    each fail once: the job still ends SUCCEEDED with exactly its images (it used to fail — the scan and
    the manifest even as INTERNAL "internal error")."""
    import errno

    from hipgen.dataset import shards as shards_mod
    from services.gateway import jobs as jobs_mod
    from services.gateway import shard as shard_mod

    def failing_once(fn: Any, err: OSError) -> Any:
        state = {"failed": False}

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not state["failed"]:
                state["failed"] = True
                raise err
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        shard_mod, "write_shard", failing_once(shards_mod.write_shard, OSError(errno.EREMOTEIO, "500"))
    )
    monkeypatch.setattr(
        jobs_mod,
        "read_shard_record",
        failing_once(shards_mod.read_shard_record, OSError(errno.EREMOTEIO, "500")),
    )
    monkeypatch.setattr(
        jobs_mod,
        "finalize",
        failing_once(shards_mod.finalize, OSError(errno.ENOSPC, "No space left on device")),
    )
    with running_job(tmp_path, model_address) as (store, job_id, out):
        row = _final(store, job_id)
    assert row.state == "SUCCEEDED", row.error_message
    assert verify_manifest(out).ok and len([e for e in read_manifest(out).files if e.record]) == 4
    assert not [p for p in out.rglob(".*") if p.is_file()]


def test_a_destination_that_stays_broken_fails_the_job_unavailable_naming_the_cause(
    tmp_path: Path, model_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest cannot be written however often it is tried: FAILED with UNAVAILABLE and the
    destination's error (it used to be INTERNAL "internal error (the gateway log has the details)")."""
    import errno

    from services.gateway import jobs as jobs_mod

    tries: list[int] = []

    def broken_finalize(*args: Any, **kwargs: Any) -> Any:
        tries.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jobs_mod, "finalize", broken_finalize)
    with running_job(tmp_path, model_address) as (store, job_id, out):
        row = _final(store, job_id)
    assert row.state == "FAILED" and row.error_code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "No space left on device" in row.error_message and out.as_uri() in row.error_message
    assert len(tries) == 3  # 1 + shard_retries
    assert len(list((out / "_shards").glob("0*.json"))) == 2  # the written shards are kept
