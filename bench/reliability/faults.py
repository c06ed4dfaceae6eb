"""Fault injection against real hipgen processes on 127.0.0.1 (issue 10, part 3).

One model server (AngleService, GenerateService), one gateway in front of it, and moto's S3 behind a
fault-injecting front (:mod:`bench.reliability.s3_faults`); then, one function per scenario:

1. ``model``: the model server SIGKILLed during a dataset job, restarted on the same port — the shards
   in flight fail UNAVAILABLE and are retried (``dataset_shard_retries``); the job succeeds;
2. ``gateway``: the gateway SIGKILLed during a dataset job, restarted on the same database — the job
   resumes from its shard records;
3. ``triton``: the model server on ``HIPGEN_BACKEND=triton`` against a real CPU tritonserver, Triton
   SIGKILLed during a job and restarted on the same ports (skipped, saying why, without a tritonserver);
4. ``stream``: a client streaming Generate (LCM) through the gateway while the model server, then the
   gateway, is SIGKILLed: a clear UNAVAILABLE well inside the deadline, and after the restart the same
   request (same seed) gives byte-identical images;
5. ``disk``: the output disk full (a small tmpfs filled to the last page where this process may mount
   one, else ENOSPC injected into the gateway's fsync by :mod:`bench.reliability.enospc_gateway`):
   shorter than the retry window the job goes on; longer (full run) it fails with a clear error; no
   temp files either way;
6. ``s3``: S3 answering ``500 InternalError`` — every 3rd request throughout, plus a total outage for a
   few seconds (and, in the full run, one longer than the retry window);
7. ``slow``: a model server whose inference is slowed (:mod:`bench.reliability.slow_server`):
   PredictAngle with a 1 s deadline through the gateway ends DEADLINE_EXCEEDED on time, the deadline
   reaches the model server, the server stays healthy, and a dataset job still completes (its
   Generate calls have the gateway's shard deadline, ``GENERATE_TIMEOUT_S``).

Every dataset job's result is checked the same way (:func:`manifest_check`): exactly ``count`` labelled
images, all distinct, every sha256 matching, no file the manifest does not list, no temp file.

    python -m bench.reliability.faults --out out/reliability [--quick] [--only model disk ...]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.common import REPO, Proc, markdown_table, start, write_results
from bench.reliability import Check, Section
from hipgen.api.v1 import (
    angle_pb2,
    angle_pb2_grpc,
    common_pb2,
    dataset_pb2,
    dataset_pb2_grpc,
    generate_pb2,
    generate_pb2_grpc,
)
from hipgen.data.manifest import MANIFEST_NAME, read_manifest, verify_manifest

MODEL_READY, GATEWAY_READY = "server listening", "gateway listening"
S = dataset_pb2.DatasetJobState
FINAL = (S.DATASET_JOB_STATE_SUCCEEDED, S.DATASET_JOB_STATE_FAILED, S.DATASET_JOB_STATE_CANCELLED)
JOB_TIMEOUT_S = 300.0  # the most any one job may take here (bounded loops everywhere)
SCENARIOS = ("model", "gateway", "stream", "disk", "s3", "slow", "triton")
QUICK = ("model", "disk", "s3", "slow")


# --- checking a finished data set ------------------------------------------------------------------------
def manifest_check(out: Path, count: int) -> dict[str, Any]:
    """What a dataset job left in ``out``: labelled images in the manifest (and distinct), whether every
    sha256 matches and every file is listed (:func:`hipgen.data.manifest.verify_manifest`), temp files
    (dot files) left behind. Without a manifest: zeros and the reason."""
    temps = (
        sorted(p.relative_to(out).as_posix() for p in out.rglob(".*") if p.is_file()) if out.is_dir() else []
    )
    if not (out / MANIFEST_NAME).is_file():
        return {
            "manifest_images": 0,
            "distinct": 0,
            "sha256_ok": False,
            "files_checked": 0,
            "temp_files": len(temps),
            "expected": count,
            "problems": [f"no {MANIFEST_NAME}"],
        }
    report = verify_manifest(out)
    images = [
        r.file_name for e in read_manifest(out).files for r in (*e.samples, *([e.record] if e.record else []))
    ]
    return {
        "manifest_images": len(images),
        "distinct": len(set(images)),
        "sha256_ok": report.ok,
        "files_checked": report.checked,
        "temp_files": len(temps),
        "expected": count,
        "problems": [f"{p}: {why}" for p, why in report.problems[:5]],
    }


def manifest_ok(m: dict[str, Any]) -> bool:
    return m["manifest_images"] == m["distinct"] == m["expected"] and m["sha256_ok"] and m["temp_files"] == 0


def manifest_cell(m: dict[str, Any]) -> str:
    if not m:
        return "–"
    return (
        f"{m['manifest_images']}/{m['expected']} images, {m['distinct']} distinct, "
        f"sha256 {'ok' if m['sha256_ok'] else 'BAD'}, {m['temp_files']} temp"
    )


# --- one scenario's record --------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One row of the table and its checks."""

    key: str
    scenario: str
    injected: str = ""
    client_saw: str = ""
    recovered_s: float | None = None
    final_state: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""
    seconds: float = 0.0

    def check(self, name: str, passed: object, detail: object = "") -> bool:
        self.checks.append(Check(f"{self.key}: {name}", bool(passed), str(detail)[:600]))
        return bool(passed)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def row(self) -> list[Any]:
        recovered = "–" if self.recovered_s is None else f"{self.recovered_s:.1f} s"
        verdict = f"skipped: {self.skipped}" if self.skipped else ("yes" if self.passed else "NO")
        return [
            self.scenario,
            self.injected,
            self.client_saw,
            recovered,
            self.final_state,
            manifest_cell(self.manifest),
            verdict,
        ]


def rpc_error(e: grpc.RpcError) -> str:
    """``CODE: details`` of a failed call (details cut to one line)."""
    details = (e.details() or "").splitlines()[0] if e.details() else ""
    return f"{e.code().name}: {details[:160]}"


