"""Load test: N concurrent clients (50 by default) for a fixed time (2 min; 5 min with ``--duration 300``)
mixing PredictAngle, Generate (LCM-4) and small dataset jobs, all through the gateway, against a model
server (angle, generate, score) and the gateway started as separate processes on 127.0.0.1.

Reports per RPC kind: calls (attempts), successes, throughput (ok/s over the load period), p50/p95/p99
latency of the successful calls, RESOURCE_EXHAUSTED counted apart (with or without RetryInfo) and every
other error by status code; and the resident memory of each server process (children included).

The servers are configured to be overloaded on purpose (the limits are in the table header): the
gateway admits ``gateway_limit`` RPCs running or queued (``max_concurrent_rpcs``, services.admission),
far below the number of clients, so that the RESOURCE_EXHAUSTED + RetryInfo path is taken; the model
server's limit is set above what the gateway and its job runner can send it (gateway limit + running
jobs × shard workers), the shape of a deployment whose front door protects the model pods. Clients
honour RetryInfo: they sleep the advised delay and try again; such refusals are the deliberate ones and
are not errors (a RESOURCE_EXHAUSTED *without* RetryInfo is). Every call has a generous, finite deadline.

Checks: no errors but RESOURCE_EXHAUSTED with RetryInfo (dataset jobs that end FAILED or CANCELLED on
their own count as errors); the RetryInfo path was exercised; calls still succeed in the last quarter
of the run (a leaked admission slot would end in refusing everything); every dataset job that
SUCCEEDED has a manifest whose sha256 all verify and that lists the job's images; memory bounded; both
servers healthy at the end.

Memory bound, per process: the peak stays under the Kubernetes memory limit of its deployment (k8s/base:
gateway 1 GiB; the combined model server under generate's 4 GiB), and — the leak check — the peak of the
second half of the run stays within ``max(64 MB, 10 %)`` of the first half's peak. Under steady load a
server's memory levels off once its arenas, caches and thread stacks are sized (the first half, warm-up
included, sees that); a per-request leak grows with the number of requests, i.e. on through the second
half. The margin absorbs allocator noise, not a trend.

Usage::

    python -m bench.reliability.load --duration 120 --clients 50 --out out/reliability
    python -m bench.reliability.load --quick --out out/reliability      # the make-test subset
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from bench.common import REPO, PeakRss, Proc, markdown_table, start, write_results
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

NAME = "load"
KINDS = ("PredictAngle", "Generate", "CreateDatasetJob", "WatchDatasetJob", "CancelDatasetJob")
JOB = "dataset job (create → SUCCEEDED)"
MB = 2**20
#: Kubernetes memory limits (k8s/base/*.yaml): the absolute bound of each process's peak RSS.
RSS_LIMIT_MB = {"gateway": 1024, "model server": 4096}
LEAK_MARGIN_MB, LEAK_MARGIN_FRACTION = 64, 0.10
WARM_UP_ROUNDS = 1
DEADLINE_S = {"PredictAngle": 30.0, "Generate": 60.0, "CreateDatasetJob": 30.0, "CancelDatasetJob": 30.0}


@dataclass(frozen=True)
class Config:
    """One run's load and server limits."""

    clients: int
    duration_s: float
    drain_s: float  # after the run: in-flight calls finish, dataset jobs still running are then cancelled
    weights: dict[str, float]  # PredictAngle / Generate / DatasetJob
    model_workers: int
    model_limit: int
    gateway_workers: int
    gateway_limit: int
    max_running: int
    max_queued: int
    shard_workers: int
    job_images: int
    images_per_shard: int
    image_px: int = 256

    @property
    def max_watches(self) -> int:
        return max(1, self.gateway_workers // 2)  # services.gateway.server

    def header(self) -> str:
        mix = ", ".join(f"{k} {v:.0%}" for k, v in self.weights.items())
        return (
            f"{self.clients} clients for {self.duration_s:g} s through the gateway ({mix}; Generate: 1 "
            f"image, LCM-4, generator_lcm; dataset jobs: {self.job_images} images, "
            f"{self.images_per_shard}/shard). "
            f"Limits set to overload: gateway max_workers={self.gateway_workers}, "
            f"max_concurrent_rpcs={self.gateway_limit}, {self.max_watches} watches, "
            f"dataset_max_running={self.max_running}, dataset_max_queued={self.max_queued}; model server "
            f"max_workers={self.model_workers}, max_concurrent_rpcs={self.model_limit} (above gateway limit "
            f"+ running jobs × {self.shard_workers} shard workers)."
        )


def config(*, quick: bool, duration_s: float, clients: int) -> Config:
    weights = {"PredictAngle": 0.5, "Generate": 0.35, "DatasetJob": 0.15}
    if quick:
        return Config(
            clients=min(clients, 8),
            duration_s=min(duration_s, 10.0),
            drain_s=4.0,
            weights=weights,
            model_workers=2,
            model_limit=8,
            gateway_workers=4,
            gateway_limit=3,
            max_running=1,
            max_queued=2,
            shard_workers=1,
            job_images=8,
            images_per_shard=8,
        )
    return Config(
        clients=clients,
        duration_s=duration_s,
        drain_s=30.0,
        weights=weights,
        model_workers=4,
        model_limit=24,
        gateway_workers=8,
        gateway_limit=12,
        max_running=2,
        max_queued=4,
        shard_workers=2,
        job_images=16,
        images_per_shard=8,
    )


# --- per-kind statistics ----------------------------------------------------------------------------
@dataclass
class KindStats:
    calls: int = 0  # attempts, refused ones included
    ok: int = 0
    latencies: list[float] = field(default_factory=list)  # successful calls, seconds
    ok_at: list[float] = field(default_factory=list)  # when each success ended, seconds into the run
    exhausted_retry: int = 0  # RESOURCE_EXHAUSTED with RetryInfo: deliberate
    exhausted_bare: int = 0  # RESOURCE_EXHAUSTED without RetryInfo: an error
    gave_up: int = 0  # refused with RetryInfo when the run was over (not retried), or cut by its end
    errors: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)  # RESOURCE_EXHAUSTED messages, numbers masked
    samples: list[str] = field(default_factory=list)  # the first few error messages
    events: int = 0  # Generate: stream events received (progress + images), every attempt

    def merge(self, other: KindStats) -> None:
        for name in ("calls", "ok", "exhausted_retry", "exhausted_bare", "gave_up", "events"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies += other.latencies
        self.ok_at += other.ok_at
        self.errors += other.errors
        self.refusals += other.refusals
        self.samples = (self.samples + other.samples)[:5]

    def error(self, code: str, message: str) -> None:
        self.errors[code] += 1
        if len(self.samples) < 5:
            self.samples.append(f"{code}: {message[:200]}")

    def summary(self, seconds: float) -> dict[str, Any]:
        q = percentiles(self.latencies)
        return {
            "calls": self.calls,
            "ok": self.ok,
            "ok_per_s": self.ok / seconds if seconds > 0 else 0.0,
            "p50_s": q[0],
            "p95_s": q[1],
            "p99_s": q[2],
            "resource_exhausted_retryinfo": self.exhausted_retry,
            "resource_exhausted_without_retryinfo": self.exhausted_bare,
            "gave_up_at_end": self.gave_up,
            "errors": dict(self.errors),
            "refusals": dict(self.refusals),
            "error_samples": self.samples,
            "events": self.events,
        }


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 (NaN when there are none)."""
    if not values:
        return (float("nan"),) * 3
    if len(values) == 1:
        return (values[0],) * 3
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def retry_delay_s(err: grpc.RpcError) -> float | None:
    """The RetryInfo delay of an error's ``google.rpc.Status`` details, or None."""
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except ValueError:  # a status code or message that disagrees with the header
        return None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


def _reason(message: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "N", message or "")[:90]


FINAL = (
    dataset_pb2.DATASET_JOB_STATE_SUCCEEDED,
    dataset_pb2.DATASET_JOB_STATE_FAILED,
    dataset_pb2.DATASET_JOB_STATE_CANCELLED,
)
LOST = object()  # Client.watch: the watch failed


class ShortStream(Exception):
    """A Generate stream that ended OK without its image."""


class RunOver(Exception):
    """A call cut short by the run's own end (a watch's deadline at the end of the drain): not an error."""


# --- one client -------------------------------------------------------------------------------------
class Client:
    """One simulated client: its own channel and connection, a weighted random mix until the run ends."""

    def __init__(self, index: int, target: str, cfg: Config, run: Run) -> None:
        self.index, self.cfg, self.run = index, cfg, run
        self.rng = random.Random(1000 + index)
        # its own connection, as a separate client would have (grpcio shares subchannels otherwise)
        self.channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        self.angle = angle_pb2_grpc.AngleServiceStub(self.channel)
        self.generate = generate_pb2_grpc.GenerateServiceStub(self.channel)
        self.datasets = dataset_pb2_grpc.DatasetServiceStub(self.channel)
        self.stats = {k: KindStats() for k in (*KINDS, JOB)}
        self.jobs: dict[str, Path] = {}  # job id -> output folder
        self.job_states: Counter[str] = Counter()
        self.n = 0

    def loop(self) -> None:
        ops = {"PredictAngle": self.predict, "Generate": self.generate_one, "DatasetJob": self.dataset_job}
        names, weights = list(self.cfg.weights), list(self.cfg.weights.values())
        try:
            while time.monotonic() < self.run.end:
                self.n += 1
                # the first op cycles through the kinds over the clients (every kind runs from the
                # start, even with a few clients), then the weighted mix
                name = names[self.index % len(names)] if self.n == 1 else self.rng.choices(names, weights)[0]
                ops[name]()
        finally:
            self.channel.close()

    def attempt(self, kind: str, fn: Callable[[], Any], *, retry_until: float | None = None) -> Any:
        """``fn()`` until it answers, fails, or is refused with RetryInfo after ``retry_until`` (default:
        the run's end); RetryInfo's delay is slept before each retry. None when it did not answer."""
        st = self.stats[kind]
        until = self.run.end if retry_until is None else retry_until
        while True:
            st.calls += 1
            t0 = time.perf_counter()
            try:
                result = fn()
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
                details = (e.details() if hasattr(e, "details") else str(e)) or ""
                if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    st.error(code.name, details)
                    return None
                st.refusals[_reason(details)] += 1
                delay = retry_delay_s(e)
                if delay is None:
                    st.exhausted_bare += 1
                    st.error("RESOURCE_EXHAUSTED (no RetryInfo)", details)
                    return None
                st.exhausted_retry += 1
                if time.monotonic() + delay > until:
                    st.gave_up += 1
                    return None
                time.sleep(delay)
                continue
            except ShortStream as e:
                st.error("SHORT_STREAM", str(e))
                return None
            except RunOver:
                st.gave_up += 1
                return None
            st.ok += 1
            st.latencies.append(time.perf_counter() - t0)
            st.ok_at.append(time.monotonic() - self.run.start)
            return result

    def predict(self) -> None:
        request = self.run.angle_requests[self.n % len(self.run.angle_requests)]
        self.attempt(
            "PredictAngle", lambda: self.angle.PredictAngle(request, timeout=DEADLINE_S["PredictAngle"])
        )

    def generate_one(self) -> None:
        st = self.stats["Generate"]
        request = generate_pb2.GenerateRequest(
            conditions=[common_pb2.NaCondition(na_left_deg=self.rng.uniform(80, 115), na_right_deg=100.0)],
            images_per_condition=1,
            seed=self.index * 100_000 + self.n,
            sampler=generate_pb2.SAMPLER_LCM,
            steps=4,
            model_name="generator_lcm",
        )

        def call() -> int:
            images = 0
            for event in self.generate.Generate(request, timeout=DEADLINE_S["Generate"]):
                st.events += 1
                images += event.HasField("image")
            if images != 1:
                raise ShortStream(f"{images} images in an OK stream, expected 1")
            return images

        self.attempt("Generate", call)

    def dataset_job(self) -> None:
        cfg, run = self.cfg, self.run
        folder = run.jobs_root / f"c{self.index:02d}-{self.n:04d}"
        spec = dataset_pb2.DatasetJobSpec(
            output_uri=folder.resolve().as_uri(),
            format=dataset_pb2.DATASET_FORMAT_IMAGEFOLDER,
            count=cfg.job_images,
            angles=dataset_pb2.AngleDistribution(uniform=dataset_pb2.UniformAngles(low_deg=80, high_deg=115)),
            seed=self.index * 100_000 + self.n,
            sampler=generate_pb2.SAMPLER_LCM,
            steps=4,
            images_per_shard=cfg.images_per_shard,
        )
        # one request id for every attempt: a retried create never makes a second job
        request = dataset_pb2.CreateDatasetJobRequest(spec=spec, request_id=uuid.uuid4().hex)
        t0 = time.perf_counter()
        created = self.attempt(
            "CreateDatasetJob",
            lambda: self.datasets.CreateDatasetJob(request, timeout=DEADLINE_S["CreateDatasetJob"]),
        )
        if created is None:
            return
        job_id = created.job.job_id
        self.jobs[job_id] = folder
        job = self.watch(job_id)
        e2e = self.stats[JOB]
        e2e.calls += 1
        if job is None or job is LOST:  # the run (and its drain) ended first, or the watch failed
            if job is LOST:
                self.job_states["watch failed, cancelled"] += 1
                e2e.error("WATCH_FAILED", "see WatchDatasetJob")
            else:
                self.job_states["left at end, cancelled"] += 1
            self.attempt(
                "CancelDatasetJob",
                lambda: self.datasets.CancelDatasetJob(
                    dataset_pb2.CancelDatasetJobRequest(job_id=job_id), timeout=DEADLINE_S["CancelDatasetJob"]
                ),
                retry_until=run.hard_end + 15,
            )
            return
        state = dataset_pb2.DatasetJobState.Name(job.state)
        self.job_states[state] += 1
        if job.state == dataset_pb2.DATASET_JOB_STATE_SUCCEEDED:
            e2e.ok += 1
            e2e.latencies.append(time.perf_counter() - t0)
            e2e.ok_at.append(time.monotonic() - run.start)
        else:
            e2e.error(state, job.error.message)

    def watch(self, job_id: str) -> Any:
        """Watch until the job is final: the job; None when the run's drain ends first; :data:`LOST`
        when a watch failed (an error, counted)."""
        request = dataset_pb2.WatchDatasetJobRequest(job_id=job_id)
        watch_stats = self.stats["WatchDatasetJob"]
        while True:
            remaining = self.run.hard_end - time.monotonic()
            if remaining <= 0.5:
                return None

            def call(remaining: float = remaining) -> Any:
                last = None
                try:
                    for event in self.datasets.WatchDatasetJob(request, timeout=remaining):
                        last = event.job
                except grpc.RpcError as e:
                    if (
                        e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                        and time.monotonic() >= self.run.hard_end - 1
                    ):
                        raise RunOver() from None  # our own end of the run, not the server's doing
                    raise
                return last

            errors = sum(watch_stats.errors.values())
            job = self.attempt("WatchDatasetJob", call, retry_until=self.run.hard_end)
            if job is not None and job.state in FINAL:
                return job
            if sum(watch_stats.errors.values()) > errors:
                return LOST
            time.sleep(0.2)  # the stream ended before the job did: watch again, until the drain ends


# --- the run ----------------------------------------------------------------------------------------
@dataclass
class Run:
    start: float
    end: float
    hard_end: float
    jobs_root: Path
    angle_requests: list[angle_pb2.PredictAngleRequest]


def angle_requests(n: int, size: int) -> list[angle_pb2.PredictAngleRequest]:
    """Phantom radiographs as 16-bit PNG requests (as bench/angle/bench_angle.py renders them)."""
    from hipgen.data.images import encode_png
    from hipgen.phantom.render import render_phantom
    from hipgen.phantom.spec import image_seed, spec_for_seed

    out = []
    for i in range(n):
        seed = image_seed(7, i)
        pixels = render_phantom(spec_for_seed("population", seed, image_size=size), seed).pixels
        out.append(
            angle_pb2.PredictAngleRequest(
                image=common_pb2.Image(data=encode_png(pixels, bits=16), file_name=f"load-{i}.png")
            )
        )
    return out


def start_servers(cfg: Config, work: Path) -> tuple[Proc, Proc]:
    common = {"HIPGEN_GRACE_PERIOD_S": "2", "HIPGEN_MODEL_REPOSITORY": str(REPO / "model_repository")}
    model = start(
        "model server",
        ["services.server", "--services", "angle,generate,score"],
        {
            **common,
            "HIPGEN_MAX_WORKERS": str(cfg.model_workers),
            "HIPGEN_MAX_CONCURRENT_RPCS": str(cfg.model_limit),
        },
        "server listening",
    )
    try:
        gateway = start(
            "gateway",
            ["services.gateway"],
            {
                **common,
                "HIPGEN_ANGLE_ADDRESS": model.address,
                "HIPGEN_GENERATE_ADDRESS": model.address,
                "HIPGEN_SCORE_ADDRESS": model.address,
                "HIPGEN_DATASET_DB_URL": f"sqlite:///{work / 'jobs.db'}",
                "HIPGEN_DATASET_OUTPUT_ROOT": str(work),
                "HIPGEN_MAX_WORKERS": str(cfg.gateway_workers),
                "HIPGEN_MAX_CONCURRENT_RPCS": str(cfg.gateway_limit),
                "HIPGEN_DATASET_MAX_RUNNING": str(cfg.max_running),
                "HIPGEN_DATASET_MAX_QUEUED": str(cfg.max_queued),
                "HIPGEN_DATASET_SHARD_WORKERS": str(cfg.shard_workers),
            },
            "gateway listening",
        )
    except BaseException:
        model.stop()
        raise
    return model, gateway


def warm_up(model: Proc, requests: list[angle_pb2.PredictAngleRequest], cfg: Config) -> None:
    """Each shape of call the run makes (PredictAngle, Generate of 1 image and of a shard's batch),
    :data:`WARM_UP_ROUNDS` rounds of ``model_workers`` at once, straight to the model server: its inference
    arenas grow to what concurrent calls need here, in the first half of the memory series, not in the
    leak check's second."""

    def shapes(ch: grpc.Channel) -> None:
        angle_pb2_grpc.AngleServiceStub(ch).PredictAngle(requests[0], timeout=60)
        for n in (1, cfg.images_per_shard):
            request = generate_pb2.GenerateRequest(
                conditions=[common_pb2.NaCondition(na_left_deg=100, na_right_deg=100)],
                images_per_condition=n,
                seed=1,
                sampler=generate_pb2.SAMPLER_LCM,
                steps=4,
                model_name="generator_lcm",
            )
            for _ in generate_pb2_grpc.GenerateServiceStub(ch).Generate(request, timeout=120):
                pass

    with grpc.insecure_channel(model.address) as ch:
        for _ in range(WARM_UP_ROUNDS):
            threads = [threading.Thread(target=shapes, args=(ch,)) for _ in range(cfg.model_workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(180)


def healthy(proc: Proc, check_predict: bool = False, requests: list[Any] | None = None) -> tuple[bool, str]:
    if proc.popen.poll() is not None:
        return False, f"{proc.name} exited with {proc.popen.returncode}"
    try:
        with grpc.insecure_channel(proc.address) as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
            if status != health_pb2.HealthCheckResponse.SERVING:
                return (
                    False,
                    f"{proc.name} health {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}",
                )
            if check_predict and requests:
                for _ in range(10):  # bounded: the load is over, a refusal here would be a stuck slot
                    try:
                        angle_pb2_grpc.AngleServiceStub(ch).PredictAngle(requests[0], timeout=30)
                        break
                    except grpc.RpcError as e:
                        if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                            raise
                        time.sleep(min(2.0, retry_delay_s(e) or 1.0))
                else:
                    return False, f"{proc.name} still refuses PredictAngle after the run"
    except grpc.RpcError as e:
        return False, f"{proc.name}: {e.code().name} {e.details()}"
    return True, f"{proc.name} SERVING" + (", PredictAngle OK" if check_predict else "")


def all_jobs(target: str) -> list[dataset_pb2.DatasetJob]:
    jobs: list[dataset_pb2.DatasetJob] = []
    with grpc.insecure_channel(target) as ch:
        stub = dataset_pb2_grpc.DatasetServiceStub(ch)
        token = ""
        for _ in range(1000):  # bounded paging
            resp = stub.ListDatasetJobs(
                dataset_pb2.ListDatasetJobsRequest(page_size=100, page_token=token), timeout=30
            )
            jobs += resp.jobs
            token = resp.next_page_token
            if not token:
                break
    return jobs


def check_manifests(jobs: list[dataset_pb2.DatasetJob], work: Path) -> tuple[int, list[str]]:
    """Verify every SUCCEEDED job's manifest: every sha256, no unlisted files, ``count`` images."""
    from urllib.parse import unquote, urlparse

    from hipgen.data.manifest import read_manifest, verify_manifest

    ok, bad = 0, []
    for job in jobs:
        if job.state != dataset_pb2.DATASET_JOB_STATE_SUCCEEDED:
            continue
        folder = Path(unquote(urlparse(job.spec.output_uri).path))
        try:
            report = verify_manifest(folder)
            images = sum(1 for e in read_manifest(folder).files if e.record)
        except Exception as e:  # noqa: BLE001 - any failure to read is a failed check, reported
            bad.append(f"{folder.name}: {e}")
            continue
        if not report.ok or images != job.spec.count:
            bad.append(f"{folder.name}: {images}/{job.spec.count} images, problems {report.problems[:3]}")
        else:
            ok += 1
    return ok, bad


def memory(rss: PeakRss, mid: dict[str, int]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, samples in rss.samples.items():
        m = max(1, min(mid.get(name, len(samples) // 2), len(samples) - 1))
        first, second = samples[:m], samples[m:]
        first_peak = max(first) / MB if first else float("nan")
        second_peak = max(second) / MB if second else float("nan")
        margin = max(LEAK_MARGIN_MB, LEAK_MARGIN_FRACTION * first_peak)
        limit = RSS_LIMIT_MB[name]
        peak = rss.peak[name] / MB
        out[name] = {
            "start_mb": round(rss.first.get(name, 0) / MB),
            "first_half_peak_mb": round(first_peak),
            "second_half_peak_mb": round(second_peak),
            "peak_mb": round(peak),
            "end_mb": round(samples[-1] / MB) if samples else None,
            "limit_mb": limit,
            "leak_margin_mb": round(margin),
            "samples": len(samples),
            # about one sample a second, for the record
            "series_mb": [round(v / MB) for v in samples[:: max(1, round(1 / rss.every_s))]],
            "bounded": bool(samples) and peak <= limit and second_peak <= first_peak + margin,
        }
    return out


def run(out: Path, *, quick: bool = False, duration_s: float = 120, clients: int = 50) -> Section:
    """Run the load test (module docstring) and return its section; writes ``<out>/load.{json,md}``."""
    cfg = config(quick=quick, duration_s=duration_s, clients=clients)
    work = (out / "load-work").resolve()
    jobs_root = work / "jobs"
    jobs_root.mkdir(parents=True, exist_ok=True)
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    requests = angle_requests(4, cfg.image_px)
    model, gateway = start_servers(cfg, work)
    phases["start servers"] = time.monotonic() - t0
    stats = {k: KindStats() for k in (*KINDS, JOB)}
    job_states: Counter[str] = Counter()
    results: dict[str, Any] = {"config": {**cfg.__dict__, "max_watches": cfg.max_watches, "quick": quick}}
    checks: list[Check] = []
    try:
        with PeakRss({"model server": model.popen.pid, "gateway": gateway.popen.pid}) as rss:
            t0 = time.monotonic()
            warm_up(model, requests, cfg)
            now = time.monotonic()
            phases["warm-up"] = now - t0
            load_start = {k: len(v) for k, v in rss.samples.items()}
            the_run = Run(now, now + cfg.duration_s, now + cfg.duration_s + cfg.drain_s, jobs_root, requests)
            client_list = [Client(i, gateway.address, cfg, the_run) for i in range(cfg.clients)]
            threads = [
                threading.Thread(target=c.loop, name=f"client-{c.index}", daemon=True) for c in client_list
            ]
            for t in threads:
                t.start()
            time.sleep(max(0.0, the_run.start + cfg.duration_s / 2 - time.monotonic()))
            mid = {k: len(v) for k, v in rss.samples.items()}
            # every call has a deadline and every job watch ends at hard_end: the clients end by then
            join_by = the_run.hard_end + max(DEADLINE_S.values()) + 20
            for t in threads:
                t.join(max(0.0, join_by - time.monotonic()))
            stuck = [t.name for t in threads if t.is_alive()]
            elapsed = time.monotonic() - the_run.start
            phases["load + drain"] = elapsed
        for c in client_list:
            for k, st in c.stats.items():
                stats[k].merge(st)
            job_states += c.job_states
        mem = memory(rss, mid)
        model_ok = healthy(model)
        gateway_ok = healthy(gateway, check_predict=True, requests=requests)
        jobs = all_jobs(gateway.address)
    finally:
        t0 = time.monotonic()
        gateway.stop()
        model.stop()
        phases["stop servers"] = time.monotonic() - t0

    seconds = cfg.duration_s
    results["elapsed_s"] = round(elapsed, 1)
    results["phases_s"] = {k: round(v, 1) for k, v in phases.items()}
    results["load_start_sample"] = load_start
    results["rpcs"] = {k: st.summary(seconds) for k, st in stats.items()}
    results["memory"] = mem
    results["jobs"] = {
        "client_outcomes": dict(job_states),
        "server_states": dict(Counter(dataset_pb2.DatasetJobState.Name(j.state) for j in jobs)),
    }
    manifests_ok, manifest_problems = check_manifests(jobs, work)
    results["jobs"]["manifests_verified"] = manifests_ok
    results["jobs"]["manifest_problems"] = manifest_problems

    # --- checks ---
    errors = {k: dict(st.errors) for k, st in stats.items() if st.errors}
    checks.append(
        Check(
            "no errors except RESOURCE_EXHAUSTED with RetryInfo",
            not errors and not stuck,
            f"errors {errors}; samples {[s for st in stats.values() for s in st.samples][:5]}"
            + (f"; clients still running: {stuck}" if stuck else "")
            if errors or stuck
            else "none",
        )
    )
    exhausted = sum(st.exhausted_retry for st in stats.values())
    reasons = Counter[str]()
    for st in stats.values():
        reasons += st.refusals
    checks.append(
        Check(
            "RESOURCE_EXHAUSTED + RetryInfo path exercised",
            exhausted > 0,
            f"{exhausted} refusals with RetryInfo, honoured: {dict(reasons.most_common(4))}",
        )
    )
    last_quarter = 0.75 * cfg.duration_s
    late = {k: sum(1 for t in stats[k].ok_at if last_quarter <= t) for k in ("PredictAngle", "Generate")}
    checks.append(
        Check(
            "calls still succeed in the last quarter of the run (no slot leaked)",
            all(v > 0 for v in late.values()),
            f"successes after {last_quarter:.0f} s: {late}",
        )
    )
    succeeded = sum(1 for j in jobs if j.state == dataset_pb2.DATASET_JOB_STATE_SUCCEEDED)
    checks.append(
        Check(
            "every SUCCEEDED dataset job has a valid manifest",
            succeeded > 0 and not manifest_problems and manifests_ok == succeeded,
            f"{manifests_ok}/{succeeded} manifests verified (sha256, no stray files, count)"
            + (f"; problems {manifest_problems[:3]}" if manifest_problems else ""),
        )
    )
    checks.append(
        Check(
            "memory bounded",
            all(m["bounded"] for m in mem.values()),
            "; ".join(
                f"{k}: peak {m['peak_mb']} MB (limit {m['limit_mb']}), halves {m['first_half_peak_mb']} → "
                f"{m['second_half_peak_mb']} MB (margin {m['leak_margin_mb']})"
                for k, m in mem.items()
            ),
        )
    )
    checks.append(
        Check("servers healthy at the end", model_ok[0] and gateway_ok[0], f"{model_ok[1]}; {gateway_ok[1]}")
    )
    results["checks"] = [c.__dict__ for c in checks]

    table = render(cfg, results, checks)
    write_results(out, NAME, results, table)
    return Section(f"Load test ({cfg.clients} clients, {cfg.duration_s:g} s)", table, checks, results)


def _ms(v: float) -> float:
    return v * 1000 if v == v else v  # NaN stays NaN


def render(cfg: Config, results: dict[str, Any], checks: list[Check]) -> str:
    rows = []
    for kind, r in results["rpcs"].items():
        if not r["calls"]:
            continue
        exhausted = str(r["resource_exhausted_retryinfo"])
        if r["resource_exhausted_without_retryinfo"]:
            exhausted += f" (+{r['resource_exhausted_without_retryinfo']} without RetryInfo: errors)"
        other = ", ".join(
            f"{c} {n}" for c, n in sorted(r["errors"].items()) if not c.startswith("RESOURCE_EXHAUSTED")
        )
        rows.append(
            [
                kind + (f" ({r['events']} events)" if r["events"] else ""),
                r["calls"],
                r["ok"],
                r["ok_per_s"],
                _ms(r["p50_s"]),
                _ms(r["p95_s"]),
                _ms(r["p99_s"]),
                exhausted,
                other or "–",
            ]
        )
    rpc_table = markdown_table(
        [
            "rpc",
            "calls",
            "ok",
            "ok/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "RESOURCE_EXHAUSTED (RetryInfo)",
            "other errors",
        ],
        rows,
    )
    mem_table = markdown_table(
        [
            "process",
            "start MB",
            "1st-half peak MB",
            "2nd-half peak MB",
            "peak MB",
            "end MB",
            "bound",
            "bounded",
        ],
        [
            [
                k,
                m["start_mb"],
                m["first_half_peak_mb"],
                m["second_half_peak_mb"],
                m["peak_mb"],
                m["end_mb"],
                f"≤ {m['limit_mb']} MB; 2nd ≤ 1st + {m['leak_margin_mb']} MB",
                m["bounded"],
            ]
            for k, m in results["memory"].items()
        ],
    )
    jobs = results["jobs"]
    check_table = markdown_table(
        ["check", "passed", "detail"], [[c.name, c.passed, c.detail] for c in checks]
    )
    return "\n\n".join(
        [
            f"### Load test\n\n{cfg.header()} Calls are attempts (a refused call retried after its RetryInfo "
            "delay counts again); ok/s over the load period; latencies of successful calls. "
            f"Run took {results['elapsed_s']} s with the drain.",
            rpc_table,
            f"Dataset jobs, as clients saw them: {jobs['client_outcomes']}; on the server at the end: "
            f"{jobs['server_states']}; manifests verified: {jobs['manifests_verified']}.",
            mem_table,
            check_table,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reliability.load", description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of load (120; 300 for 5 min)")
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients")
    ap.add_argument("--quick", action="store_true", help="the make-test subset: 8 clients, 10 s, low limits")
    ap.add_argument("--out", type=Path, default=Path("out/reliability"))
    args = ap.parse_args(argv)
    section = run(args.out, quick=args.quick, duration_s=args.duration, clients=args.clients)
    for failure in section.failures():
        print(f"FAILED: {failure.name}: {failure.detail}")
    return 0 if section.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
