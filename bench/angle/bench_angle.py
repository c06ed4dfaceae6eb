"""Angle measurement throughput and latency, every way hipgen runs it, side by side in one run.

Ratios, not absolute numbers, are the claim (these machines are shared and noisy). The ways:

- PyTorch eager (the training modules, same architecture as the committed models; random weights —
  speed does not depend on the values),
- ONNX Runtime in-process (``OrtBackend`` over ``model_repository/``),
- TritonBackend in-process (``TritonBackend`` against a real ``tritonserver`` on 127.0.0.1 serving the
  angle models through its python backend, the CPU build the ``nvidia-pytriton`` wheel ships),
- AngleService over gRPC on 127.0.0.1 (PNG-encoded images: decode + measure + encode), on ONNX Runtime
  and on that Triton server (``HIPGEN_BACKEND=triton``),
- the gateway in front of AngleService (the same calls, proxied as bytes),
- BentoML over HTTP (``bench/angle/bento_service.py`` in ``.venv-bento``: the same models and measurer
  behind BentoML 1.4, multipart PNG in, JSON out) — the baseline deployment of issue 10 (e).

Batch 1 is one image per call (``measure`` on 1, PredictAngle, BentoML ``/predict``); batch 16 is 16
images per call (``measure`` on 16, one StreamPredictAngle of 16 items, one BentoML ``/predict_many``
request with 16 files). Each cell is the median of ``--repeats`` calls after one warm-up; the ratio is
images/s over ONNX Runtime in-process at the same batch.

A second table compares AngleService (gRPC, ONNX Runtime) with BentoML on the same ``--calls``
single-image calls: one client calling in turn, then 16 concurrent clients (PredictAngle ×16 in flight
vs ``/predict`` ×16 in flight; neither batches across requests) — p50/p95 latency per call and images/s.

A way that cannot run here (no torch, no ``tritonserver``, no ``.venv-bento``) is skipped with the
reason, printed and kept in the JSON; nothing is estimated. Results go to ``<out>/bench_angle.json`` and
``.md``. ``--device cuda`` runs PyTorch and in-process ONNX Runtime on the GPU where one is usable (the
services keep ONNX Runtime on the CPU: their settings have no execution-provider option) and says so.
Usage::

    python bench/angle/bench_angle.py [--repo model_repository] [--size 1024] [--repeats 3] \
        [--calls 50] [--device cpu|cuda] [--out out/bench/angle]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench.common, when run as a script

from bench.common import markdown_table, start, write_results  # noqa: E402

BENTO_VENV = ROOT / ".venv-bento"
ANGLE_MODELS = ["angle_locator", "angle_keypoints"]
CONCURRENT = 16  # clients in flight in the concurrent comparison (the batch-16 size)
READY_TIMEOUT_S = 120.0


class Skip(Exception):  # noqa: N818 (not an error: a way this machine cannot run)
    """A way that cannot run here; the message says why and how to make it run."""


@dataclass
class Way:
    """One way to measure: ``calls[batch]`` measures ``batch`` images once; ``single(i)`` measures image
    ``i`` alone with one request (for the per-call latency comparison), where the way has requests."""

    calls: dict[int, Callable[[], object]]
    single: Callable[[int], object] | None = None
    notes: list[str] = field(default_factory=list)


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


# --- devices ----------------------------------------------------------------------------------------------
@dataclass
class Devices:
    torch: str  # "cpu" or "cuda"
    ort_providers: list[str]
    notes: list[str]


def _devices(requested: str) -> Devices:
    """What runs where for ``--device``; on ``cuda`` each part falls back to the CPU, saying why."""
    if requested == "cpu":
        return Devices("cpu", ["CPUExecutionProvider"], [])
    import onnxruntime as ort

    notes = []
    try:
        import torch

        torch_dev = "cuda" if torch.cuda.is_available() else "cpu"
        if torch_dev == "cpu":
            notes.append("--device cuda: torch sees no CUDA GPU here, PyTorch eager runs on the CPU")
    except ImportError:
        torch_dev = "cpu"
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
        notes.append(
            "--device cuda: this onnxruntime has no CUDAExecutionProvider (the onnxruntime-gpu wheel and a "
            f"GPU are needed; available: {', '.join(ort.get_available_providers())}), "
            "ONNX Runtime in-process runs on the CPU"
        )
    notes.append(
        "--device cuda: AngleService, the gateway and BentoML run ONNX Runtime on the CPU "
        "(hipgen.inference.make_backend has no execution-provider setting); Triton serves the CPU "
        "python-backend repository (the nvidia-pytriton wheel's tritonserver has no GPU onnxruntime backend)"
    )
    return Devices(torch_dev, providers, notes)


# --- the ways ---------------------------------------------------------------------------------------------
def _torch_fn(net, device: str) -> Callable[[np.ndarray], dict[str, np.ndarray]]:  # noqa: ANN001
    """The net as the numpy callable the measurer takes. On the CPU that is training's TorchModelFn; it
    has no device, so on CUDA this mirrors it (same outputs: no heatmaps, sigmoid of the logit) with the
    tensors moved to and from the GPU — the transfer is part of what eager PyTorch costs there."""
    import torch

    from training.angle.train import TorchModelFn

    if device == "cpu":
        return TorchModelFn(net)
    net = net.to(device).eval()

    @torch.no_grad()
    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        o = net(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device))
        o = {k: v for k, v in o.items() if k != "heatmaps"}
        if "logit" in o:
            o["prob_big"] = torch.sigmoid(o.pop("logit"))
        return {k: v.cpu().numpy() for k, v in o.items()}

    return run


def _torch_measurer(repo: Path, device: str = "cpu"):  # noqa: ANN202
    import torch

    from hipgen.angle.measure import AngleMeasurer, MeasurerConfig
    from hipgen.inference.backend import read_manifest
    from training.angle.models import KeypointNet

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
    run_locator = _torch_fn(net(m_loc, False, cfg.locator_size), device)

    def locator(x: np.ndarray) -> dict[str, np.ndarray]:
        """Runs the random-weight locator (its cost is what is timed), then reports heads where a
        trained one would — at 30 % and 70 % across the input — so the crops that follow are the
        deployed pipeline's and never degenerate."""
        run_locator(x)
        s = cfg.locator_size
        heads = np.array([[0.3 * s, 0.5 * s], [0.7 * s, 0.5 * s]], np.float32)
        return {"keypoints": np.broadcast_to(heads, (len(x), 2, 2)).copy()}

    return AngleMeasurer(locator, _torch_fn(net(m_kp, True, cfg.crop_size), device), cfg)