def state_name(state: int) -> str:
    return S.Name(state).removeprefix("DATASET_JOB_STATE_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the processes ----------------------------------------------------------------------------------------
class Cluster:
    """The model server (replaceable on its port: normal, slowed, on Triton), the gateway, moto's S3."""

    def __init__(self, work: Path, s3: Any, *, shard_workers: int = 2) -> None:
        self.work, self.s3 = work, s3
        self.model: Proc | None = None
        self.model_kind = ""
        self.model_port = 0
        self.gateway: Proc | None = None
        self.metrics_port = free_port()
        self.shard_workers = shard_workers
        self.base = {
            "HIPGEN_MODEL_REPOSITORY": str(REPO / "model_repository"),
            "HIPGEN_GRACE_PERIOD_S": "2",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        }

    @property
    def model_address(self) -> str:
        return f"127.0.0.1:{self.model_port}"

    def use_model(
        self, kind: str = "normal", env: dict[str, str] | None = None, services: str = "angle,generate"
    ) -> Proc:
        """The model server of ``kind`` (started, or replacing the current one on the same port)."""
        if self.model is not None and self.model_kind == kind and self.model.popen.poll() is None:
            return self.model
        if self.model is not None:
            self.model.stop()
        module = "bench.reliability.slow_server" if kind == "slow" else "services.server"
        self.model = start(
            f"model server ({kind})",
            [module, "--services", services],
            {**self.base, **(env or {})},
            MODEL_READY,
            port=self.model_port,
        )
        self.model_port, self.model_kind = self.model.port, kind
        if self.gateway is not None:
            self.wait_upstream()
        return self.model

    def wait_upstream(self, timeout_s: float = 60.0) -> None:
        """Until the gateway reaches the model server (a replaced server: the gateway's channel may be in
        reconnect backoff): an empty PredictAngle through it answers anything but UNAVAILABLE."""
        assert self.gateway is not None
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.gateway.address) as ch:
            stub = angle_pb2_grpc.AngleServiceStub(ch)
            while time.monotonic() < deadline:
                try:
                    stub.PredictAngle(angle_pb2.PredictAngleRequest(), timeout=5)
                    return
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.UNAVAILABLE:
                        return
                time.sleep(0.2)

    def gateway_env(self) -> dict[str, str]:
        addr = self.model_address
        return {
            **self.base,
            **(self.s3.env() if self.s3 is not None else {}),
            "HIPGEN_ANGLE_ADDRESS": addr,
            "HIPGEN_GENERATE_ADDRESS": addr,
            "HIPGEN_SCORE_ADDRESS": addr,
            "HIPGEN_DATASET_DB_URL": f"sqlite:///{self.work}/jobs.db",
            "HIPGEN_DATASET_OUTPUT_ROOT": str(self.work),
            "HIPGEN_DATASET_SHARD_WORKERS": str(self.shard_workers),
            "HIPGEN_METRICS_PORT": str(self.metrics_port),
        }

    def start_gateway(self, module: str = "services.gateway", env: dict[str, str] | None = None) -> Proc:
        if self.gateway is not None:
            self.gateway.stop()
        self.gateway = start(
            "gateway", [module], {**self.gateway_env(), **(env or {})}, GATEWAY_READY, port=0
        )
        return self.gateway

    def shard_retries(self) -> dict[str, int]:
        """The gateway's ``hipgen_dataset_shard_retries`` by code since it started."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line.startswith("hipgen_dataset_shard_retries_total{"):
                code = line.split('code="', 1)[1].split('"', 1)[0]
                out[code] = int(float(line.rsplit(" ", 1)[1]))
        return out

    def close(self) -> None:
        for p in (self.gateway, self.model):
            if p is not None:
                with contextlib.suppress(Exception):
                    p.stop()


# --- dataset jobs -----------------------------------------------------------------------------------------
def job_spec(uri: str, count: int, per_shard: int, seed: int) -> dataset_pb2.DatasetJobSpec:
    return dataset_pb2.DatasetJobSpec(
        output_uri=uri,
        format=dataset_pb2.DATASET_FORMAT_IMAGEFOLDER,
        count=count,
        angles=dataset_pb2.AngleDistribution(uniform=dataset_pb2.UniformAngles(low_deg=80, high_deg=115)),
        seed=seed,
        sampler=generate_pb2.SAMPLER_LCM,
        steps=4,
        images_per_shard=per_shard,
    )


def create_job(address: str, spec: dataset_pb2.DatasetJobSpec) -> dataset_pb2.DatasetJob:
    with grpc.insecure_channel(address) as ch:
        return (
            dataset_pb2_grpc.DatasetServiceStub(ch)
            .CreateDatasetJob(dataset_pb2.CreateDatasetJobRequest(spec=spec), timeout=60)
            .job
        )


@dataclass
class Followed:
    """What polling a job saw: the last job, ``(monotonic time, state, shards_done)`` per poll, and the
    errors of polls that failed (the gateway down)."""

    job: dataset_pb2.DatasetJob | None = None
    timeline: list[tuple[float, str, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        return state_name(self.job.state) if self.job is not None else "unknown"

    def progress_after(self, t: float, shards: int) -> float | None:
        """Seconds from ``t`` to the first poll that saw more than ``shards`` recorded (or SUCCEEDED),
        None when none did."""
        for when, state, done in self.timeline:
            if when >= t and (done > shards or state == "SUCCEEDED"):
                return when - t
        return None


def follow(
    address: str,
    job_id: str,
    *,
    timeout_s: float = JOB_TIMEOUT_S,
    until: Callable[[dataset_pb2.DatasetJob], bool] = lambda job: job.state in FINAL,
    every_s: float = 0.1,
    into: Followed | None = None,
) -> Followed:
    """Poll GetDatasetJob until ``until(job)`` or ``timeout_s``; failed polls are recorded, not fatal."""
    seen = into or Followed()
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as ch:
        stub = dataset_pb2_grpc.DatasetServiceStub(ch)
        while time.monotonic() < deadline:
            try:
                job = stub.GetDatasetJob(dataset_pb2.GetDatasetJobRequest(job_id=job_id), timeout=5).job
            except grpc.RpcError as e:
                seen.errors.append(rpc_error(e))
                time.sleep(every_s)
                continue
            seen.job = job
            seen.timeline.append((time.monotonic(), state_name(job.state), job.progress.shards_done))
            if until(job):
                break
            time.sleep(every_s)
    return seen


def shards_at_least(n: int) -> Callable[[dataset_pb2.DatasetJob], bool]:
    return lambda job: job.progress.shards_done >= n or job.state in FINAL


def finish(o: Outcome, seen: Followed, out: Path, count: int, *, expect: str = "SUCCEEDED") -> None:
    """Final state and manifest of a job into ``o``, with their checks."""
    o.final_state = seen.state
    if seen.job is not None and seen.job.state == S.DATASET_JOB_STATE_FAILED:
        o.final_state += f" ({code_name(seen.job.error.code)}: {seen.job.error.message[:120]})"
    o.check(f"job ends {expect}", seen.state == expect, o.final_state)
    if expect == "SUCCEEDED" == seen.state:
        o.manifest = manifest_check(out, count)
        o.check(
            "manifest: exactly count distinct images, sha256 ok, no temp files",
            manifest_ok(o.manifest),
            o.manifest,
        )


def code_name(number: int) -> str:
    """The name of a numeric gRPC status code (``14`` → ``UNAVAILABLE``)."""
    return next((c.name for c in grpc.StatusCode if c.value[0] == number), f"code {number}")


def probe_generate(address: str, timeout_s: float = 10.0) -> str:
    """What a client calling GenerateService through the gateway sees now: ``OK`` or ``CODE: details``."""
    req = generate_pb2.GenerateRequest(
        conditions=[common_pb2.NaCondition(na_left_deg=100, na_right_deg=95)],
        seed=1,
        sampler=generate_pb2.SAMPLER_LCM,
        steps=1,
    )
    with grpc.insecure_channel(address) as ch:
        try:
            for _ in generate_pb2_grpc.GenerateServiceStub(ch).Generate(req, timeout=timeout_s):
                pass
        except grpc.RpcError as e:
            return rpc_error(e)
    return "OK"


# --- 1: the model server killed during a job ----------------------------------------------------------
def scenario_model_kill(c: Cluster, count: int, per_shard: int) -> Outcome:
    o = Outcome("model", "kill -9 model server during a dataset job")
    model = c.use_model("normal")
    assert c.gateway is not None
    before = c.shard_retries()
    out = c.work / "model-kill"
    job = create_job(c.gateway.address, job_spec(out.as_uri(), count, per_shard, seed=101))
    seen = follow(c.gateway.address, job.job_id, until=shards_at_least(1))
    at_kill = seen.timeline[-1][2] if seen.timeline else 0
    o.check("job still running when the fault came", seen.state == "RUNNING", seen.state)
    model.kill9()
    t_kill = time.monotonic()
    saw = probe_generate(c.gateway.address)
    c.model = model.restart()
    t_up = time.monotonic()
    o.injected = (
        f"SIGKILL of the model server at {at_kill}/{job.progress.shards_total} shards, "
        f"restarted on its port after {t_up - t_kill:.1f} s"
    )
    seen = follow(c.gateway.address, job.job_id, into=seen)
    retries = {k: v - before.get(k, 0) for k, v in c.shard_retries().items() if v - before.get(k, 0)}
    o.client_saw = f"job: RUNNING throughout; Generate via gateway: {saw}; shard retries {retries or 0}"
    o.recovered_s = seen.progress_after(t_up, at_kill)
    o.check("a call during the outage gets UNAVAILABLE with a message", saw.startswith("UNAVAILABLE: "), saw)
    o.check(
        "the job never reported a failure meanwhile",
        "FAILED" not in {s for _, s, _ in seen.timeline[:-1]},
        "",
    )
    o.check("the shards in flight were retried (UNAVAILABLE)", retries.get("UNAVAILABLE", 0) > 0, retries)
    finish(o, seen, out, count)
    o.details = {
        "job_id": job.job_id,
        "shards_at_kill": at_kill,
        "retries": retries,
        "restart_s": t_up - t_kill,
    }
    return o


# --- 2: the gateway killed during a job ---------------------------------------------------------------
def scenario_gateway_kill(c: Cluster, count: int, per_shard: int) -> Outcome:
    o = Outcome("gateway", "kill -9 gateway during a dataset job")
    c.use_model("normal")
    assert c.gateway is not None
    out = c.work / "gateway-kill"
    job = create_job(c.gateway.address, job_spec(out.as_uri(), count, per_shard, seed=202))
    seen = follow(c.gateway.address, job.job_id, until=shards_at_least(1))
    o.check("job still running when the fault came", seen.state == "RUNNING", seen.state)
    watch: dict[str, Any] = {}
    ch = grpc.insecure_channel(c.gateway.address)
    stream = dataset_pb2_grpc.DatasetServiceStub(ch).WatchDatasetJob(
        dataset_pb2.WatchDatasetJobRequest(job_id=job.job_id), timeout=120
    )
    next(stream)  # the Watch is open
    recorded = len(list((out / "_shards").glob("0*.json")))
    c.gateway.kill9()
    t_kill = time.monotonic()
    try:
        for _ in stream:
            pass
        watch["saw"] = "the stream ended without an error"
    except grpc.RpcError as e:
        watch["saw"], watch["after_s"] = rpc_error(e), time.monotonic() - t_kill
    ch.close()
    c.gateway = c.gateway.restart()
    t_up = time.monotonic()
    o.injected = f"SIGKILL of the gateway with {recorded}/{job.progress.shards_total} shards recorded"
    seen = follow(c.gateway.address, job.job_id)
    o.client_saw = f"open Watch: {watch['saw']} after {watch.get('after_s', float('nan')):.2f} s"
    o.recovered_s = seen.progress_after(t_up, recorded)
    o.check(
        "an open Watch ends UNAVAILABLE at once",
        watch["saw"].startswith("UNAVAILABLE") and watch.get("after_s", 99) < 5,
        watch,
    )
    finish(o, seen, out, count)
    o.details = {
        "job_id": job.job_id,
        "recorded_at_kill": recorded,
        "restart_s": t_up - t_kill,
        "watch": watch,
    }
    return o


# --- 3: Triton killed during a job ------------------------------------------------------------------------
TRITON_MODELS = ("angle_locator", "angle_keypoints", "generator_lcm")


class Triton:
    """A CPU tritonserver on fixed ports (restartable on the same ones), as
    :func:`hipgen.inference.tritonserver.running_tritonserver` runs it."""

    def __init__(self, repository: Path) -> None:
        from hipgen.inference.tritonserver import backend_directory, tritonserver_home

        self.home = tritonserver_home()
        self.repository = repository
        self.tmp = Path(tempfile.mkdtemp(prefix="hipgen-fault-triton-"))  # logs, backend links
        try:
            self.backends = backend_directory(self.home, self.tmp / "backends")
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.shm_prefix = ""
        self.starts = 0

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def ready(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self, timeout_s: float = 180.0) -> float:
        """Start and wait until ready; returns the seconds it took."""
        t0 = time.monotonic()
        self.starts += 1
        self.shm_prefix = f"hipgenfault{os.getpid()}_{self.starts}_"
        cmd = [
            str(self.home / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.backends}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in TRITON_MODELS],
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=5",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        env = {**os.environ, "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
        log = open(self.tmp / f"tritonserver-{self.starts}.log", "wb")  # noqa: SIM115 (the child holds it)
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.tmp / f"tritonserver-{self.starts}.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"tritonserver did not become ready:\n{tail}")
            time.sleep(0.2)
        return time.monotonic() - t0

    def kill9(self) -> None:
        """SIGKILL of the server and its python-backend stubs (its process group: a lost container)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._sweep_shm()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._sweep_shm()
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._sweep_shm()

    def _sweep_shm(self) -> None:
        for leftover in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def scenario_triton_kill(c: Cluster, count: int, per_shard: int) -> Outcome:
    o = Outcome("triton", "kill -9 Triton during a dataset job")
    from hipgen.inference.triton_repo import build_repository
    from hipgen.inference.tritonserver import TritonServerNotInstalledError

    assert c.gateway is not None
    served = c.work / "triton-repository"
    try:
        build_repository(REPO / "model_repository", served, "python", models=TRITON_MODELS)
        triton = Triton(served)
    except TritonServerNotInstalledError as e:
        o.skipped = f"no tritonserver ({e})"
        o.check("skipped: tritonserver is not installed", True, str(e))
        return o
    try:
        o.details["triton_start_s"] = triton.start()
        c.use_model("triton", {"HIPGEN_BACKEND": "triton", "HIPGEN_TRITON_URL": triton.url}, "angle,generate")
        out = c.work / "triton-kill"
        job = create_job(c.gateway.address, job_spec(out.as_uri(), count, per_shard, seed=303))
        seen = follow(c.gateway.address, job.job_id, until=shards_at_least(1))
        at_kill = seen.timeline[-1][2] if seen.timeline else 0
        o.check("job still running when the fault came", seen.state == "RUNNING", seen.state)
        before = c.shard_retries()
        triton.kill9()
        t_kill = time.monotonic()
        saw = probe_generate(c.gateway.address)
        restart_s = triton.start()
        t_up = time.monotonic()
        o.injected = (
            f"SIGKILL of tritonserver (and its stubs) at {at_kill}/{job.progress.shards_total} shards, "
            f"restarted on its ports after {t_up - t_kill:.1f} s"
        )
        seen = follow(c.gateway.address, job.job_id, into=seen)
        retries = {k: v - before.get(k, 0) for k, v in c.shard_retries().items() if v - before.get(k, 0)}
        o.client_saw = f"Generate via gateway while Triton was down: {saw}; shard retries {retries or 0}"
        o.recovered_s = seen.progress_after(t_up, at_kill)
        o.check(
            "a call while Triton is down gets UNAVAILABLE (retryable) with a message",
            saw.startswith("UNAVAILABLE: "),
            saw,
        )
        finish(o, seen, out, count)
        o.details.update({"job_id": job.job_id, "retries": retries, "triton_restart_s": restart_s})
    finally:
        if c.model is not None and c.model_kind == "triton":
            c.model.stop()
            c.model = None
        triton.stop()
        shutil.rmtree(triton.tmp, ignore_errors=True)
    return o


