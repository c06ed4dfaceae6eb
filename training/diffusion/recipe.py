"""``hipgen train diffusion``: pelvis views of fresh phantoms (or a labelled folder) → the angle-
conditioned DDPM, with a grid of samples at fixed requested angles at every checkpoint, and the EMA
UNet exported to ONNX at the end.

Writes into ``out``: ``checkpoint/`` (resumable), ``model.pt/.json`` (EMA weights), ``unet.onnx``,
``samples_<step>.png`` and ``train.json`` (command, recipe, loss curve summary).
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hipgen.generate.conditions import condition_vector
from hipgen.generate.sampling import SamplingPlan, sample
from hipgen.generate.schedulers import NoiseSchedule
from training.diffusion.data import training_views
from training.diffusion.distill import DistillConfig, DistillRun, distill
from training.diffusion.export import export_unet
from training.diffusion.model import NaConditionedUNet, torch_model_fn
from training.diffusion.train import DiffusionConfig, DiffusionRun, DiffusionSet, load, save, train

# Requested [left, right] angles of the sample grids: the corners and the centre of the trained range,
# plus the threshold (105°) on one side.
GRID_CONDITIONS = np.array([[75, 75], [75, 125], [125, 75], [125, 125], [100, 100], [105, 90]], np.float64)


@dataclass
class DiffusionRecipe:
    count: int = 2000
    seed: int = 0
    data: str | None = None
    size: int = 128
    tiny: bool = False
    steps: int = 20_000
    batch_size: int = 16
    checkpoint_every: int = 500
    grid_steps: int = 25  # DDIM steps of the sample grids
    guidance_scale: float = 2.0
    resume: bool = False
    workers: int = 2
    vae: str | None = None  # a ``hipgen train vae`` run: denoise its latents (the SD-like path)
    hint: bool = False  # the angles also as a spatial channel (rays the rims lie on)
    init: str | None = None  # fine-tune from this model.pt


def schedule_of(config: DiffusionConfig) -> NoiseSchedule:
    """The numpy sampler's schedule for a model trained with ``config`` (diffusers' DDPMScheduler
    defaults otherwise: linear betas 1e-4–0.02, clipped x0)."""
    return NoiseSchedule(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)


def sample_grid(
    model: NaConditionedUNet,
    config: DiffusionConfig,
    path: Path,
    *,
    steps: int,
    guidance_scale: float,
    sampler: str = "ddim",
    decode: Any = None,
) -> Path:
    """One sample per :data:`GRID_CONDITIONS` pair (DDIM, or LCM for a distilled student; fixed seeds),
    titled with what was requested."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = SamplingPlan(
        condition_vector(GRID_CONDITIONS, config.na_range),
        list(range(len(GRID_CONDITIONS))),
        sampler=sampler,  # type: ignore[arg-type]
        steps=steps,
        guidance_scale=guidance_scale,
    )
    schedule = schedule_of(config)
    images = sample(torch_model_fn(model), schedule, plan, config.size, channels=config.channels)
    if decode is not None:  # latents → pixels
        images = decode(images)
    fig, axes = plt.subplots(1, len(images), figsize=(2.2 * len(images), 2.6))
    for ax, img, (left, right) in zip(axes, images, GRID_CONDITIONS, strict=True):
        ax.imshow(img[0], cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"R {right:.0f}° · L {left:.0f}°", fontsize=9)
        ax.axis("off")
    fig.suptitle(
        f"requested angles, {plan.sampler.upper()}-{steps}, guidance {plan.guidance_scale:g}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(recipe: DiffusionRecipe, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vae = decode = None
    size = recipe.size
    if recipe.vae:
        from training.diffusion.vae import decoder_fn, encode, load_vae

        vae, scaling, vae_cfg = load_vae(recipe.vae)
        size = vae_cfg.size
        decode = decoder_fn(vae, scaling)
    dset, _ = training_views(
        recipe.count,
        recipe.seed,
        size=size,
        data=recipe.data,
        workers=recipe.workers,
        progress=progress,
    )
    if vae is not None:
        dset = DiffusionSet(encode(vae, dset.images, scaling), dset.na)
    config = DiffusionConfig(
        size=dset.images.shape[-1],
        channels=dset.images.shape[1],
        tiny=recipe.tiny,
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        checkpoint_every=recipe.checkpoint_every,
        hint=recipe.hint,
        init=recipe.init,
    )

    def on_checkpoint(r: DiffusionRun) -> None:
        save(r, out / "model")  # the EMA weights so far: usable (and exportable) while training goes on
        sample_grid(
            r.model,
            config,
            out / f"samples_{r.steps:06d}.png",
            steps=recipe.grid_steps,
            guidance_scale=recipe.guidance_scale,
            decode=decode,
        )

    result = train(config, dset, out, resume=recipe.resume, progress=progress, on_checkpoint=on_checkpoint)
    export_unet(result.model, out / "unet.onnx")
    losses = np.asarray(result.losses, np.float64)
    report = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "recipe": asdict(recipe),
        "config": asdict(config),
        "train_images": len(dset.images),
        "steps": result.steps,
        "loss_first_100": float(losses[:100].mean()) if len(losses) else None,
        "loss_last_100": float(losses[-100:].mean()) if len(losses) else None,
    }
    (out / "train.json").write_text(json.dumps(report, indent=2))
    return report