def _measurer_way(measurer, images: list[np.ndarray]) -> Way:  # noqa: ANN001
    return Way({1: lambda: measurer.measure(images[:1]), 16: lambda: measurer.measure(images)})


@contextlib.contextmanager
def pytorch_eager(repo: Path, images: list[np.ndarray], devices: Devices) -> Iterator[Way]:
    try:
        tm = _torch_measurer(repo, devices.torch)
    except ImportError as e:
        raise Skip(f"torch is not installed ({e}): make setup-train") from None
    yield _measurer_way(tm, images)


@contextlib.contextmanager
def ort_in_process(repo: Path, images: list[np.ndarray], devices: Devices) -> Iterator[Way]:
    from hipgen.angle.measure import measurer_from_backend
    from hipgen.inference.backend import OrtBackend

    yield _measurer_way(measurer_from_backend(OrtBackend(repo, providers=devices.ort_providers)), images)


@contextlib.contextmanager
def tritonserver(repo: Path) -> Iterator[str]:
    """A real CPU tritonserver on 127.0.0.1 serving the angle models (python backend); its gRPC URL."""
    from hipgen.inference import triton_repo, tritonserver

    try:
        tritonserver.tritonserver_home()
    except tritonserver.TritonServerNotInstalledError as e:
        raise Skip(f"{e} (make setup-train installs it)") from None
    with tempfile.TemporaryDirectory(prefix="hipgen-bench-triton-") as served:
        triton_repo.build_repository(repo, served, "python", models=ANGLE_MODELS)
        with tritonserver.running_tritonserver(served, ready_timeout_s=READY_TIMEOUT_S) as url:
            yield url


@contextlib.contextmanager
def triton_in_process(url: str, images: list[np.ndarray]) -> Iterator[Way]:
    from hipgen.angle.measure import measurer_from_backend
    from hipgen.inference.triton import TritonBackend

    with TritonBackend(url) as backend:
        yield _measurer_way(measurer_from_backend(backend), images)


@contextlib.contextmanager
def _process(name: str, args: tuple[str, ...], env: dict[str, str], ready: str) -> Iterator[str]:
    """A hipgen server process (bench.common.start) on 127.0.0.1, stopped at the end; its address. A
    process of its own, as deployed (and as BentoML runs): it shares no GIL with the timing client."""
    proc = start(name, args, env, ready)
    try:
        yield proc.address
    finally:
        proc.stop()


