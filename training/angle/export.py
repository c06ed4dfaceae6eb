"""Export trained angle models to the model repository (Triton layout, also what ``OrtBackend`` loads):
``<repo>/<name>/1/model.onnx`` (dynamic batch, opset 17), ``<name>/config.pbtxt`` and
``<name>/MANIFEST.json`` — a MONAI-bundle-style description: inputs, outputs, units, preprocessing,
training data, intended use, metrics, the exact command, and the sha256 of the ONNX file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hipgen import __version__
from hipgen.anatomy import DEFAULT_THRESHOLD_DEG
from hipgen.angle.geometry import CROP_SPAN
from hipgen.angle.measure import DEFAULT_ANGLE_MODEL, DEFAULT_LOCATOR_MODEL
from training.angle.models import ExportWrapper, KeypointNet, parameter_count
from training.angle.train import TrainConfig
from training.repository import install, partial_dir, sha256

OPSET = 17
LOCATOR_NAME = DEFAULT_LOCATOR_MODEL
KEYPOINTS_NAME = DEFAULT_ANGLE_MODEL


def output_names(net: KeypointNet) -> list[str]:
    return ["keypoints", "radius", "prob_big"] if net.extras else ["keypoints"]


def export_onnx(net: KeypointNet, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = net.input_size
    names = output_names(net)
    wrapper = ExportWrapper(net).eval()
    torch.onnx.export(
        wrapper,
        (torch.zeros(2, 1, s, s),),
        str(path),
        input_names=["image"],
        output_names=names,
        dynamic_axes={n: {0: "batch"} for n in ["image", *names]},
        opset_version=OPSET,
        dynamo=False,
    )
    return path


def parity(net: KeypointNet, onnx_path: str | Path, x: np.ndarray) -> dict[str, float]:
    """Max |PyTorch − ONNX Runtime| per output on ``x``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_out = dict(zip(output_names(net), sess.run(None, {"image": x.astype(np.float32)}), strict=True))
    with torch.no_grad():
        ref = ExportWrapper(net.eval())(torch.from_numpy(x.astype(np.float32)))
    return {
        n: float(np.abs(ort_out[n] - r.numpy()).max()) for n, r in zip(output_names(net), ref, strict=True)
    }


def config_pbtxt(name: str, net: KeypointNet, *, max_batch: int = 32, instances: int = 1) -> str:
    """Triton config: dynamic batching with preferred sizes and a short queue delay (latency first)."""
    s = net.input_size
    dims = {"keypoints": "[ 2, 2 ]", "radius": "[ 1 ]", "prob_big": "[ 1 ]"}
    outs = ",\n".join(
        f'  {{\n    name: "{n}"\n    data_type: TYPE_FP32\n    dims: {dims[n]}\n  }}'
        for n in output_names(net)
    )
    return (
        f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: {max_batch}\n'
        f'input [\n  {{\n    name: "image"\n    data_type: TYPE_FP32\n    dims: [ 1, {s}, {s} ]\n  }}\n]\n'
        f"output [\n{outs}\n]\n"
        "dynamic_batching {\n  preferred_batch_size: [ 4, 8, 16 ]\n  max_queue_delay_microseconds: 2000\n}\n"
        f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_CPU\n  }}\n]\n"
    )


def _io(net: KeypointNet) -> tuple[dict[str, Any], dict[str, Any]]:
    s = net.input_size
    crop = net.extras
    inputs = {
        "image": {
            "dtype": "float32",
            "shape": ["batch", 1, s, s],
            "range": [0, 1],
            "meaning": (
                "one hip frame: head centre at the crop centre, x towards the other head, y caudal, "
                "mirrored for the left hip; side = crop_span × inter-head distance"
                if crop
                else "whole radiograph letterboxed (longer side scaled to the input, centred, zero padded)"
            ),
        }
    }
    outputs = {
        "keypoints": {
            "dtype": "float32",
            "shape": ["batch", 2, 2],
            "unit": "input pixels (x, y)",
            "meaning": "[head centre, craniolateral rim]" if crop else "[patient's right head, left head]",
        }
    }
    if crop:
        outputs["radius"] = {
            "dtype": "float32",
            "shape": ["batch", 1],
            "unit": "input pixels",
            "meaning": "femoral head radius",
        }
        outputs["prob_big"] = {
            "dtype": "float32",
            "shape": ["batch", 1],
            "unit": "probability",
            "meaning": "P(NA ≥ 105°), this hip",
        }
    return inputs, outputs


