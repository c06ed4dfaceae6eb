"""Angle measurement throughput and latency, three ways, side by side in one run (ratios, not absolute
numbers, are the claim: these machines are shared and noisy):

- PyTorch eager (the training modules, same architecture as the committed models; random weights —
  speed does not depend on the values),
- ONNX Runtime in-process (``OrtBackend`` over ``model_repository/``),
- AngleService over gRPC on 127.0.0.1 (PNG-encoded images: decode + measure + encode).

Batch 1 is one image per call (PredictAngle); batch 16 is 16 images per call (``measure`` on 16, or one
StreamPredictAngle of 16 items). Usage::

    python bench/angle/bench_angle.py [--repo model_repository] [--size 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _images(n: int, size: int) -> list[np.ndarray]:
    from hipgen.phantom.render import render_phantom
    from hipgen.phantom.spec import image_seed, spec_for_seed

    return [
        render_phantom(
            spec_for_seed("population", image_seed(7, i), image_size=size), image_seed(7, i)
        ).pixels
        for i in range(n)
    ]


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _torch_measurer(repo: Path):  # noqa: ANN202
    import torch

    from hipgen.angle.measure import AngleMeasurer, MeasurerConfig
    from hipgen.inference.backend import read_manifest
    from training.angle.models import KeypointNet
    from training.angle.train import TorchModelFn

    m_kp, m_loc = read_manifest(repo, "angle_keypoints"), read_manifest(repo, "angle_locator")
    pipe = m_kp["pipeline"]
    torch.manual_seed(0)

    def net(m: dict, extras: bool, size: int) -> KeypointNet:
        a = m["architecture"]
        return KeypointNet(
            a["backbone"],
            2,
            input_size=size,
            head=a["head"],
            extras=extras,
            width=a.get("width", 128 if extras else 64),
        ).eval()

    cfg = MeasurerConfig.from_pipeline(pipe)  # the same geometry and test frames as the ONNX paths
    run_locator = TorchModelFn(net(m_loc, False, cfg.locator_size))

    def locator(x: np.ndarray) -> dict[str, np.ndarray]:
        """Runs the random-weight locator (its cost is what is timed), then reports heads where a
        trained one would — at 30 % and 70 % across the input — so the crops that follow are the
        deployed pipeline's and never degenerate."""
        run_locator(x)
        s = cfg.locator_size
        heads = np.array([[0.3 * s, 0.5 * s], [0.7 * s, 0.5 * s]], np.float32)
        return {"keypoints": np.broadcast_to(heads, (len(x), 2, 2)).copy()}

    return AngleMeasurer(locator, TorchModelFn(net(m_kp, True, cfg.crop_size)), cfg)


def _grpc_clients(repo: Path):  # noqa: ANN202
    import grpc

    from hipgen.api.v1 import angle_pb2, angle_pb2_grpc, common_pb2
    from hipgen.data.images import encode_png
    from hipgen.settings import get_settings
    from services.server import build_server

    settings = get_settings(model_repository=repo)
    server, port = build_server(settings, port=0, host="127.0.0.1")
    server.start()
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}",
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)],
    )
    stub = angle_pb2_grpc.AngleServiceStub(channel)

    def request(img: np.ndarray) -> angle_pb2.PredictAngleRequest:
        return angle_pb2.PredictAngleRequest(
            image=common_pb2.Image(data=encode_png(img, bits=16), file_name="bench.png")
        )

    def one(img_req) -> None:  # noqa: ANN001
        stub.PredictAngle(img_req, timeout=60)

    def many(reqs) -> None:  # noqa: ANN001
        items = (angle_pb2.StreamPredictAngleRequest(item_id=str(i), request=r) for i, r in enumerate(reqs))
        for resp in stub.StreamPredictAngle(items, timeout=120):
            if resp.HasField("error"):
                raise RuntimeError(resp.error.message)

    return request, one, many, lambda: (channel.close(), server.stop(None))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path("model_repository"))
    ap.add_argument("--size", type=int, default=1024, help="upright width of the test phantoms (px)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args(argv)

    from hipgen.angle.measure import measurer_from_backend
    from hipgen.inference.backend import OrtBackend

    images = _images(16, args.size)
    ways: dict[str, dict[int, Callable[[], object]]] = {}
    try:
        tm = _torch_measurer(args.repo)
        ways["pytorch eager"] = {1: lambda: tm.measure(images[:1]), 16: lambda: tm.measure(images)}
    except ImportError:
        print("(torch not installed: PyTorch eager skipped — make setup-train)")
    om = measurer_from_backend(OrtBackend(args.repo))
    ways["onnxruntime in-process"] = {1: lambda: om.measure(images[:1]), 16: lambda: om.measure(images)}
    request, one, many, close = _grpc_clients(args.repo)
    reqs = [request(im) for im in images]
    ways["AngleService gRPC"] = {1: lambda: one(reqs[0]), 16: lambda: many(reqs)}

    rows = []
    try:
        for name, by_batch in ways.items():
            for batch, fn in by_batch.items():
                s = _time(fn, args.repeats)
                rows.append({"way": name, "batch": batch, "latency_ms": 1000 * s, "images_per_s": batch / s})
    finally:
        close()
    ref = {r["batch"]: r["images_per_s"] for r in rows if r["way"] == "onnxruntime in-process"}
    print(
        f"angle measurement, {args.size}-px phantoms, median of {args.repeats}; "
        "ratio = images/s vs ONNX Runtime in-process at the same batch"
    )
    print("| way | batch | latency ms/call | images/s | ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['way']} | {r['batch']} | {r['latency_ms']:.0f} | {r['images_per_s']:.2f} | "
            f"{r['images_per_s'] / ref[r['batch']]:.2f}× |"
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