# --- 4: kills during a streaming Generate -------------------------------------------------------------
def stream_request(n: int) -> generate_pb2.GenerateRequest:
    return generate_pb2.GenerateRequest(
        conditions=[
            common_pb2.NaCondition(na_left_deg=85 + 3 * i, na_right_deg=110 - 2 * i) for i in range(n)
        ],
        seed=4242,
        sampler=generate_pb2.SAMPLER_LCM,
        steps=4,
    )


def image_hashes(events: list[generate_pb2.GenerateResponse]) -> list[str]:
    return [hashlib.sha256(ev.image.image.data).hexdigest() for ev in events if ev.HasField("image")]


def retry_until_ok(
    channel: grpc.Channel, req: generate_pb2.GenerateRequest, budget_s: float = 90.0
) -> tuple[list[str] | None, int, list[str]]:
    """A client's retry loop: the same request again on UNAVAILABLE, every 0.5 s, within ``budget_s``;
    returns (image hashes or None, attempts, errors seen)."""
    stub = generate_pb2_grpc.GenerateServiceStub(channel)
    deadline, attempts, errors = time.monotonic() + budget_s, 0, []
    while time.monotonic() < deadline:
        attempts += 1
        try:
            return image_hashes(list(stub.Generate(req, timeout=120))), attempts, errors
        except grpc.RpcError as e:
            errors.append(rpc_error(e))
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                return None, attempts, errors
            time.sleep(0.5)
    return None, attempts, errors