def write_model(
    repo: str | Path,
    name: str,
    net: KeypointNet,
    config: TrainConfig,
    *,
    version: str,
    command: str,
    data: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    pipeline: dict[str, Any] | None = None,
    parity_max: dict[str, float] | None = None,
) -> Path:
    """Write one model entry; returns its directory. Written beside the live entry and swapped in at
    the end, so a failed export leaves the old model whole and no stale version folder survives."""
    model_dir = partial_dir(repo, name)
    onnx_path = export_onnx(net, model_dir / "1" / "model.onnx")
    if parity_max is None:
        rng = np.random.default_rng(0)
        parity_max = parity(net, onnx_path, rng.random((3, 1, net.input_size, net.input_size), np.float32))
    (model_dir / "config.pbtxt").write_text(config_pbtxt(name, net))
    inputs, outputs = _io(net)
    manifest = {
        "name": name,
        "version": version,
        "hipgen_version": __version__,
        "exported": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "task": "hip keypoints + Big/Small" if net.extras else "femoral head locator",
        "architecture": {
            "backbone": config.backbone,
            "head": config.head,
            "parameters": parameter_count(net),
            "torchvision_init": config.weights or "random",
            "width": config.width,
            "input_size": config.input_size,
        },
        "inputs": inputs,
        "outputs": outputs,
        "preprocessing": {
            "intensity": (
                "float [0,1], bone bright; percentile 1–99 window to [0,1] "
                "(hipgen.angle.geometry.normalize_intensity)"
            ),
            "geometry": "hipgen.angle.geometry.hip_frame + hip_crop"
            if net.extras
            else "hipgen.angle.geometry.letterbox",
        },
        "pipeline": pipeline or {},
        "training": {
            "command": command,
            "seed": config.seed,
            "steps": config.steps,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "data": data,
        },
        "metrics": metrics or {},
        "evaluation": evaluation or {},
        "onnx": {"opset": OPSET, "dynamic_batch": True, "parity_max_abs": parity_max},
        "files": {"1/model.onnx": {"sha256": sha256(onnx_path), "bytes": onnx_path.stat().st_size}},
        "intended_use": (
            "research only: Norberg-angle measurement on ventrodorsal hip-extended canine radiographs. "
            "Trained on procedural phantoms, not on patients; not a medical device."
        ),
        "license": "Apache-2.0",
    }
    (model_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return install(model_dir, repo, name)


def lineage(run: Path) -> list[dict[str, Any]]:
    """The training stages behind a run, earliest first: a run made with ``--resume`` continued another
    run's weights, so its data and command alone would under-report what the model saw. ``resume`` is
    stored as typed (relative to where training ran); a moved ``runs/`` is searched beside ``run``."""
    stages: list[dict[str, Any]] = []
    seen: set[Path] = set()
    while run.resolve() not in seen:
        seen.add(run.resolve())
        if not (run / "eval.json").is_file():
            stages.insert(0, {"run": str(run), "missing": "run folder not found; its stages are unknown"})
            break
        report = json.loads((run / "eval.json").read_text())
        recipe = report.get("recipe", {})
        stages.insert(
            0,
            {
                "run": run.resolve().name,
                "command": report.get("command", ""),
                "data": recipe.get("data") or "phantom (uniform NA 70–130°, unmirrored)",
                "images": report.get("train_images"),
                "seed": recipe.get("seed"),
                "render_sizes": report.get("train_sizes"),
                "steps": {"locator": recipe.get("locator_steps"), "keypoints": recipe.get("keypoint_steps")},
            },
        )
        if not recipe.get("resume"):
            break
        prior = Path(recipe["resume"])
        if not prior.is_absolute() and not (prior / "eval.json").is_file():
            prior = run.parent / prior.name
        run = prior
    return stages


def training_facts(stages: list[dict[str, Any]], task: str) -> tuple[str, dict[str, Any]]:
    """(command, data) for one model: only the stages that trained it (a stage with 0 steps for a task
    reused the previous weights), so the locator is not credited with the keypoint model's fine-tunes."""
    own = [st for st in stages if "missing" in st or (st.get("steps") or {}).get(task) != 0]
    trained = [st for st in own if "missing" not in st]
    data = {
        "source": trained[-1]["data"] if trained else "unknown",
        "images": sum(st.get("images") or 0 for st in trained),
        "stages": own,
    }
    return (trained[-1]["command"] if trained else ""), data


def export_run(
    run: str | Path, repo: str | Path, *, version: str | None = None, test_frames: int = 4
) -> list[Path]:
    """Export a ``hipgen train angle`` run folder (locator + keypoint model) with its evaluation. The
    run's metrics were measured in PyTorch with one test frame; the MANIFEST says so, and
    ``hipgen evaluate angle --record`` replaces them with the deployed pipeline's."""
    from training.angle.train import load

    run = Path(run)
    report = json.loads((run / "eval.json").read_text()) if (run / "eval.json").is_file() else {}
    version = version or datetime.now(UTC).strftime("%Y.%m.%d")
    stages = lineage(run)
    loc_command, loc_data = training_facts(stages, "locator")
    kp_command, kp_data = training_facts(stages, "keypoints")
    loc, loc_cfg = load(run / "locator")
    kp, kp_cfg = load(run / "keypoints")
    pipeline = {
        "locator": LOCATOR_NAME,
        "locator_size": loc_cfg.input_size,
        "crop_size": kp_cfg.input_size,
        "crop_span": kp_cfg.crop_span or CROP_SPAN,
        "refine_passes": 2,
        "test_frames": test_frames,
        "big_threshold_deg": DEFAULT_THRESHOLD_DEG,
    }
    metrics = report.get("eval", {})
    evaluation = {
        "command": report.get("command", ""),
        "runtime": "pytorch",
        "test_frames": 1,
        "sets": "fresh phantoms never used in training (at the end of training)",
    }
    return [
        write_model(repo, LOCATOR_NAME, loc, loc_cfg, version=version, command=loc_command, data=loc_data),
        write_model(
            repo,
            KEYPOINTS_NAME,
            kp,
            kp_cfg,
            version=version,
            command=kp_command,
            data=kp_data,
            metrics=metrics,
            evaluation=evaluation if metrics else None,
            pipeline=pipeline,
        ),
    ]