def angle_server(repo: Path, triton_url: str | None = None) -> contextlib.AbstractContextManager[str]:
    """``python -m services.server --services angle`` on ONNX Runtime, or on Triton at ``triton_url``."""
    env = {"HIPGEN_MODEL_REPOSITORY": str(repo.resolve())}
    if triton_url:
        env |= {"HIPGEN_BACKEND": "triton", "HIPGEN_TRITON_URL": triton_url}
    return _process("angle", ("services.server", "--services", "angle"), env, "server listening")


@contextlib.contextmanager
def gateway(angle_address: str) -> Iterator[str]:
    """``python -m services.gateway`` in front of ``angle_address`` (its job store in a temporary
    directory; GenerateService and ScoreService are never called here)."""
    with tempfile.TemporaryDirectory(prefix="hipgen-bench-gateway-") as tmp:
        env = {
            "HIPGEN_ANGLE_ADDRESS": angle_address,
            "HIPGEN_GENERATE_ADDRESS": angle_address,
            "HIPGEN_SCORE_ADDRESS": angle_address,
            "HIPGEN_DATASET_DB_URL": f"sqlite:///{tmp}/jobs.db",
            "HIPGEN_DATASET_OUTPUT_ROOT": tmp,
        }
        with _process("gateway", ("services.gateway",), env, "gateway listening") as address:
            yield address


class Shared:
    """A resource consecutive ways share (one tritonserver for both Triton rows): entered on first use,
    left by :meth:`close`; a Skip is remembered, so the second way skips without trying again."""

    def __init__(self, factory: Callable[[], contextlib.AbstractContextManager[str]]) -> None:
        self._factory, self._stack = factory, contextlib.ExitStack()
        self._value: str | None = None
        self._skip: str | None = None

    def get(self) -> str:
        if self._skip is not None:
            raise Skip(self._skip)
        if self._value is None:
            try:
                self._value = self._stack.enter_context(self._factory())
            except Skip as e:
                self._skip = str(e)
                raise
        return self._value

    def close(self) -> None:
        self._stack.close()
        self._value = None


@contextlib.contextmanager
def grpc_way(address: str, pngs: list[bytes]) -> Iterator[Way]:
    """PredictAngle (batch 1) and one StreamPredictAngle of 16 (batch 16) against ``address``."""
    import grpc

    from hipgen.api.v1 import angle_pb2, angle_pb2_grpc, common_pb2

    reqs = [
        angle_pb2.PredictAngleRequest(image=common_pb2.Image(data=p, file_name=f"bench-{i}.png"))
        for i, p in enumerate(pngs)
    ]
    channel = grpc.insecure_channel(
        address,
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)],
    )
    stub = angle_pb2_grpc.AngleServiceStub(channel)

    def one(i: int) -> None:
        stub.PredictAngle(reqs[i % len(reqs)], timeout=120)

    def many() -> None:
        items = (angle_pb2.StreamPredictAngleRequest(item_id=str(i), request=r) for i, r in enumerate(reqs))
        answers = 0
        for resp in stub.StreamPredictAngle(items, timeout=300):
            if resp.HasField("error"):
                raise RuntimeError(resp.error.message)
            answers += 1
        assert answers == len(reqs), f"{answers} answers to {len(reqs)} images"

    try:
        yield Way({1: lambda: one(0), 16: many}, single=one)
    finally:
        channel.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def bento_server(repo: Path) -> Iterator[str]:
    """``bentoml serve`` of bench/angle/bento_service.py from ``.venv-bento`` on 127.0.0.1; its base URL.
    Waits for ``/readyz`` (bounded), stops it (SIGTERM, then SIGKILL of its process group) at the end."""
    import httpx

    python = BENTO_VENV / "bin" / "python"
    if not python.is_file():
        raise Skip(
            f"no {BENTO_VENV.name}/ (BentoML lives in its own venv): make .venv/.stamps/bento, or "
            f"python3.11 -m venv {BENTO_VENV.name} && {BENTO_VENV.name}/bin/pip install bentoml==1.4.40 "
            "onnxruntime numpy pillow opencv-python-headless pydantic-settings && "
            f"{BENTO_VENV.name}/bin/pip install --no-deps -e ."
        )
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="hipgen-bench-bento-") as tmp:
        env = {
            **os.environ,
            "HIPGEN_MODEL_REPOSITORY": str(repo.resolve()),
            "BENTOML_HOME": f"{tmp}/home",  # its model store, temp files and metrics dir: not ~/bentoml
            "BENTOML_DO_NOT_TRACK": "True",  # no usage reports (nothing leaves 127.0.0.1)
            "NO_PROXY": "127.0.0.1,localhost",
        }
        cmd = [
            str(python),
            "-m",
            "bentoml",
            "serve",
            "bento_service:AngleBento",
            "--working-dir",
            str(Path(__file__).resolve().parent),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        log = Path(tmp) / "bento.log"
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            with httpx.Client(trust_env=False, timeout=2) as probe:
                while True:
                    if proc.poll() is not None:
                        tail = log.read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"bentoml serve exited ({proc.returncode}):\n{tail}")
                    with contextlib.suppress(httpx.HTTPError):
                        if probe.get(f"{url}/readyz").status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"bentoml serve not ready in {READY_TIMEOUT_S:g} s")
                    time.sleep(0.2)
            yield url
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)


