"""Evaluation of an angle measurer (torch modules during training, ONNX models for a release) on a
labelled set: NA regression (both sides pooled), keypoint and radius errors, the Big/Small classifier
per side and per image, and a figure."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hipgen.anatomy import DEFAULT_THRESHOLD_DEG
from hipgen.angle.measure import AngleMeasurer, Measurement
from hipgen.metrics.angle import classifier_report, regression_report
from training.angle.data import HipSet


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    true_na: np.ndarray  # (N, 2) [right, left]
    pred_na: np.ndarray
    prob_big: np.ndarray  # (N, 2)
    seconds_per_image: float


def predict(
    measurer: AngleMeasurer, data: HipSet, *, batch: int = 16, progress: bool = True
) -> tuple[list[Measurement], float]:
    out: list[Measurement] = []
    t0 = time.perf_counter()
    for i in tqdm(range(0, len(data), batch), desc="measure", disable=not progress):
        out.extend(measurer.measure([data.image(j) for j in range(i, min(i + batch, len(data)))]))
    return out, (time.perf_counter() - t0) / max(1, len(data))


def evaluate(
    measurer: AngleMeasurer, data: HipSet, *, progress: bool = True, threshold: float = DEFAULT_THRESHOLD_DEG
) -> Evaluation:
    meas, spi = predict(measurer, data, progress=progress)
    true = data.angles()
    pred = np.array([[m.na_right, m.na_left] for m in meas])
    prob = np.array([[m.prob_big_right, m.prob_big_left] for m in meas])
    pts = np.array(
        [
            [m.keypoints.right_head, m.keypoints.left_head, m.keypoints.right_rim, m.keypoints.left_rim]
            for m in meas
        ]
    )
    radii = np.array([[m.keypoints.right_radius, m.keypoints.left_radius] for m in meas])
    d = np.linalg.norm(data.points[:, 0] - data.points[:, 1], axis=-1)[:, None]  # inter-head distance
    kp_err = np.linalg.norm(pts - data.points, axis=-1)
    true_big, angle_big = true >= threshold, pred >= threshold
    img_prob = prob.prod(axis=1)  # image is Big only when both hips are
    metrics: dict[str, Any] = {
        "n_images": len(data),
        "na": regression_report(pred, true).to_dict(),
        "keypoint_error_px": {
            "head_mean": float(kp_err[:, :2].mean()),
            "rim_mean": float(kp_err[:, 2:].mean()),
        },
        "keypoint_error_rel": {
            "head_mean": float((kp_err[:, :2] / d).mean()),
            "rim_mean": float((kp_err[:, 2:] / d).mean()),
        },
        "radius_mae_rel": float((np.abs(radii - data.radii) / data.radii).mean()),
        "classifier_side": classifier_report(prob, true_big, angle_big=angle_big).to_dict(),
        "classifier_image": classifier_report(
            img_prob, true_big.all(axis=1), angle_big=angle_big.all(axis=1)
        ).to_dict(),
        "angle_class_accuracy_side": float((angle_big == true_big).mean()),
        "seconds_per_image": spi,
    }
    return Evaluation(metrics, true, pred, prob, spi)


def plot(evals: dict[str, Evaluation], path: str | Path) -> Path:
    """Predicted vs true NA and the Bland–Altman difference, one column per evaluated set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(evals), figsize=(4.5 * len(evals), 8.5), squeeze=False)
    for j, (name, ev) in enumerate(evals.items()):
        t, p = ev.true_na.ravel(), ev.pred_na.ravel()
        m = ev.metrics["na"]
        ax = axes[0, j]
        ax.scatter(t, p, s=6, alpha=0.5)
        lo, hi = min(t.min(), p.min()) - 2, max(t.max(), p.max()) + 2
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.axvline(DEFAULT_THRESHOLD_DEG, color="grey", lw=0.5)
        ax.axhline(DEFAULT_THRESHOLD_DEG, color="grey", lw=0.5)
        ax.set(
            title=f"{name}: MAE {m['mae']:.2f}°, R² {m['r2']:.3f}",
            xlabel="true NA (°)",
            ylabel="predicted NA (°)",
        )
        ax = axes[1, j]
        ax.scatter((t + p) / 2, p - t, s=6, alpha=0.5)
        sd = np.std(p - t)
        for y in (np.mean(p - t), np.mean(p - t) + 1.96 * sd, np.mean(p - t) - 1.96 * sd):
            ax.axhline(y, color="k", lw=0.8, ls="--")
        ax.set(title="Bland–Altman", xlabel="mean of true and predicted (°)", ylabel="predicted − true (°)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
