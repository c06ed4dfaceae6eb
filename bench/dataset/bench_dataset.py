"""Dataset jobs end to end on 127.0.0.1: throughput, peak memory, and resume after SIGKILL.

Starts one GenerateService+AngleService+ScoreService server and the gateway as separate processes (as
``make run`` does), then:

1. **throughput**: a ``--count``-image job (LCM-4, image folder, 32 images per shard): images/s from
   Create to SUCCEEDED, and the peak RSS of the gateway and the model server (sampled every 0.2 s), at
   the start and at the end — memory must stay flat however many images a job has;
2. **resume** (``--resume-count``): a second job, the gateway killed with SIGKILL once a third of its
   shards are recorded, restarted on the same database; the job must finish with a manifest listing
   exactly ``count`` images, every sha256 matching the file, no duplicates, no temp files.

Prints a markdown table and writes JSON (``--out``). Usage::

    python bench/dataset/bench_dataset.py --count 1000 --resume-count 256 --out out/bench/dataset
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import psutil

from hipgen.api.v1 import dataset_pb2, dataset_pb2_grpc, generate_pb2
from hipgen.data.manifest import read_manifest, verify_manifest
from hipgen.demo import start_server_process

REPO = Path(__file__).resolve().parents[2]


def start(args: list[str], env: dict[str, str], ready: str) -> tuple[subprocess.Popen[str], int]:
    proc, port, _ = start_server_process(env, tuple(args), ready)
    return proc, port


class PeakRss:
    """Peak resident memory of some processes, sampled in a thread."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {k: psutil.Process(p) for k, p in pids.items()}
        self.peak = dict.fromkeys(pids, 0)
        self.first: dict[str, int] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for k, p in self.procs.items():
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                self.first.setdefault(k, rss)
                self.peak[k] = max(self.peak[k], rss)

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def job_spec(out: Path, count: int, seed: int) -> dataset_pb2.DatasetJobSpec:
    return dataset_pb2.DatasetJobSpec(
        output_uri=out.resolve().as_uri(),
        format=dataset_pb2.DATASET_FORMAT_IMAGEFOLDER,
        count=count,
        angles=dataset_pb2.AngleDistribution(uniform=dataset_pb2.UniformAngles(low_deg=80, high_deg=115)),
        seed=seed,
        sampler=generate_pb2.SAMPLER_LCM,
        steps=4,
        images_per_shard=32,
    )


def watch(stub: dataset_pb2_grpc.DatasetServiceStub, job_id: str) -> dataset_pb2.DatasetJob:
    job = None
    for ev in stub.WatchDatasetJob(dataset_pb2.WatchDatasetJobRequest(job_id=job_id), timeout=3600):
        job = ev.job
    assert job is not None
    return job


def check(out: Path, count: int) -> dict[str, object]:
    report = verify_manifest(out)
    images = [e.path for e in read_manifest(out).files if e.record]
    temps = [p.name for p in out.rglob(".*") if p.is_file()]
    return {
        "manifest_images": len(images),
        "distinct": len(set(images)),
        "sha256_ok": report.ok,
        "files_checked": report.checked,
        "temp_files": len(temps),
        "expected": count,
    }


def _ok(flag: object) -> str:
    return "OK" if flag else "FAILED"


