"""Evaluate a deployed generator (ONNX, the serving code path): angle fidelity on a grid of requested
angles, measured by the default angle model, and a Fréchet distance on the angle model's features
against fresh phantom pelvis views (with the distance between two phantom sets as its floor)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hipgen.angle.features import AngleFeatures
from hipgen.angle.measure import measurer_from_backend
from hipgen.generate.generator import Generator, choose_sampler
from hipgen.generate.label import measure_each, measured_angles
from hipgen.inference.backend import OrtBackend
from hipgen.metrics.distribution import frechet_distance
from hipgen.metrics.fidelity import DEFAULT_GRID, angle_fidelity, fidelity_grid
from training.diffusion.data import training_views

REFERENCE_SEED = 900_001  # phantoms no generator trained on


@dataclass
class GeneratorEval:
    name: str  # e.g. "ddim-50"
    requested: np.ndarray  # (N, 2) [left, right] degrees
    measured: np.ndarray  # (N, 2)
    images: np.ndarray  # (N, S, S) [0, 1]
    metrics: dict[str, Any]


def reference_views(count: int, size: int, seed: int = REFERENCE_SEED) -> np.ndarray:
    """Phantom pelvis views (N, S, S) in [0, 1], from seeds no training run uses."""
    dset, _ = training_views(count, seed, size=size, workers=2, progress=False)
    return (dset.images[:, 0] + 1.0) / 2.0


def evaluate(
    repo: str | Path,
    model: str,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    values: tuple[float, ...] = DEFAULT_GRID,
    per_cell: int = 1,
    seed: int = 0,
    batch: int = 8,
    reference: np.ndarray | None = None,
    floor: np.ndarray | None = None,
    progress: bool = True,
) -> GeneratorEval:
    """Generate ``per_cell`` images for every (left, right) pair of ``values`` (image k has seed
    ``seed + k``), measure them, and report fidelity, Fréchet distance and images/s."""
    backend = OrtBackend(repo)
    gen = Generator(backend, model)
    choice = choose_sampler(gen.spec, sampler, steps, guidance_scale)
    measurer = measurer_from_backend(backend)
    requested = np.repeat(fidelity_grid(values), per_cell, axis=0)
    t0 = time.perf_counter()
    with tqdm(total=len(requested), desc=f"{choice.sampler}-{choice.steps}", disable=not progress) as bar:
        images_arr = gen.generate_angles(requested, choice, seed=seed, batch=batch, on_batch=bar.update)
    seconds = time.perf_counter() - t0
    measured = measured_angles(measure_each(measurer, list(images_arr)))
    fidelity = {k: v.to_dict() for k, v in angle_fidelity(requested, measured).items()}
    metrics: dict[str, Any] = {
        "sampler": choice.sampler,
        "steps": choice.steps,
        "guidance_scale": choice.guidance_scale,
        "images": len(images_arr),
        "grid_deg": list(values),
        "fidelity": fidelity,
        "images_per_second": len(images_arr) / seconds,
    }
    if reference is not None:
        features = AngleFeatures(repo)
        ref = features(list(reference))
        metrics["frechet_angle_features"] = frechet_distance(features(list(images_arr)), ref)
        if floor is not None:
            metrics["frechet_phantom_floor"] = frechet_distance(features(list(floor)), ref)
    return GeneratorEval(f"{choice.sampler}-{choice.steps}", requested, measured, images_arr, metrics)


def plot(evals: list[GeneratorEval], path: str | Path) -> Path:
    """Measured against requested NA, one panel per sampler, both sides, with the identity line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(evals), figsize=(3.6 * len(evals), 3.6), squeeze=False)
    for ax, ev in zip(axes[0], evals, strict=True):
        lo, hi = 65, 135
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        ax.scatter(ev.requested[:, 0], ev.measured[:, 0], s=14, label="left", alpha=0.8)
        ax.scatter(ev.requested[:, 1], ev.measured[:, 1], s=14, label="right", alpha=0.8, marker="s")
        f = ev.metrics["fidelity"]["both"]
        ax.set_title(f"{ev.name}: r {f['pearson_r']:.2f}, MAE {f['mae']:.1f}°", fontsize=10)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("requested NA (°)")
        ax.set_ylabel("measured NA (°)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def contact_sheet(ev: GeneratorEval, path: str | Path, columns: int = 5) -> Path:
    """The evaluated images with requested and measured angles in each title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(ev.images)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.5 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < n:
            ax.imshow(ev.images[k], cmap="gray", vmin=0, vmax=1)
            (rl, rr), (ml, mr) = ev.requested[k], ev.measured[k]
            ax.set_title(f"ask R{rr:.0f} L{rl:.0f}\ngot R{mr:.0f} L{ml:.0f}", fontsize=8)
    fig.suptitle(f"{ev.name}: requested vs measured NA (patient's right on image left)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


__all__ = ["REFERENCE_SEED", "GeneratorEval", "contact_sheet", "evaluate", "plot", "reference_views"]