def scenario_stream_kill(c: Cluster, images: int) -> list[Outcome]:
    c.use_model("normal")
    assert c.gateway is not None
    req = stream_request(images)
    deadline_s = 60.0
    with grpc.insecure_channel(c.gateway.address) as ch:
        baseline = image_hashes(list(generate_pb2_grpc.GenerateServiceStub(ch).Generate(req, timeout=120)))
    outcomes = []
    for target in ("model", "gateway"):
        o = Outcome(
            f"stream-{target}",
            f"kill -9 {target if target == 'gateway' else 'model server'} during streaming Generate",
        )
        victim = c.use_model("normal") if target == "model" else c.gateway
        ch = grpc.insecure_channel(c.gateway.address)
        events, saw, after_s = 0, "", float("nan")
        t_kill = 0.0
        try:
            for _ev in generate_pb2_grpc.GenerateServiceStub(ch).Generate(req, timeout=deadline_s):
                events += 1
                if events == 1:  # the first progress event: generation is under way
                    victim.kill9()
                    t_kill = time.monotonic()
            saw = "the stream completed"
        except grpc.RpcError as e:
            saw, after_s = rpc_error(e), time.monotonic() - t_kill
        if target == "model":
            c.model = victim.restart()
        else:
            c.gateway = victim.restart()
        t_up = time.monotonic()
        hashes, attempts, errors = retry_until_ok(ch, req)  # the same channel: the client reconnects
        t_ok = time.monotonic()
        ch.close()
        o.injected = (
            f"SIGKILL after the stream's first event ({images} LCM-4 images, {deadline_s:g} s deadline)"
        )
        o.client_saw = f"{saw} after {after_s:.2f} s"
        o.recovered_s = t_ok - t_up if hashes is not None else None
        o.final_state = (
            f"retry OK after {attempts} attempt(s)"
            if hashes is not None
            else f"retries failed: {errors[-1:]}"
        )
        o.check(
            "the stream ends UNAVAILABLE with a message",
            saw.startswith("UNAVAILABLE: ") and len(saw) > 14,
            saw,
        )
        o.check(
            "no hang: the error came long before the deadline", after_s < deadline_s / 4, f"{after_s:.2f} s"
        )
        o.check("a retry of the same request succeeds after the restart", hashes is not None, errors[-3:])
        same = hashes == baseline
        o.check(
            "the retry's images are byte-identical to an undisturbed run (same seed)",
            same,
            f"{sum(a == b for a, b in zip(hashes or [], baseline, strict=False))}/{len(baseline)} equal",
        )
        o.manifest = {}
        o.details = {
            "events_before_error": events,
            "attempts": attempts,
            "errors": errors[:5],
            "identical": same,
        }
        outcomes.append(o)
    return outcomes


