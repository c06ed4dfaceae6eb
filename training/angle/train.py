"""Training loop for the two angle models (locator, hip keypoint model + classifier).

Batches are drawn with replacement from an in-memory :class:`HipSet` and augmented on the fly, so a
small set (the published 219 images) and a large one go through the same loop; the budget is a step
count (optionally capped by wall-clock seconds, which is how ``screen`` gives every architecture the
same budget).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hipgen.angle.geometry import CROP_SIZE, CROP_SPAN, LOCATOR_SIZE, crop_scale
from training.angle.augment import crop_sample, locator_sample
from training.angle.data import HipSet
from training.angle.models import Head, KeypointNet

Task = Literal["locator", "keypoints"]


@dataclass
class TrainConfig:
    task: Task
    backbone: str = "mobilenet_v3_large"
    head: Head = "heatmap"
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    input_size: int = 0  # 0: the task's default (192 locator, 128 keypoints)
    crop_span: float = CROP_SPAN
    width: int = 128
    weights: str | None = None  # local torchvision state dict to start the backbone from
    max_seconds: float | None = None
    threads: int = 0  # 0: torch's default
    init: str | None = None  # a checkpoint (.pt) of this same architecture to continue from
    device: str = "cpu"  # where to train ("cuda" on a GPU); the trained net comes back on the CPU

    def __post_init__(self) -> None:
        if self.task not in ("locator", "keypoints"):
            raise ValueError(f"task must be 'locator' or 'keypoints', got {self.task!r}")
        if not self.input_size:
            self.input_size = LOCATOR_SIZE if self.task == "locator" else CROP_SIZE
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be ≥ 1")


@dataclass
class TrainResult:
    net: KeypointNet
    config: TrainConfig
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def build_net(config: TrainConfig) -> KeypointNet:
    return KeypointNet(
        config.backbone,
        2,
        input_size=config.input_size,
        head=config.head,
        extras=config.task == "keypoints",
        width=config.width,
        weights=config.weights,
    )


def shrunk_for(config: TrainConfig, data: HipSet) -> HipSet:
    """``data`` shrunk once to about the scale the task's warps need: the crop scale for the keypoint
    model (what :class:`AngleMeasurer` does), 1.5× the input for the locator (augmentation zooms)."""
    if config.task == "keypoints":
        d = np.linalg.norm(data.points[:, 0] - data.points[:, 1], axis=-1)
        scales = crop_scale(d, config.input_size, config.crop_span)
    else:
        longest = np.array([max(im.shape) for im in data.images], np.float64)
        scales = 1.5 * config.input_size / longest
    return data.shrunk(scales)


def make_batch(config: TrainConfig, data: HipSet, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    n, s = config.batch_size, config.input_size
    xs, ys, radii, bigs = [], [], [], []
    for i in rng.integers(len(data), size=n):
        img = data.image(int(i))
        if config.task == "locator":
            x, y = locator_sample(img, data.points[i], rng, s)
        else:
            x, y, r, big = crop_sample(
                img, data.points[i], data.radii[i], int(rng.integers(2)), rng, s, config.crop_span
            )
            radii.append(r)
            bigs.append(big)
        xs.append(x)
        ys.append(y)
    batch = {
        "image": torch.from_numpy(np.stack(xs)[:, None]),
        "keypoints": torch.tensor(np.stack(ys), dtype=torch.float32),
    }
    if radii:
        batch["radius"] = torch.tensor(radii, dtype=torch.float32)[:, None]
        batch["big"] = torch.tensor(bigs, dtype=torch.float32)[:, None]
    return batch


def _gaussians(coords: torch.Tensor, h: int, w: int, size: int, sigma: float = 1.0) -> torch.Tensor:
    """Normalised Gaussians (N, K, h, w) at ``coords`` (input pixels), sigma in heatmap cells."""
    gx = ((coords[..., 0] + 0.5) * (w / size) - 0.5)[..., None]
    gy = ((coords[..., 1] + 0.5) * (h / size) - 0.5)[..., None]
    xs = torch.arange(w, dtype=coords.dtype, device=coords.device)
    ys = torch.arange(h, dtype=coords.dtype, device=coords.device)
    g = torch.exp(-((ys - gy) ** 2))[..., :, None] ** (0.5 / sigma**2) * torch.exp(-((xs - gx) ** 2))[
        ..., None, :
    ] ** (0.5 / sigma**2)
    return g / g.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def _js(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = 0.5 * (p + q)
    kl = lambda a: (a * (torch.log(a.clamp_min(1e-12)) - torch.log(m.clamp_min(1e-12)))).sum(dim=(-2, -1))  # noqa: E731
    return 0.5 * (kl(p) + kl(q))


def loss_fn(
    config: TrainConfig, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """DSNT for heatmaps (Euclidean coordinate loss + Jensen–Shannon to a Gaussian); MSE for the
    regression baseline; L1 on the radius and BCE for Big/Small in the keypoint model."""
    s = float(config.input_size)
    pred, true = out["keypoints"] / s, batch["keypoints"] / s
    parts: dict[str, torch.Tensor] = {}
    if config.head == "heatmap":
        parts["coord"] = torch.linalg.vector_norm(pred - true, dim=-1).mean()
        hm = out["heatmaps"]
        parts["js"] = (
            0.05 * _js(hm, _gaussians(batch["keypoints"], hm.shape[2], hm.shape[3], config.input_size)).mean()
        )
    else:
        parts["coord"] = F.mse_loss(pred, true)
    if "radius" in out:
        parts["radius"] = F.l1_loss(out["radius"] / s, batch["radius"] / s)
        parts["big"] = 0.05 * F.binary_cross_entropy_with_logits(out["logit"], batch["big"])
    parts["total"] = sum(parts.values())
    return parts


def train(config: TrainConfig, data: HipSet, *, progress: bool = True) -> TrainResult:
    """Train one model; deterministic for a given config and data on one thread count."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = build_net(config)
    if config.init:
        net.load_state_dict(
            torch.load(Path(config.init).with_suffix(".pt"), map_location="cpu", weights_only=True)
        )
    net.to(config.device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warm = max(1, config.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda k: (
            min(1.0, (k + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(k, config.steps) / config.steps))
        ),
    )
    data = shrunk_for(config, data)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    net.train()
    bar = tqdm(range(config.steps), desc=f"train {config.task} {config.backbone}", disable=not progress)
    step = 0
    for step in bar:
        batch = {k: v.to(config.device) for k, v in make_batch(config, data, rng).items()}
        parts = loss_fn(config, net(batch["image"]), batch)
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        err_px = (
            float(torch.linalg.vector_norm(parts["coord"].detach()) * config.input_size)
            if config.head == "heatmap"
            else math.nan
        )
        history.append({k: float(v) for k, v in parts.items()} | {"step": step, "lr": sched.get_last_lr()[0]})
        if step % 10 == 0:
            bar.set_postfix(loss=f"{float(parts['total']):.4f}", err_px=f"{err_px:.2f}")
        if config.max_seconds is not None and time.perf_counter() - t0 > config.max_seconds:
            break
    net.eval().cpu()
    return TrainResult(net, config, step + 1, time.perf_counter() - t0, history)


def save(result: TrainResult, path: str | Path) -> Path:
    """``<path>.pt`` (state dict) + ``<path>.json`` (config, steps, seconds, final loss)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result.net.state_dict(), path.with_suffix(".pt"))
    meta = {
        "config": asdict(result.config),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "final_loss": result.history[-1]["total"] if result.history else None,
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path.with_suffix(".pt")


def load(path: str | Path) -> tuple[KeypointNet, TrainConfig]:
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    config = TrainConfig(**(meta["config"] | {"weights": None, "init": None}))
    net = build_net(config)
    net.load_state_dict(torch.load(path.with_suffix(".pt"), map_location="cpu", weights_only=True))
    net.eval()
    return net, config


class TorchModelFn:
    """A trained net as the numpy callable :class:`hipgen.angle.measure.AngleMeasurer` takes."""

    def __init__(self, net: KeypointNet, batch_size: int = 32) -> None:
        self.net, self.batch_size = net, batch_size

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.net.eval()
        outs: dict[str, list[np.ndarray]] = {}
        for i in range(0, len(x), self.batch_size):
            o = self.net(torch.from_numpy(np.ascontiguousarray(x[i : i + self.batch_size], np.float32)))
            o = {k: v for k, v in o.items() if k != "heatmaps"}
            if "logit" in o:
                o["prob_big"] = torch.sigmoid(o.pop("logit"))
            for k, v in o.items():
                outs.setdefault(k, []).append(v.numpy())
        return {k: np.concatenate(v) for k, v in outs.items()}