@dataclass
class VaeRecipe:
    count: int = 2000
    seed: int = 2
    data: str | None = None
    size: int = 256
    tiny: bool = False
    steps: int = 3000
    batch_size: int = 8
    workers: int = 2


def run_vae(recipe: VaeRecipe, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """``hipgen train vae``: the latent path's AutoencoderKL on pelvis views at ``recipe.size``; writes
    ``out/vae/`` (diffusers layout), ``vae.json`` (config, scaling factor) and ``reconstructions.png``."""
    from training.diffusion.vae import VaeConfig, decoder_fn, encode, train_vae

    out = Path(out)
    config = VaeConfig(
        size=recipe.size, tiny=recipe.tiny, steps=recipe.steps, batch_size=recipe.batch_size, seed=recipe.seed
    )
    dset, _ = training_views(
        recipe.count,
        recipe.seed,
        size=recipe.size,
        data=recipe.data,
        workers=recipe.workers,
        progress=progress,
    )
    vae, scaling = train_vae(config, dset.images, out, progress=progress)
    shown = dset.images[:6]
    recon = decoder_fn(vae, scaling)(encode(vae, shown, scaling))
    l1 = float(np.abs(recon - shown).mean())
    _pairs_figure(
        shown, recon, out / "reconstructions.png", f"VAE ÷{config.factor}: top input, bottom decoded"
    )
    report = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "recipe": asdict(recipe),
        "scaling_factor": scaling,
        "reconstruction_l1": l1,
        "train_images": len(dset.images),
    }
    (out / "train.json").write_text(json.dumps(report, indent=2))
    return report


def _pairs_figure(top: np.ndarray, bottom: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(top), figsize=(2.2 * len(top), 4.6), squeeze=False)
    for k in range(len(top)):
        for row, img in ((0, top[k]), (1, bottom[k])):
            axes[row, k].imshow(img[0], cmap="gray", vmin=-1, vmax=1)
            axes[row, k].axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@dataclass
class DistillRecipe:
    teacher: str = "runs/diffusion"  # a ``hipgen train diffusion`` run folder
    count: int = 2000
    seed: int = 1
    data: str | None = None
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-5
    omega: float = 1.0
    solver: str = "ddim"
    checkpoint_every: int = 250
    grid_steps: int = 4  # LCM steps of the sample grids
    resume: bool = False
    workers: int = 2


def run_distill(recipe: DistillRecipe, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """``hipgen distill``: the teacher run's EMA model → an LCM student in ``out`` (same files as a
    training run: checkpoint/, model.pt/.json, unet.onnx, samples_<step>.png, distill.json)."""
    out = Path(out)
    teacher_path = Path(recipe.teacher) / "model.pt"
    if not teacher_path.is_file():
        raise FileNotFoundError(f"{teacher_path}: no teacher model (run hipgen train diffusion first)")
    teacher, tconfig = load(teacher_path)
    dset, _ = training_views(
        recipe.count,
        recipe.seed,
        size=tconfig.size,
        data=recipe.data,
        workers=recipe.workers,
        progress=progress,
    )
    config = DistillConfig(
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        omega=recipe.omega,
        solver=recipe.solver,
        seed=recipe.seed,
        checkpoint_every=recipe.checkpoint_every,
        na_range=tconfig.na_range,
    )

    def on_checkpoint(r: DistillRun) -> None:
        grid = out / f"samples_{r.steps:06d}.png"
        sample_grid(r.model, tconfig, grid, steps=recipe.grid_steps, guidance_scale=1.0, sampler="lcm")

    result = distill(
        teacher,
        tconfig,
        config,
        dset,
        out,
        resume=recipe.resume,
        progress=progress,
        on_checkpoint=on_checkpoint,
    )
    export_unet(result.model, out / "unet.onnx")
    report = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "recipe": asdict(recipe),
        "config": asdict(config),
        "teacher": str(teacher_path),
        "train_images": len(dset.images),
        "steps": result.steps,
        "loss_first_50": float(np.mean(result.losses[:50])) if result.losses else None,
        "loss_last_50": float(np.mean(result.losses[-50:])) if result.losses else None,
    }
    (out / "distill.json").write_text(json.dumps(report, indent=2))
    return report


__all__ = [
    "GRID_CONDITIONS",
    "DiffusionRecipe",
    "DistillRecipe",
    "VaeRecipe",
    "run",
    "run_distill",
    "run_vae",
    "sample_grid",
]