def table_rows(results: dict[str, dict]) -> list[str]:
    """The markdown rows of the summary."""
    t, r = results["throughput"], results["resume"]
    rows = [
        f"| {t['images']}-image job (LCM-4, imagefolder, 32/shard, 2 shard workers) "
        f"| {t['seconds']} s, {t['images_per_s']} images/s |"
    ]
    for k in t["peak_rss_mb"]:
        start, peak = t["start_rss_mb"].get(k), t["peak_rss_mb"][k]
        rows.append(f"| RSS {k} start → peak | {start} → {peak} MB |")
    rows.append(
        f"| manifest | {t['manifest_images']} images, {t['distinct']} distinct, "
        f"sha256 {_ok(t['sha256_ok'])}, "
        f"{t['temp_files']} temp files |"
    )
    rows.append(f"| fidelity r / MAE | {t['fidelity']['r']:.2f} / {t['fidelity']['mae_deg']:.1f}° |")
    rows.append(
        f"| resume: {r['images']} images, gateway SIGKILLed at {r['shards_recorded_at_kill']}/{r['shards']} "
        f"shards | {r['state']}, {r['manifest_images']} images, {r['distinct']} distinct, "
        f"sha256 {_ok(r['sha256_ok'])}, {r['temp_files']} temp files |"
    )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--resume-count", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("out/bench/dataset"))
    args = ap.parse_args()
    work = args.out.resolve()
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    base = {**os.environ, "HIPGEN_METRICS_PORT": "0", "HIPGEN_LOG_LEVEL": "WARNING"}
    base["HIPGEN_LOG_LEVEL"] = "INFO"  # the "listening" lines are INFO
    model, mport = start(["services.server", "--services", "angle,generate,score"], base, "server listening")
    addr = f"127.0.0.1:{mport}"
    gw_env = {
        **base,
        "HIPGEN_ANGLE_ADDRESS": addr,
        "HIPGEN_GENERATE_ADDRESS": addr,
        "HIPGEN_SCORE_ADDRESS": addr,
        "HIPGEN_DATASET_DB_URL": f"sqlite:///{work}/jobs.db",
        "HIPGEN_DATASET_OUTPUT_ROOT": str(work),
    }
    results: dict[str, object] = {}
    gw, gport = start(["services.gateway"], gw_env, "gateway listening")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gport}") as ch:
            stub = dataset_pb2_grpc.DatasetServiceStub(ch)
            with PeakRss({"gateway": gw.pid, "model server": model.pid}) as rss:
                t0 = time.perf_counter()
                job = stub.CreateDatasetJob(
                    dataset_pb2.CreateDatasetJobRequest(spec=job_spec(work / "throughput", args.count, 1)),
                    timeout=60,
                ).job
                job = watch(stub, job.job_id)
                dt = time.perf_counter() - t0
            assert job.state == dataset_pb2.DATASET_JOB_STATE_SUCCEEDED, job.error
            results["throughput"] = {
                "images": args.count,
                "seconds": round(dt, 1),
                "images_per_s": round(args.count / dt, 2),
                "peak_rss_mb": {k: round(v / 2**20) for k, v in rss.peak.items()},
                "start_rss_mb": {k: round(v / 2**20) for k, v in rss.first.items()},
                "fidelity": {"r": job.fidelity.pearson_r, "mae_deg": job.fidelity.mae_deg},
                **check(work / "throughput", args.count),
            }
            out = work / "resume"
            job = stub.CreateDatasetJob(
                dataset_pb2.CreateDatasetJobRequest(spec=job_spec(out, args.resume_count, 2)), timeout=60
            ).job
            shards = job.progress.shards_total
            while stub.GetDatasetJob(
                dataset_pb2.GetDatasetJobRequest(job_id=job.job_id), timeout=60
            ).job.progress.shards_done < max(1, shards // 3):
                time.sleep(0.1)
        gw.send_signal(signal.SIGKILL)
        gw.wait()
        recorded = len(list((out / "_shards").glob("*.json")))
        gw, gport = start(["services.gateway"], gw_env, "gateway listening")
        t0 = time.perf_counter()
        with grpc.insecure_channel(f"127.0.0.1:{gport}") as ch:
            job = watch(dataset_pb2_grpc.DatasetServiceStub(ch), job.job_id)
        results["resume"] = {
            "images": args.resume_count,
            "shards": shards,
            "shards_recorded_at_kill": recorded,
            "state": dataset_pb2.DatasetJobState.Name(job.state),
            "seconds_after_restart": round(time.perf_counter() - t0, 1),
            **check(out, args.resume_count),
        }
    finally:
        for p in (gw, model):
            p.terminate()
            p.wait(60)
    print("| measurement | value |\n|---|---|")
    for row in table_rows(results):
        print(row)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nJSON: {work / 'results.json'}")
    t, r = results["throughput"], results["resume"]
    ok = t["sha256_ok"] and r["sha256_ok"] and r["manifest_images"] == r["expected"] == r["distinct"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
