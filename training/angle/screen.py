"""``hipgen screen``: train the hip keypoint model on many torchvision architectures under one budget
(same data, steps, batch and wall-clock cap) and compare them on the same held-out phantoms, all with
the same locator — so the table ranks the keypoint stage, which sets the angle accuracy.

Writes ``screen.csv``, ``screen.md`` and ``screen.png`` (MAE per architecture; MAE vs latency).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hipgen.angle.geometry import CROP_SPAN
from hipgen.angle.measure import AngleMeasurer, MeasurerConfig, ModelFn
from training.angle.data import HipSet
from training.angle.evaluate import evaluate
from training.angle.models import parameter_count
from training.angle.train import TorchModelFn, TrainConfig, train

COLUMNS = (
    "backbone",
    "head",
    "mae",
    "rmse",
    "mape",
    "r2",
    "within_3",
    "within_5",
    "within_10",
    "cls_accuracy",
    "params_m",
    "latency_ms",
    "steps",
    "train_s",
)


@dataclass
class ScreenBudget:
    steps: int = 400
    batch_size: int = 16
    max_seconds: float = 150.0
    seed: int = 0


def latency_ms(net: torch.nn.Module, size: int, repeats: int = 10) -> float:
    """Median eager PyTorch latency of one crop (batch 1) on this machine's CPU."""
    x = torch.rand(1, 1, size, size)
    times = []
    with torch.no_grad():
        net.eval()
        net(x)
        for _ in range(repeats):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times))


def screen(
    backbones: list[str],
    heads: list[str],
    data: HipSet,
    test: HipSet,
    locator: ModelFn,
    budget: ScreenBudget,
    *,
    pipeline: MeasurerConfig | None = None,
    progress: bool = True,
    on_row: Any = None,
) -> list[dict[str, Any]]:
    rows = []
    for head in heads:
        for name in backbones:
            cfg = TrainConfig(
                task="keypoints",
                backbone=name,
                head=head,
                steps=budget.steps,
                batch_size=budget.batch_size,
                max_seconds=budget.max_seconds,
                seed=budget.seed,
                # train at the geometry the evaluation measures with (the shared locator's pipeline)
                input_size=pipeline.crop_size if pipeline else 0,
                crop_span=pipeline.crop_span if pipeline else CROP_SPAN,
            )
            res = train(cfg, data, progress=progress)
            ev = evaluate(AngleMeasurer(locator, TorchModelFn(res.net), pipeline), test, progress=False)
            na = ev.metrics["na"]
            row = {
                "backbone": name,
                "head": head,
                **{k: na[k] for k in ("mae", "rmse", "mape", "r2", "within_3", "within_5", "within_10")},
                "cls_accuracy": ev.metrics["classifier_side"]["accuracy"],
                "params_m": parameter_count(res.net) / 1e6,
                "latency_ms": latency_ms(res.net, cfg.input_size),
                "steps": res.steps,
                "train_s": res.seconds,
            }
            rows.append(row)
            if on_row:
                on_row(row)
    return rows


def write_reports(rows: list[dict[str, Any]], out: str | Path, *, note: str = "") -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "screen.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.4g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})
    ranked = sorted(rows, key=lambda r: r["mae"])
    lines = [
        "| backbone | head | MAE ° | RMSE ° | MAPE % | R² | ≤3° | ≤5° | ≤10° | cls acc | params M "
        "| latency ms | steps | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ranked:
        lines.append(
            f"| {r['backbone']} | {r['head']} | {r['mae']:.2f} | {r['rmse']:.2f} | {r['mape']:.2f} | "
            f"{r['r2']:.3f} | "
            f"{r['within_3']:.1%} | {r['within_5']:.1%} | {r['within_10']:.1%} | {r['cls_accuracy']:.1%} | "
            f"{r['params_m']:.2f} | {r['latency_ms']:.1f} | {r['steps']} | {r['train_s']:.0f} |"
        )
    (out / "screen.md").write_text((note + "\n\n" if note else "") + "\n".join(lines) + "\n")
    _plot(ranked, out / "screen.png")
    return [out / "screen.csv", out / "screen.md", out / "screen.png"]


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{r['backbone']}\n{r['head']}" for r in rows]
    a.barh(labels[::-1], [r["mae"] for r in rows][::-1])
    a.set(xlabel="NA MAE (°), held-out phantoms", title="Screening: same data, steps and time cap")
    for r in rows:
        b.scatter(r["latency_ms"], r["mae"], s=20 + 8 * r["params_m"])
        b.annotate(r["backbone"], (r["latency_ms"], r["mae"]), fontsize=7)
    b.set(
        xlabel="eager CPU latency per crop (ms)",
        ylabel="NA MAE (°)",
        xscale="log",
        title="accuracy vs cost (size ∝ params)",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
