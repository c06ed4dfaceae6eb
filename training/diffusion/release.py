"""``hipgen export generator``: a training (or distillation) run → ``model_repository/<name>/`` with
``1/model.onnx`` (dynamic batch), ``config.pbtxt`` and a MANIFEST whose ``generator`` section is what
:class:`hipgen.generate.generator.GeneratorSpec` reads (size, NA range, noise schedule, samplers and
their defaults). Fidelity metrics are added by ``hipgen evaluate generator --record``."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hipgen import __version__
from hipgen.generate.generator import DEFAULT_STEPS, GeneratorSpec
from hipgen.generate.sampling import SamplingPlan, sample
from training.diffusion.export import OPSET, export_unet, ort_model
from training.diffusion.model import torch_model_fn
from training.diffusion.recipe import schedule_of
from training.diffusion.train import load
from training.repository import install, partial_dir, sha256

DEFAULT_GUIDANCE = 2.0  # the teacher's CFG scale (the sample grids' too)


def spec_version() -> str:
    return datetime.now(UTC).strftime("%Y.%m.%d")


def config_pbtxt(name: str, size: int, *, channels: int = 1, max_batch: int = 16, instances: int = 1) -> str:
    """Triton config for the UNet. ``timestep`` and ``keep`` are (B,) in the graph: Triton's per-item
    dims cannot be empty, so they are declared ``[ 1 ]`` and reshaped to scalars per item."""

    def tensor(n: str, dtype: str, dims: str, reshape: bool = False) -> str:
        extra = "\n    reshape: { shape: [ ] }" if reshape else ""
        return f'  {{\n    name: "{n}"\n    data_type: {dtype}\n    dims: {dims}{extra}\n  }}'

    inputs = ",\n".join(
        [
            tensor("sample", "TYPE_FP32", f"[ {channels}, {size}, {size} ]"),
            tensor("timestep", "TYPE_INT64", "[ 1 ]", reshape=True),
            tensor("na", "TYPE_FP32", "[ 2 ]"),
            tensor("keep", "TYPE_BOOL", "[ 1 ]", reshape=True),
        ]
    )
    return (
        f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: {max_batch}\n'
        f"input [\n{inputs}\n]\n"
        f"output [\n{tensor('noise', 'TYPE_FP32', f'[ {channels}, {size}, {size} ]')}\n]\n"
        "dynamic_batching {\n  preferred_batch_size: [ 2, 8, 16 ]\n  max_queue_delay_microseconds: 500\n}\n"
        f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_CPU\n  }}\n]\n"
    )


def _parity(model: torch.nn.Module, onnx_path: Path, spec: GeneratorSpec, sampler: str) -> float:
    """Largest |PyTorch − ORT| pixel (model range [-1, 1]) over a short guided sampling run."""
    na = np.array([[-0.5, 0.5], [0.3, -0.2]], np.float32)
    plan = SamplingPlan(na, [0, 1], sampler=sampler, steps=4, guidance_scale=spec.default_guidance)  # type: ignore[arg-type]
    c, size = (spec.latent["channels"], spec.latent["size"]) if spec.latent else (1, spec.size)
    ref = sample(torch_model_fn(model), spec.schedule, plan, size, channels=c)
    got = sample(ort_model(onnx_path), spec.schedule, plan, size, channels=c)
    return float(np.abs(ref - got).max())


def export_generator(
    run: str | Path, repo: str | Path, name: str, *, version: str | None = None, command: str = ""
) -> Path:
    """Export ``run/model.pt`` (a teacher from ``hipgen train diffusion`` or a student from
    ``hipgen distill``, told apart by ``distill`` in ``model.json``)."""
    run = Path(run)
    model, config = load(run / "model.pt")
    meta = json.loads((run / "model.json").read_text())
    student = "distill" in meta
    schedule = schedule_of(config)
    if student:  # LCMScheduler's grid is the distillation's (T // k points), x0 unclipped as distilled
        d = meta["distill"]
        schedule = replace(
            schedule,
            original_inference_steps=config.num_train_timesteps // int(d["skip"]),
            timestep_scaling=float(d["timestep_scaling"]),
            clip_sample=False,
        )
    spec = GeneratorSpec(
        size=config.size,
        na_range=tuple(config.na_range),  # type: ignore[arg-type]
        schedule=schedule,
        samplers=("lcm",) if student else ("ddim", "ddpm"),
        default_sampler="lcm" if student else "ddim",
        default_steps={"lcm": DEFAULT_STEPS["lcm"]}
        if student
        else {k: DEFAULT_STEPS[k] for k in ("ddim", "ddpm")},
        default_guidance=1.0 if student else DEFAULT_GUIDANCE,
    )
    train_report = _json(run / ("distill.json" if student else "train.json"))
    vae_run = _vae_run(run, train_report, student)
    if vae_run is not None:
        size = _export_decoder(vae_run, repo, f"{name}_vae", version or spec_version())
        spec = replace(
            spec,
            size=size,
            latent={"channels": config.channels, "size": config.size, "decoder": f"{name}_vae"},
        )
    model_dir = partial_dir(repo, name)
    onnx_path = export_unet(model, model_dir / "1" / "model.onnx")
    parity = _parity(model, onnx_path, spec, spec.default_sampler)
    (model_dir / "config.pbtxt").write_text(config_pbtxt(name, config.size, channels=config.channels))
    stages = _stages(run)
    s, c = config.size, config.channels
    manifest = {
        "name": name,
        "version": version or spec_version(),
        "hipgen_version": __version__,
        "exported": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "task": (
            "angle-conditioned pixel-space generator, consistency-distilled (LCM)"
            if student
            else "angle-conditioned pixel-space DDPM"
        ),
        "architecture": {
            "unet": "diffusers UNet2DModel, class_embed_type=identity",
            "unet_config": {k: list(v) if isinstance(v, tuple) else v for k, v in model.config.items()},
            "condition": (
                "NA [left, right] scaled to [-1, 1] over na_range → Fourier features → MLP; learned null"
            ),
            "parameters": int(sum(p.numel() for p in model.parameters())),
        },
        "inputs": {
            "sample": {"dtype": "float32", "shape": ["batch", c, s, s], "range": "noisy image (or latent)"},
            "timestep": {"dtype": "int64", "shape": ["batch"], "unit": "training timestep (0–999)"},
            "na": {
                "dtype": "float32",
                "shape": ["batch", 2],
                "meaning": "hipgen.generate.conditions.condition_vector",
            },
            "keep": {
                "dtype": "bool",
                "shape": ["batch"],
                "meaning": "False: the null condition (CFG's unconditional)",
            },
        },
        "outputs": {"noise": {"dtype": "float32", "shape": ["batch", c, s, s], "meaning": "predicted ε"}},
        "generator": spec.manifest_section(),
        "image": {
            "framing": (
                "pelvis view (hipgen.angle.geometry.pelvis_frame): upright, centred between the femoral "
                "heads, side = 2.4 × inter-head distance; patient's left on image right"
            ),
            "range": "[-1, 1] → 8-bit grey",
        },
        "training": {"command": stages[-1]["command"], "seed": stages[-1]["seed"], "stages": stages},
        "metrics": {},
        "onnx": {"opset": OPSET, "dynamic_batch": True, "sampling_parity_max_abs": parity},
        "files": {"1/model.onnx": {"sha256": sha256(onnx_path), "bytes": onnx_path.stat().st_size}},
        "intended_use": (
            "research only: synthetic canine VD hip images at requested Norberg angles, e.g. to augment "
            "angle-model training. Trained on procedural phantoms; every output is marked synthetic."
        ),
        "license": "Apache-2.0",
        "export_command": command,
    }
    (model_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return install(model_dir, repo, name)


def _vae_run(run: Path, report: dict[str, Any], student: bool) -> Path | None:
    """The VAE run a latent teacher was trained on (a student inherits its teacher's)."""
    if student:
        teacher = Path(report.get("teacher", "")).parent
        report = _json(teacher / "train.json")
    vae = (report.get("recipe") or {}).get("vae")
    return Path(vae) if vae else None


def _export_decoder(vae_run: Path, repo: str | Path, name: str, version: str) -> int:
    """The VAE decoder as its own repository entry (Triton runs it after the last step); returns the
    image side."""
    from training.diffusion.vae import export_decoder, load_vae

    vae, scaling, cfg = load_vae(vae_run)
    model_dir = partial_dir(repo, name)
    onnx_path = export_decoder(vae, scaling, model_dir / "1" / "model.onnx")
    h = cfg.size // cfg.factor
    c, z, px = cfg.latent_channels, f"{h}, {h}", f"{cfg.size}, {cfg.size}"
    (model_dir / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 16\n'
        f'input [\n  {{\n    name: "latent"\n    data_type: TYPE_FP32\n    dims: [ {c}, {z} ]\n  }}\n]\n'
        f'output [\n  {{\n    name: "image"\n    data_type: TYPE_FP32\n    dims: [ 1, {px} ]\n  }}\n]\n'
        "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n"
    )
    manifest = {
        "name": name,
        "version": version,
        "task": "AutoencoderKL decoder of the latent generator (scaled latents → image in [-1, 1])",
        "scaling_factor": scaling,
        "vae_config": {
            k: list(v) if isinstance(v, tuple) else v for k, v in vae.config.items() if not k.startswith("_")
        },
        "training": {"run": vae_run.name, "config": _json(vae_run / "vae.json").get("config")},
        "files": {"1/model.onnx": {"sha256": sha256(onnx_path), "bytes": onnx_path.stat().st_size}},
        "intended_use": "research only; part of a synthetic-image generator",
        "license": "Apache-2.0",
    }
    (model_dir / "MANIFEST.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n"
    )
    install(model_dir, repo, name)
    return cfg.size


def _stages(run: Path) -> list[dict[str, Any]]:
    """Every training stage behind a run, earliest first: a student's teacher, a fine-tune's start."""
    meta = _json(run / "model.json")
    report = _json(run / ("distill.json" if "distill" in meta else "train.json"))
    before = report.get("teacher") or (report.get("recipe") or {}).get("init")
    earlier = _stages(Path(before).parent) if before and Path(before).parent != run else []
    return [*earlier, _stage(run, meta, report)]


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _stage(run: Path, meta: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    recipe = report.get("recipe", {})
    return {
        "run": run.name,
        "command": report.get("command", ""),
        "seed": recipe.get("seed"),
        "steps": meta.get("steps"),
        "data": "phantom pelvis views (uniform NA 70–130°, rendered 384–640 px)"
        if not recipe.get("data")
        else f"labelled folder {Path(recipe['data']).name}",
        "images": report.get("train_images"),
        "config": meta.get("distill") or meta.get("config"),
        "final_loss": meta.get("final_loss"),
    }


__all__ = ["DEFAULT_GUIDANCE", "config_pbtxt", "export_generator"]