# --- 5: a full disk ----------------------------------------------------------------------------------------
class FullDisk:
    """A small filesystem at ``root`` to fill on demand: a tmpfs where ``mount`` is allowed (``kind``
    ``tmpfs``), else a flag file that :mod:`bench.reliability.enospc_gateway` turns into ENOSPC
    (``kind`` ``injected``)."""

    def __init__(self, root: Path, size_mb: int, *, allow_mount: bool = True) -> None:
        self.root = root
        self.flag = root.parent / f".{root.name}-enospc"
        root.mkdir(parents=True, exist_ok=True)
        self.kind, self.why = "injected", ""
        if allow_mount:
            try:
                r = subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(root)],
                    capture_output=True,
                    text=True,
                    timeout=20,
                )
                self.kind, self.why = ("tmpfs", "") if r.returncode == 0 else ("injected", r.stderr.strip())
            except (OSError, subprocess.SubprocessError) as e:
                self.why = str(e)
        else:
            self.why = "mounting disabled"

    def fill(self) -> None:
        if self.kind == "injected":
            self.flag.write_bytes(b"")
            return
        fd = os.open(self.root / "ballast", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for chunk in (1 << 20, 4096, 1):  # to the last page
                block = b"\0" * chunk
                with contextlib.suppress(OSError):
                    for _ in range(1 << 16):
                        os.write(fd, block)
        finally:
            os.close(fd)

    def is_full(self) -> bool:
        """Whether a one-byte write into the filesystem fails ENOSPC now (injected: the flag is set)."""
        if self.kind == "injected":
            return self.flag.exists()
        try:
            with open(self.root / ".probe", "wb") as f:
                f.write(b"x")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            return e.errno == errno.ENOSPC
        finally:
            with contextlib.suppress(OSError):
                (self.root / ".probe").unlink()
        return False

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / "ballast").unlink()
        with contextlib.suppress(FileNotFoundError):
            self.flag.unlink()

    def close(self) -> None:
        self.free()
        if self.kind == "tmpfs":
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True, timeout=20)


def _full_disk_job(
    c: Cluster,
    disk: FullDisk,
    name: str,
    count: int,
    per_shard: int,
    hold: Callable[[Followed, str], None],
    seed: int,
    *,
    after_shards: int = 0,
) -> tuple[Followed, Path, int, float, float, list[str]]:
    """A job on ``disk``; once ``after_shards`` shards are recorded (0: as soon as it is created, its
    destination claimed) the disk fills, ``hold`` runs, the disk is freed. Returns (followed, out,
    shards at the fault, fault start, fault end, job states seen while full)."""
    assert c.gateway is not None
    out = disk.root / name
    job = create_job(c.gateway.address, job_spec(out.as_uri(), count, per_shard, seed=seed))
    seen = follow(c.gateway.address, job.job_id, until=shards_at_least(after_shards))
    disk.fill()
    at_fault = seen.timeline[-1][2] if seen.timeline else 0
    t_full = time.monotonic()
    hold(seen, job.job_id)
    states = sorted({s for t, s, _ in seen.timeline if t >= t_full})
    disk.free()
    return seen, out, at_fault, t_full, time.monotonic(), states


