"""Dataset jobs end to end on 127.0.0.1: throughput, peak memory, and resume after SIGKILL.

Starts one GenerateService+AngleService+ScoreService server and the gateway as separate processes (as
``make run`` does), then:

1. **throughput**: one job per ``--count`` (``--count 1000 10000``; LCM-4, image folder, 32 images per
   shard): images/s from Create to SUCCEEDED, and the peak RSS of the gateway and the model server
   (sampled every 0.2 s), at the start and at the end — memory must stay flat however many images a
   job has;
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
import time
from pathlib import Path
from typing import Any

import grpc

from hipgen.api.v1 import dataset_pb2, dataset_pb2_grpc, generate_pb2
from hipgen.demo import start_server_process

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.common import PeakRss  # noqa: E402
from bench.reliability.faults import manifest_check as check  # noqa: E402


def start(args: list[str], env: dict[str, str], ready: str) -> tuple[subprocess.Popen[str], int]:
    proc, port, _ = start_server_process(env, tuple(args), ready)
    return proc, port


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


def _ok(flag: object) -> str:
    return "OK" if flag else "FAILED"


def table_rows(results: dict[str, Any]) -> list[str]:
    """The markdown rows of the summary: one block per job size, then the resume."""
    rows = []
    for t in results["throughput"]:
        rows.append(
            f"| {t['images']}-image job (LCM-4, imagefolder, 32/shard, 2 shard workers) "
            f"| {t['seconds']} s, {t['images_per_s']} images/s |"
        )
        for k in t["peak_rss_mb"]:
            start, peak = t["start_rss_mb"].get(k), t["peak_rss_mb"][k]
            rows.append(f"| {t['images']} images: RSS {k} start → peak | {start} → {peak} MB |")
        rows.append(
            f"| {t['images']} images: manifest | {t['manifest_images']} images, {t['distinct']} distinct, "
            f"sha256 {_ok(t['sha256_ok'])}, {t['temp_files']} temp files |"
        )
        rows.append(
            f"| {t['images']} images: fidelity r / MAE | {t['fidelity']['r']:.2f} / "
            f"{t['fidelity']['mae_deg']:.1f}° |"
        )
    if len(results["throughput"]) > 1:
        a, b = results["throughput"][0], results["throughput"][-1]
        for k in a["peak_rss_mb"]:
            rows.append(
                f"| peak RSS {k}, {b['images']} vs {a['images']} images | "
                f"{b['peak_rss_mb'][k] / max(1, a['peak_rss_mb'][k]):.2f}× |"
            )
        rows.append(
            f"| images/s, {b['images']} vs {a['images']} images "
            f"| {b['images_per_s'] / a['images_per_s']:.2f}× |"
        )
    r = results["resume"]
    rows.append(
        f"| resume: {r['images']} images, gateway SIGKILLed at {r['shards_recorded_at_kill']}/{r['shards']} "
        f"shards | {r['state']}, {r['manifest_images']} images, {r['distinct']} distinct, "
        f"sha256 {_ok(r['sha256_ok'])}, {r['temp_files']} temp files |"
    )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--count", type=int, nargs="+", default=[1000], help="job sizes, one job each (e.g. 1000 10000)"
    )
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
    results: dict[str, Any] = {}
    gw, gport = start(["services.gateway"], gw_env, "gateway listening")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gport}") as ch:
            stub = dataset_pb2_grpc.DatasetServiceStub(ch)
            results["throughput"] = []
            for i, count in enumerate(args.count):
                with PeakRss({"gateway": gw.pid, "model server": model.pid}) as rss:
                    t0 = time.perf_counter()
                    job = stub.CreateDatasetJob(
                        dataset_pb2.CreateDatasetJobRequest(
                            spec=job_spec(work / f"jobs-{count}", count, 1 + i)
                        ),
                        timeout=60,
                    ).job
                    job = watch(stub, job.job_id)
                    dt = time.perf_counter() - t0
                assert job.state == dataset_pb2.DATASET_JOB_STATE_SUCCEEDED, job.error
                results["throughput"].append(
                    {
                        "images": count,
                        "seconds": round(dt, 1),
                        "images_per_s": round(count / dt, 2),
                        "peak_rss_mb": {k: round(v / 2**20) for k, v in rss.peak.items()},
                        "start_rss_mb": {k: round(v / 2**20) for k, v in rss.first.items()},
                        "fidelity": {"r": job.fidelity.pearson_r, "mae_deg": job.fidelity.mae_deg},
                        **check(work / f"jobs-{count}", count),
                    }
                )
                print(json.dumps(results["throughput"][-1]), flush=True)
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
    r = results["resume"]
    ok = all(t["sha256_ok"] and t["manifest_images"] == t["images"] for t in results["throughput"])
    ok = ok and r["sha256_ok"] and r["manifest_images"] == r["expected"] == r["distinct"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