@contextlib.contextmanager
def bento_way(url: str, pngs: list[bytes]) -> Iterator[Way]:
    """``/predict`` (batch 1) and ``/predict_many`` with 16 files (batch 16), multipart PNG bytes."""
    import httpx

    limits = httpx.Limits(max_connections=2 * CONCURRENT, max_keepalive_connections=2 * CONCURRENT)
    with httpx.Client(base_url=url, trust_env=False, timeout=300, limits=limits) as client:

        def one(i: int) -> None:
            files = {"image": (f"bench-{i}.png", pngs[i % len(pngs)], "image/png")}
            answer = client.post("/predict", files=files).raise_for_status().json()
            assert "na_left" in answer, answer

        def many() -> None:
            files = [("images", (f"bench-{i}.png", p, "image/png")) for i, p in enumerate(pngs)]
            answers = client.post("/predict_many", files=files).raise_for_status().json()
            assert len(answers) == len(pngs), f"{len(answers)} answers to {len(pngs)} images"

        yield Way({1: lambda: one(0), 16: many}, single=one)


# --- per-call latency: AngleService vs BentoML --------------------------------------------------------------
def _latencies(single: Callable[[int], object], calls: int, clients: int) -> dict[str, float]:
    """``calls`` single-image calls from ``clients`` threads (after a warm-up round): p50/p95 ms per call,
    images/s over the wall time."""
    with ThreadPoolExecutor(clients) as pool:

        def timed(i: int) -> float:
            t = time.perf_counter()
            single(i)
            return time.perf_counter() - t

        list(pool.map(timed, range(clients)))  # warm-up: every client's connection and thread
        t0 = time.perf_counter()
        times = list(pool.map(timed, range(calls)))
        wall = time.perf_counter() - t0
    ms = 1000 * np.asarray(times)
    return {
        "calls": calls,
        "clients": clients,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "images_per_s": calls / wall,
    }


def _ratio(v: float) -> str:
    return "–" if np.isnan(v) else f"{v:.2f}×"


def _tables(
    args: argparse.Namespace,
    rows: list[dict],
    latency: dict[str, dict[str, dict[str, float]]],
    skipped: dict[str, str],
    failed: dict[str, str],
    notes: list[str],
) -> str:
    """The markdown: every way, what did not run and why, then AngleService vs BentoML."""
    parts = [
        f"angle measurement, {args.size}-px phantoms, median of {args.repeats} calls after a warm-up; "
        "batch 16 = 16 images in one call (measure / StreamPredictAngle / BentoML /predict_many); "
        "ratio = images/s vs ONNX Runtime in-process at the same batch",
        "",
        markdown_table(
            ["way", "batch", "latency ms/call", "images/s", "ratio vs ORT in-process"],
            [
                [r["way"], r["batch"], r["latency_ms"], r["images_per_s"], _ratio(r["ratio_vs_ort"])]
                for r in rows
            ],
        ),
    ]
    parts += [f"\nskipped: {k} — {v}" for k, v in skipped.items()]
    parts += [f"\nFAILED: {k} — {v}" for k, v in failed.items()]
    parts += [f"\n{n}" for n in notes]
    if set(latency) == {"AngleService", "BentoML"}:
        a, b = latency["AngleService"], latency["BentoML"]
        parts += [
            "",
            f"AngleService (gRPC, PredictAngle) vs BentoML (HTTP, /predict): {args.calls} single-image calls "
            f"({args.size}-px 16-bit PNG) per row, from one client or {CONCURRENT} concurrent ones; each a "
            "server process with 8 request threads over ONNX Runtime; ratio = AngleService images/s ÷ "
            "BentoML images/s",
            "",
            markdown_table(
                ["clients", "AngleService p50 ms", "p95 ms", "images/s"]
                + ["BentoML p50 ms", "p95 ms", "images/s", "ratio"],
                [
                    [load]
                    + [x[load][k] for x in (a, b) for k in ("p50_ms", "p95_ms", "images_per_s")]
                    + [_ratio(a[load]["images_per_s"] / b[load]["images_per_s"])]
                    for load in a
                ],
            ),
        ]
    return "\n".join(parts)