def scenario_full_disk(
    c: Cluster, count: int, per_shard: int, *, long_outage: bool, allow_mount: bool = True
) -> list[Outcome]:
    disk = FullDisk(c.work / "disk", size_mb=64, allow_mount=allow_mount)
    outcomes = []
    try:
        c.use_model("normal")
        if disk.kind == "injected":  # this gateway replaced by one whose fsync fails while the flag exists
            c.start_gateway("bench.reliability.enospc_gateway", {"BENCH_FAULT_ENOSPC_FLAG": str(disk.flag)})
        how = (
            "tmpfs (64 MB) filled to the last page"
            if disk.kind == "tmpfs"
            else f"ENOSPC injected into the gateway's fsync (cannot mount: {disk.why[:80]})"
        )
        assert c.gateway is not None
        gateway = c.gateway.address
        o = Outcome("disk", "full disk during a dataset job, freed within the retry window")
        full_seen: list[bool] = []
        before = c.shard_retries()

        def hits() -> int:
            return c.shard_retries().get("ENOSPC", 0) - before.get("ENOSPC", 0)

        def until_hit(seen: Followed, job_id: str) -> None:
            """Full until the job's writes have failed on it (a shard retried on ENOSPC), then 1 s more."""
            full_seen.append(disk.is_full())
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and hits() == 0:
                follow(gateway, job_id, timeout_s=0.5, into=seen)
                if seen.job is not None and seen.job.state in FINAL:
                    return
            follow(gateway, job_id, timeout_s=1.0, into=seen)

        seen, out, at_fault, t_full, t_free, states = _full_disk_job(
            c, disk, "short", count, per_shard, until_hit, 501
        )
        seen = follow(gateway, seen.job.job_id if seen.job else "", into=seen)
        retries = {k: v - before.get(k, 0) for k, v in c.shard_retries().items() if v - before.get(k, 0)}
        o.injected = f"{how} from the job's start until a write had failed + 1 s ({t_free - t_full:.1f} s)"
        o.client_saw = f"job {'/'.join(states)} while full; shard retries {retries or 0}"
        o.recovered_s = seen.progress_after(t_free, at_fault)
        o.check(
            "the disk really was full (a 1-byte write failed ENOSPC)", all(full_seen) and full_seen, full_seen
        )
        o.check(
            "the full disk hit the job's writes (shards retried on ENOSPC)",
            retries.get("ENOSPC", 0) > 0,
            retries,
        )
        o.check("the job did not fail while the disk was full", "FAILED" not in states, states)
        finish(o, seen, out, count)
        o.details = {
            "disk": disk.kind,
            "why_injected": disk.why,
            "retries": retries,
            "job_id": seen.job.job_id if seen.job else "",
        }
        outcomes.append(o)

        if long_outage:
            o = Outcome("disk-long", "full disk for longer than the shard retry window")

            def until_failed(seen: Followed, job_id: str) -> None:
                follow(gateway, job_id, timeout_s=120, into=seen)

            seen, out, at_fault, t_full, t_free, states = _full_disk_job(
                c, disk, "long", count, per_shard, until_failed, 502, after_shards=1
            )
            o.injected = f"{how} until the job ended ({t_free - t_full:.1f} s)"
            err = seen.job.error if seen.job is not None else None
            o.client_saw = f"{code_name(err.code) if err else '?'}: {err.message[:140] if err else ''}"
            finish(o, seen, out, count, expect="FAILED")
            o.check(
                "the failure is UNAVAILABLE and names the full disk",
                err is not None
                and err.code == grpc.StatusCode.UNAVAILABLE.value[0]
                and "No space left" in err.message,
                o.client_saw,
            )
            temps = [p.name for p in out.rglob(".*") if p.is_file()]
            records = sorted(p.name for p in (out / "_shards").glob("0*.json"))
            o.manifest = {}
            o.check("no temp files left in the failed job's folder", not temps, temps[:5])
            o.check("the shards recorded before the disk filled are kept", len(records) >= at_fault, records)
            o.details = {
                "shard_records_kept": records,
                "temp_files": temps,
                "failed_after_s": t_free - t_full,
            }
            o.final_state += (
                f" after {t_free - t_full:.0f} s; {len(records)} shard records kept, but no RPC resumes a "
                "FAILED job"
            )
            outcomes.append(o)
    finally:
        if disk.kind == "injected":
            c.start_gateway()  # the plain one again
        disk.close()
    return outcomes


# --- 6: S3 answering 500 -----------------------------------------------------------------------------------
def s3_check(c: Cluster, prefix: str, count: int) -> dict[str, Any]:
    """Download ``bucket/prefix`` through the clean endpoint and check it like a local set; also list
    what S3 holds that a finished set must not (shard records, temp names)."""
    fs = c.s3.filesystem()
    local = Path(tempfile.mkdtemp(prefix="hipgen-fault-s3-"))
    try:
        keys = fs.find(prefix)
        fs.get(prefix + "/", str(local), recursive=True)
        m = manifest_check(local, count)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    stray = [k for k in keys if "/_shards/" in k or k.rsplit("/", 1)[-1].startswith(".")]
    m["stray_objects"] = len(stray)
    return m


