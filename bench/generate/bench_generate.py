"""Generation speed and angle fidelity per sampler, side by side in one run (ratios are the claim: these
machines are shared and noisy):

- samplers: DDPM-1000, DDIM-50 (teacher, ``generator_ddpm``) and LCM-4, LCM-2 (student, ``generator_lcm``);
- in-process (``Generator`` on ONNX Runtime, what ``hipgen generate`` runs) and over gRPC
  (GenerateService on 127.0.0.1: + auto-labelling by the angle model + PNG encoding + transport);
- batch 1 (one image per call) and batch 8 (eight conditions in one call, denoised together);
- fidelity: the batch-8 images are measured by the default angle model — requested vs measured NA,
  Pearson r and MAE over both sides (8 images are a small sample: ``hipgen evaluate generator`` gives the
  full grid).

Usage::

    python bench/generate/bench_generate.py [--repo model_repository] [--skip-ddpm] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

# eight (left, right) requests spread over the trained range, both sides varied independently
CONDITIONS = [(75, 120), (85, 95), (95, 125), (100, 80), (105, 105), (115, 90), (120, 75), (125, 115)]
CONFIGS = [
    ("ddpm", 1000, "generator_ddpm"),
    ("ddim", 50, "generator_ddpm"),
    ("lcm", 4, "generator_lcm"),
    ("lcm", 2, "generator_lcm"),
]


def _in_process(repo: Path, model: str, sampler: str, steps: int, n: int) -> tuple[float, np.ndarray]:
    from hipgen.generate.conditions import NaRequest
    from hipgen.generate.generator import Generator, choose_sampler
    from hipgen.inference.backend import OrtBackend

    gen = Generator(OrtBackend(repo), model)
    choice = choose_sampler(gen.spec, sampler, steps, None)
    reqs = [NaRequest(*map(float, c)) for c in CONDITIONS[:n]]
    gen.generate(gen.plan(reqs[:1], [99], choose_sampler(gen.spec, sampler, 1, None)))  # warm-up
    t = time.perf_counter()
    images = gen.generate(gen.plan(reqs, list(range(n)), choice))
    return time.perf_counter() - t, images


def _grpc(port: int, model: str, sampler: str, steps: int, n: int) -> float:
    import grpc

    from hipgen.api.v1 import common_pb2, generate_pb2, generate_pb2_grpc

    enum = {
        "ddpm": generate_pb2.SAMPLER_DDPM,
        "ddim": generate_pb2.SAMPLER_DDIM,
        "lcm": generate_pb2.SAMPLER_LCM,
    }
    req = generate_pb2.GenerateRequest(
        conditions=[common_pb2.NaCondition(na_left_deg=a, na_right_deg=b) for a, b in CONDITIONS[:n]],
        seed=0,
        sampler=enum[sampler],
        steps=steps,
        model_name=model,
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = generate_pb2_grpc.GenerateServiceStub(ch)
        warm = generate_pb2.GenerateRequest(
            conditions=req.conditions[:1], sampler=req.sampler, steps=1, model_name=model
        )
        list(stub.Generate(warm, timeout=600))
        t = time.perf_counter()
        got = [e for e in stub.Generate(req, timeout=3600) if e.HasField("image")]
        dt = time.perf_counter() - t
    assert len(got) == n
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path("model_repository"))
    ap.add_argument(
        "--skip-ddpm", action="store_true", help="leave out DDPM-1000 (minutes per batch on a CPU)"
    )
    ap.add_argument("--out", type=Path, default=Path("runs/bench-generate"))
    args = ap.parse_args()

    from hipgen.angle.measure import measurer_from_backend
    from hipgen.generate.label import measure_each, measured_angles
    from hipgen.inference.backend import OrtBackend
    from hipgen.metrics.fidelity import angle_fidelity
    from hipgen.settings import Settings
    from services.server import build_server

    measurer = measurer_from_backend(OrtBackend(args.repo))
    settings = Settings(
        host="127.0.0.1", port=0, metrics_port=0, model_repository=args.repo, generate_batch_size=8
    )
    server, port = build_server(settings)
    server.start()
    rows = []
    try:
        for sampler, steps, model in CONFIGS:
            if args.skip_ddpm and sampler == "ddpm":
                continue
            name = f"{sampler.upper()}-{steps}"
            t1, _ = _in_process(args.repo, model, sampler, steps, 1)
            t8, images = _in_process(args.repo, model, sampler, steps, 8)
            g1 = _grpc(port, model, sampler, steps, 1)
            g8 = _grpc(port, model, sampler, steps, 8)
            measured = measured_angles(measure_each(measurer, list(images)))
            fid = angle_fidelity(np.array(CONDITIONS, np.float64), measured)["both"]
            rows.append(
                {
                    "sampler": name,
                    "in_process_b1_s_per_image": t1,
                    "in_process_b8_images_per_s": 8 / t8,
                    "grpc_b1_s_per_image": g1,
                    "grpc_b8_images_per_s": 8 / g8,
                    "pearson_r": fid.pearson_r,
                    "mae_deg": fid.mae,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        server.stop(None).wait()
    base = next((r for r in rows if r["sampler"] == "DDIM-50"), rows[0])
    print(
        "\n| sampler | in-proc b1 s/img | in-proc b8 img/s | gRPC b1 s/img | gRPC b8 img/s | "
        "b8 speed-up vs DDIM-50 | gRPC/in-proc (b8) | r | MAE ° |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['sampler']} | {r['in_process_b1_s_per_image']:.2f} | "
            f"{r['in_process_b8_images_per_s']:.2f} | "
            f"{r['grpc_b1_s_per_image']:.2f} | {r['grpc_b8_images_per_s']:.2f} | "
            f"{r['in_process_b8_images_per_s'] / base['in_process_b8_images_per_s']:.1f}× | "
            f"{r['grpc_b8_images_per_s'] / r['in_process_b8_images_per_s']:.2f}× | "
            f"{r['pearson_r']:.2f} | {r['mae_deg']:.1f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
