"""``hipgen train angle``: render (or read) the training set, train the locator and the hip keypoint
model, and evaluate both together on a freshly rendered held-out set and a *shifted* one.

Writes into ``out``: ``locator.pt/.json``, ``keypoints.pt/.json``, ``eval.json``, ``eval.png`` —
``hipgen export angle`` turns them into ``model_repository/`` entries.

Low-data recipe: ``--count 219`` trains on exactly the published training-set size (219 images);
augmentation and the step budget are unchanged, so the model sees each image many times.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hipgen.angle.geometry import CROP_SPAN
from hipgen.angle.measure import AngleMeasurer, MeasurerConfig
from training.angle.data import SHIFT_SIZES, SMALL_SIZES, TRAIN_SIZES, HipSet, labelled_set, render_set
from training.angle.evaluate import Evaluation, evaluate, plot
from training.angle.train import TorchModelFn, TrainConfig, TrainResult, load, save, train

TEST_SEED_OFFSET = 1_000_003  # held-out sets never share seeds with a training set


@dataclass
class AngleRecipe:
    count: int = 3000
    seed: int = 0
    data: str | None = None  # a labelled folder instead of rendered phantoms
    backbone: str = "mobilenet_v3_large"
    head: str = "heatmap"
    locator_steps: int = 1500
    keypoint_steps: int = 3000
    batch_size: int = 32
    locator_width: int = 64
    test_count: int = 300
    shifted_count: int = 200
    small_count: int = 150  # the same population at low-resolution export sizes (384–640 px)
    weights: str | None = None
    workers: int = 2
    resume: str | None = None  # a run folder to continue from; a stage with 0 steps is reused as is
    crop_span: float | None = None  # crop side / inter-head distance; None: the resumed model's or CROP_SPAN


def training_data(recipe: AngleRecipe, progress: bool = True) -> HipSet:
    return labelled_set(
        recipe.count, recipe.seed, data=recipe.data, workers=recipe.workers, progress=progress
    )


def test_sets(recipe: AngleRecipe, progress: bool = True) -> dict[str, HipSet]:
    """Fresh held-out sets: in-distribution (population NA as in real studies, the training sizes), the
    same population at low-resolution export sizes, and the shifted one."""
    seed = recipe.seed + TEST_SEED_OFFSET
    sets = {}
    if recipe.test_count:
        sets["phantom-test"] = render_set(
            recipe.test_count, seed, distribution="population", workers=recipe.workers, progress=progress
        )
    if recipe.small_count:
        sets["phantom-test-small"] = render_set(
            recipe.small_count,
            seed + 2,
            distribution="population",
            sizes=SMALL_SIZES,
            workers=recipe.workers,
            progress=progress,
        )
    if recipe.shifted_count:
        sets["phantom-shifted"] = render_set(
            recipe.shifted_count,
            seed + 1,
            distribution="population",
            sizes=SHIFT_SIZES,
            shifted=True,
            workers=recipe.workers,
            progress=progress,
        )
    return sets


def _stage(
    recipe: AngleRecipe, task: str, steps: int, data: HipSet, progress: bool, **common: Any
) -> TrainResult:
    """Train one stage, from scratch or on from ``recipe.resume``; 0 steps reuses the resumed model."""
    init = str(Path(recipe.resume) / task) if recipe.resume else None
    if steps == 0:
        if init is None:
            raise ValueError(f"{task}: 0 steps needs --resume RUN to take the model from")
        net, cfg = load(init)
        if common.get("crop_span") not in (None, cfg.crop_span):
            raise ValueError(
                f"{task}: --crop-span {common['crop_span']} needs training steps; the reused model "
                f"was trained at {cfg.crop_span}"
            )
        prior = json.loads(Path(init).with_suffix(".json").read_text())
        return TrainResult(net, cfg, int(prior.get("steps", 0)), 0.0)
    if init:
        _, prior_cfg = load(init)
        common = common | {
            "backbone": prior_cfg.backbone,
            "head": prior_cfg.head,
            "width": prior_cfg.width,
            "input_size": prior_cfg.input_size,
        }
        if common.get("crop_span", 0) is None:
            common["crop_span"] = prior_cfg.crop_span
    if common.get("crop_span", 0) is None:
        common["crop_span"] = CROP_SPAN
    return train(TrainConfig(task=task, steps=steps, init=init, **common), data, progress=progress)  # type: ignore[arg-type]


def run(recipe: AngleRecipe, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = training_data(recipe, progress)
    common = dict(
        backbone=recipe.backbone,
        head=recipe.head,
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        weights=recipe.weights,
    )
    loc = _stage(
        recipe, "locator", recipe.locator_steps, data, progress, width=recipe.locator_width, **common
    )
    save(loc, out / "locator")
    kp = _stage(
        recipe, "keypoints", recipe.keypoint_steps, data, progress, crop_span=recipe.crop_span, **common
    )
    save(kp, out / "keypoints")
    measurer = AngleMeasurer(
        TorchModelFn(loc.net),
        TorchModelFn(kp.net),
        MeasurerConfig(
            locator_size=loc.config.input_size, crop_size=kp.config.input_size, crop_span=kp.config.crop_span
        ),
    )
    evals = {
        name: evaluate(measurer, s, progress=progress) for name, s in test_sets(recipe, progress).items()
    }
    report = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "recipe": asdict(recipe),
        "train_images": len(data),
        "train_sizes": None if recipe.data else list(TRAIN_SIZES),
        "train_seconds": {"locator": round(loc.seconds, 1), "keypoints": round(kp.seconds, 1)},
        "eval": {name: e.metrics for name, e in evals.items()},
    }
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    if evals:
        plot(evals, out / "eval.png")
    return report


def evaluate_sets(
    measurer: AngleMeasurer, sets: dict[str, HipSet], progress: bool = True
) -> dict[str, Evaluation]:
    return {name: evaluate(measurer, s, progress=progress) for name, s in sets.items()}


__all__ = ["AngleRecipe", "evaluate_sets", "run", "test_sets", "training_data"]