def scenario_s3_errors(c: Cluster, count: int, per_shard: int, *, long_outage: bool) -> list[Outcome]:
    c.use_model("normal")
    assert c.gateway is not None and c.s3 is not None
    faults = c.s3.faults
    if not c.s3.filesystem().exists("hipgen-faults"):
        c.s3.create_bucket("hipgen-faults")
    outcomes = []

    o = Outcome("s3", "S3 500s during a dataset job to s3://")
    outage_s = 4.0
    before, injected0 = c.shard_retries(), faults.injected
    faults.fail_every = 3
    try:
        job = create_job(c.gateway.address, job_spec("s3://hipgen-faults/flaky", count, per_shard, seed=601))
        faults.outage = True  # at once: the outage surely meets the job's first writes
        in_outage = faults.injected
        seen = follow(c.gateway.address, job.job_id, until=lambda j: True)
        at_fault = seen.timeline[-1][2] if seen.timeline else 0
        t_out = time.monotonic()
        follow(c.gateway.address, job.job_id, timeout_s=outage_s, into=seen)
        faults.outage = False
        in_outage = faults.injected - in_outage
        t_back = time.monotonic()
        states = sorted({s for t, s, _ in seen.timeline if t_out <= t <= t_back})
        seen = follow(c.gateway.address, job.job_id, into=seen)
    finally:
        faults.fail_every, faults.outage = 0, False
    retries = {k: v - before.get(k, 0) for k, v in c.shard_retries().items() if v - before.get(k, 0)}
    o.injected = (
        f"500 InternalError on every 3rd request throughout, and on all for {t_back - t_out:.1f} s from "
        f"the job's start ({faults.injected - injected0} 500s in all)"
    )
    o.client_saw = (
        f"job {'/'.join(states)} during the outage; {in_outage} requests failed in it, absorbed by "
        f"{'botocore and shard retries ' + str(retries) if retries else 'botocore retries alone'}"
    )
    o.recovered_s = seen.progress_after(t_back, at_fault)
    o.check("the outage met the job's requests", in_outage > 0, f"{in_outage} requests failed 500")
    o.check("the job did not fail during the outage", "FAILED" not in states, states)
    o.final_state = seen.state
    o.check(
        "job ends SUCCEEDED",
        seen.state == "SUCCEEDED",
        seen.state + (f" {seen.job.error.message[:200]}" if seen.job else ""),
    )
    if seen.state == "SUCCEEDED":
        o.manifest = s3_check(c, "hipgen-faults/flaky", count)
        o.check(
            "manifest in S3: exactly count distinct images, sha256 ok, no shard records or temp objects",
            manifest_ok(o.manifest) and o.manifest["stray_objects"] == 0,
            o.manifest,
        )
    o.details = {
        "retries": retries,
        "injected_500s": faults.injected - injected0,
        "failed_in_outage": in_outage,
    }
    outcomes.append(o)

    if long_outage:
        o = Outcome("s3-long", "S3 down for longer than the shard retry window")
        job = create_job(c.gateway.address, job_spec("s3://hipgen-faults/down", count, per_shard, seed=602))
        seen = follow(c.gateway.address, job.job_id, until=shards_at_least(1))
        faults.outage = True  # after a shard: the records already written must survive the failure
        t_out = time.monotonic()
        try:
            probe_t0 = time.monotonic()
            try:  # what a client asking for a new s3:// job meanwhile sees
                create_job(c.gateway.address, job_spec("s3://hipgen-faults/probe", 2, 2, seed=1))
                probe = "accepted"
            except grpc.RpcError as e:
                probe = rpc_error(e)
            probe_s = time.monotonic() - probe_t0
            seen = follow(c.gateway.address, job.job_id, timeout_s=150, into=seen)
        finally:
            faults.outage = False
        o.injected = (
            f"500 InternalError on every request until the job ended ({time.monotonic() - t_out:.1f} s)"
        )
        err = seen.job.error if seen.job is not None else None
        o.client_saw = (
            f"job: {code_name(err.code) if err else '?'}: {err.message[:140] if err else ''}; "
            f"a new s3 job meanwhile: {probe} after {probe_s:.1f} s"
        )
        o.check(
            "a new s3 job refused meanwhile names S3's error (not a missing bucket)",
            probe != "accepted" and "does not exist" not in probe and ("nternal" in probe or "500" in probe),
            probe,
        )
        o.final_state = seen.state
        o.check("the job ends FAILED", seen.state == "FAILED", seen.state)
        o.check(
            "the failure is UNAVAILABLE and names S3's error",
            err is not None and err.code == grpc.StatusCode.UNAVAILABLE.value[0] and "s3://" in err.message,
            o.client_saw,
        )
        fs = c.s3.filesystem()
        stray = [k for k in fs.find("hipgen-faults/down") if k.rsplit("/", 1)[-1].startswith(".")]
        o.check("no temp objects in S3", not stray, stray[:5])
        outcomes.append(o)
    return outcomes


# --- 7: a slow backend and deadlines ------------------------------------------------------------------------
def phantom_png() -> bytes:
    from hipgen.data.images import encode_png
    from hipgen.phantom import PhantomSpec, render_phantom

    return encode_png(render_phantom(PhantomSpec(width=256, height=256), seed=3).pixels)


def scenario_slow_backend(c: Cluster, count: int, per_shard: int, *, with_job: bool) -> Outcome:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from services.gateway.server import GENERATE_TIMEOUT_S

    delay_s = 1.0
    o = Outcome("slow", f"slow backend ({delay_s:g} s per inference call), 1 s deadline")
    rpc_log = c.work / "slow-rpcs.jsonl"
    rpc_log.unlink(missing_ok=True)
    c.use_model(
        "slow",
        {"BENCH_FAULT_DELAY_S": str(delay_s), "BENCH_FAULT_RPC_LOG": str(rpc_log)},
        "angle,generate" if with_job else "angle",  # warm-ups are slowed too: start no more than needed
    )
    assert c.gateway is not None
    req = angle_pb2.PredictAngleRequest(
        image=common_pb2.Image(data=phantom_png(), encoding=common_pb2.IMAGE_ENCODING_PNG)
    )
    with grpc.insecure_channel(c.gateway.address) as ch:
        stub = angle_pb2_grpc.AngleServiceStub(ch)
        with contextlib.suppress(grpc.FutureTimeoutError):  # connected: not part of the measured call
            grpc.channel_ready_future(ch).result(timeout=10)
        logged_before = len(rpc_log.read_text().splitlines()) if rpc_log.is_file() else 0
        t0 = time.monotonic()
        try:
            stub.PredictAngle(req, timeout=1.0)
            saw = "OK"
        except grpc.RpcError as e:
            saw = rpc_error(e)
        took = time.monotonic() - t0
        t1 = time.monotonic()
        try:
            stub.PredictAngle(req, timeout=60)
            after = "OK"
        except grpc.RpcError as e:
            after = rpc_error(e)
        after_s = time.monotonic() - t1
    with grpc.insecure_channel(c.model_address) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    seen = [json.loads(line) for line in rpc_log.read_text().splitlines()][logged_before:]
    angle = [r for r in seen if r["method"].endswith("/PredictAngle")]
    # the 1 s call: the smallest deadline of the two (None — no deadline passed on — sorts last)
    first = min(angle, key=lambda r: 1e9 if r["remaining_s"] is None else r["remaining_s"], default={})
    o.injected = f"every backend infer call sleeps {delay_s:g} s (PredictAngle: ≥2 calls)"
    o.client_saw = f"{saw} after {took:.2f} s; model server saw a {first.get('remaining_s')} s deadline"
    o.check(
        "PredictAngle with a 1 s deadline ends DEADLINE_EXCEEDED", saw.startswith("DEADLINE_EXCEEDED"), saw
    )
    o.check("promptly: within 1.5 s", took < 1.5, f"{took:.2f} s")
    o.check(
        "the gateway passed the deadline on (the model server saw ≤ 1 s, give or take the header's rounding)",
        first.get("remaining_s") is not None and first["remaining_s"] <= 1.05,
        first,
    )
    o.check(
        "the model server stays SERVING",
        health.status == health_pb2.HealthCheckResponse.SERVING,
        health.status,
    )
    o.check("the next PredictAngle with room succeeds", after == "OK", f"{after} in {after_s:.1f} s")
    o.final_state = f"next PredictAngle {after} in {after_s:.1f} s"
    # the server does not stop inference at the deadline: it finishes the abandoned call's work
    o.details = {
        "deadline_call_s": took,
        "abandoned_call_server_s": first.get("seconds"),
        "next_call_s": after_s,
        "rpcs": angle[:4],
    }
    if with_job:
        out = c.work / "slow-job"
        t0 = time.monotonic()
        job = create_job(c.gateway.address, job_spec(out.as_uri(), count, per_shard, seed=701))
        seen_job = follow(c.gateway.address, job.job_id)
        took = time.monotonic() - t0
        next_call = o.final_state
        finish(o, seen_job, out, count)
        log = [json.loads(line) for line in rpc_log.read_text().splitlines()]
        gen = [r for r in log if r["method"].endswith("/Generate")]
        deadlines = sorted({round(r["remaining_s"] or -1) for r in gen})
        o.check(
            f"the job's Generate calls carry the shard deadline ({GENERATE_TIMEOUT_S:g} s)",
            gen and all(r["remaining_s"] and abs(r["remaining_s"] - GENERATE_TIMEOUT_S) < 60 for r in gen),
            deadlines,
        )
        o.final_state = f"{next_call}; job {o.final_state} in {took:.0f} s"
        o.details.update(
            {"job_s": took, "generate_calls": len(gen), "generate_s": [r["seconds"] for r in gen][:8]}
        )
    return o