# --- main -------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path("model_repository"))
    ap.add_argument("--size", type=int, default=1024, help="upright width of the test phantoms (px)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calls", type=int, default=50, help="single-image calls per AngleService/BentoML run")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out", type=Path, default=Path("out/bench/angle"))
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args(argv)

    from hipgen.data.images import encode_png

    devices = _devices(args.device)
    for note in devices.notes:
        print(note, flush=True)
    images = _images(16, args.size)
    pngs = [encode_png(im, bits=16) for im in images]
    repo = args.repo
    triton = Shared(lambda: tritonserver(repo))

    # Each way is started just before it is timed and stopped after, so idle servers do not share the
    # CPU cores with the one being measured; the two Triton rows share one tritonserver.
    ways: list[tuple[str, Callable[[contextlib.ExitStack], contextlib.AbstractContextManager[Way]]]] = [
        ("pytorch eager", lambda s: pytorch_eager(repo, images, devices)),
        ("onnxruntime in-process", lambda s: ort_in_process(repo, images, devices)),
        ("TritonBackend in-process", lambda s: triton_in_process(triton.get(), images)),
        (
            "AngleService gRPC (Triton)",
            lambda s: grpc_way(s.enter_context(angle_server(repo, triton.get())), pngs),
        ),
        ("AngleService gRPC (ORT)", lambda s: grpc_way(s.enter_context(angle_server(repo)), pngs)),
        (
            "gateway → AngleService (ORT)",
            lambda s: grpc_way(s.enter_context(gateway(s.enter_context(angle_server(repo)))), pngs),
        ),
        ("BentoML HTTP (ORT)", lambda s: bento_way(s.enter_context(bento_server(repo)), pngs)),
    ]
    compared = {"AngleService gRPC (ORT)": "AngleService", "BentoML HTTP (ORT)": "BentoML"}
    after = {"AngleService gRPC (Triton)": triton.close}

    rows: list[dict] = []
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    latency: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for name, make in ways:
            label = name
            if (name == "pytorch eager" and devices.torch == "cuda") or (
                name == "onnxruntime in-process" and devices.ort_providers[0] == "CUDAExecutionProvider"
            ):
                label = f"{name} [cuda]"
            print(f"… {label}", flush=True)
            try:
                with contextlib.ExitStack() as stack:
                    way = stack.enter_context(make(stack))
                    for batch, fn in way.calls.items():
                        t = _time(fn, args.repeats)
                        rows.append(
                            {"way": label, "batch": batch, "latency_ms": 1000 * t, "images_per_s": batch / t}
                        )
                    if name in compared and way.single is not None:
                        latency[compared[name]] = {
                            f"{clients} client{'s' * (clients > 1)}": _latencies(
                                way.single, args.calls, clients
                            )
                            for clients in (1, CONCURRENT)
                        }
            except Skip as e:
                skipped[label] = str(e)
                print(f"   skipped: {e}", flush=True)
            except (Exception, SystemExit) as e:  # noqa: BLE001 — a broken way must not hide the others
                failed[label] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
                print(f"   FAILED: {failed[label]}", flush=True)
            finally:
                if name in after:
                    after[name]()
    finally:
        triton.close()
    ref = {r["batch"]: r["images_per_s"] for r in rows if r["way"].startswith("onnxruntime in-process")}
    for r in rows:
        r["ratio_vs_ort"] = r["images_per_s"] / ref[r["batch"]] if r["batch"] in ref else float("nan")

    table = _tables(args, rows, latency, skipped, failed, devices.notes)
    results = {
        "config": {
            "size": args.size,
            "repeats": args.repeats,
            "calls": args.calls,
            "device": args.device,
            "torch_device": devices.torch,
            "ort_providers": devices.ort_providers,
            "cpus": os.cpu_count(),
        },
        "rows": rows,
        "angle_service_vs_bentoml": latency,
        "skipped": skipped,
        "failed": failed,
        "notes": devices.notes,
    }
    write_results(args.out, "bench_angle", results, table)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