# --- the harness -------------------------------------------------------------------------------------------
HEADERS = ["scenario", "injected", "client saw", "recovered in", "final state", "manifest", "pass"]


def run(
    out: Path, *, quick: bool = False, only: tuple[str, ...] | None = None, allow_mount: bool = True
) -> Section:
    """Run the scenarios (``quick``: :data:`QUICK` with tiny jobs) and write ``faults.json``/``faults.md``."""
    from bench.reliability.s3_faults import FaultyS3

    names = only or (QUICK if quick else SCENARIOS)
    count, per_shard = (8, 2) if quick else (64, 16)
    t_start = time.monotonic()
    out = Path(out)
    work = Path(tempfile.mkdtemp(prefix="hipgen-faults-"))
    s3 = FaultyS3().start()
    c = Cluster(work, s3)
    outcomes: list[Outcome] = []

    def guarded(key: str, fn: Callable[[], Outcome | list[Outcome]]) -> None:
        t0 = time.monotonic()
        try:
            got = fn()
        except BaseException as e:  # one scenario's crash is its failure, not the harness's
            if isinstance(e, KeyboardInterrupt):
                raise
            got = Outcome(key, key, final_state=f"harness error: {type(e).__name__}")
            got.check("scenario ran", False, f"{type(e).__name__}: {str(e)[-500:]}")
        for o in got if isinstance(got, list) else [got]:
            o.seconds = round(time.monotonic() - t0, 1)
            outcomes.append(o)
            print(f"[faults] {o.key}: {'pass' if o.passed else 'FAIL'} ({o.seconds} s)", flush=True)

    try:
        c.use_model("normal")
        c.start_gateway()
        for key in names:
            if key == "model":
                guarded(key, lambda: scenario_model_kill(c, count, per_shard))
            elif key == "gateway":
                guarded(key, lambda: scenario_gateway_kill(c, count, per_shard))
            elif key == "stream":
                guarded(key, lambda: scenario_stream_kill(c, 4 if quick else 8))
            elif key == "disk":
                guarded(
                    key,
                    lambda: scenario_full_disk(
                        c, count, per_shard, long_outage=not quick, allow_mount=allow_mount
                    ),
                )
            elif key == "s3":
                guarded(key, lambda: scenario_s3_errors(c, count, per_shard, long_outage=not quick))
            elif key == "slow":
                guarded(key, lambda: scenario_slow_backend(c, 8, 4, with_job=not quick))
            elif key == "triton":
                guarded(key, lambda: scenario_triton_kill(c, count, per_shard))
            else:
                raise ValueError(f"unknown scenario {key!r}; choose from {', '.join(SCENARIOS)}")
    finally:
        c.close()
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    seconds = round(time.monotonic() - t_start, 1)
    table = markdown_table(HEADERS, [o.row() for o in outcomes])
    table += f"\n\n{'quick' if quick else 'full'} run, {len(outcomes)} scenarios, {seconds} s"
    results = {
        "quick": quick,
        "seconds": seconds,
        "images_per_job": count,
        "images_per_shard": per_shard,
        "scenarios": [asdict(o) for o in outcomes],
    }
    write_results(out, "faults", results, table)
    return Section("Fault injection", table, [c_ for o in outcomes for c_ in o.checks], results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.reliability.faults", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--out", type=Path, default=Path("out/reliability"))
    ap.add_argument("--quick", action="store_true", help="the fast subset with tiny jobs (make test)")
    ap.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    ap.add_argument(
        "--no-mount", action="store_true", help="full disk: inject ENOSPC rather than mount a small tmpfs"
    )
    args = ap.parse_args(argv)
    section = run(
        args.out,
        quick=args.quick,
        only=tuple(args.only) if args.only else None,
        allow_mount=not args.no_mount,
    )
    for f in section.failures():
        print(f"FAILED {f.name}: {f.detail}", file=sys.stderr)
    return 0 if section.passed else 1


if __name__ == "__main__":
    sys.exit(main())
