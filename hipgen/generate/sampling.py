"""The sampling loop outside the UNet (as Triton's Stable Diffusion example runs it): numpy scheduler
math around any ``model(sample, timestep, na, keep) -> noise`` — an ONNX Runtime session, a Triton
client, or the PyTorch module in tests — with classifier-free guidance, per-image seeds, a progress
callback after every step and a cancellation check before every step.

Determinism: image k's initial noise and every ancestral noise come from its own
``numpy.random.default_rng(seed_k)`` in a fixed order, so an image does not depend on its batch
neighbours or on the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hipgen.generate.schedulers import NoiseSchedule, ddim_step, ddpm_step, lcm_step, lcm_timesteps

ModelFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
SamplerName = Literal["ddpm", "ddim", "lcm"]


class SamplingCancelled(Exception):
    """The caller cancelled (client gone, deadline passed) between two denoising steps."""


@dataclass(frozen=True)
class SamplingPlan:
    """What to run for one batch: ``na`` (B, 2) model-scaled conditions, one seed per image."""

    na: np.ndarray
    seeds: Sequence[int]
    sampler: SamplerName = "ddim"
    steps: int = 50
    guidance_scale: float = 1.0  # 1: conditional only (no unconditional pass)
    eta: float = 0.0  # DDIM only

    def __post_init__(self) -> None:
        if self.sampler not in ("ddpm", "ddim", "lcm"):
            raise ValueError(f"sampler must be 'ddpm', 'ddim' or 'lcm', got {self.sampler!r}")
        if len(self.seeds) != len(self.na):
            raise ValueError(f"{len(self.seeds)} seeds for {len(self.na)} conditions")
        if not (np.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise ValueError(f"guidance_scale must be finite and ≥ 0, got {self.guidance_scale}")


def guided(model: ModelFn, x: np.ndarray, t: int, na: np.ndarray, scale: float) -> np.ndarray:
    """Classifier-free guidance: ``uncond + scale·(cond − uncond)`` from one doubled batch."""
    n = len(x)
    ts = np.full(n, t, np.int64)
    if scale == 1.0:
        return model(x, ts, na, np.ones(n, bool))
    both = model(
        np.concatenate([x, x]),
        np.concatenate([ts, ts]),
        np.concatenate([na, na]),
        np.concatenate([np.ones(n, bool), np.zeros(n, bool)]),
    )
    cond, uncond = both[:n], both[n:]
    return uncond + scale * (cond - uncond)


def iter_sample(
    model: ModelFn,
    schedule: NoiseSchedule,
    plan: SamplingPlan,
    size: int,
    *,
    channels: int = 1,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Denoise one batch, yielding ``(step, total, x)`` after every step (x: (B, channels, size, size)
    float32 in the model's range, [-1, 1]); the last yield holds the images. A caller that stops
    iterating stops the computation — that is how a cancelled request stops within one step."""
    rngs = [np.random.default_rng(int(s)) for s in plan.seeds]
    shape = (channels, size, size)

    def draw() -> np.ndarray:
        return np.stack([r.standard_normal(shape, dtype=np.float32) for r in rngs])

    x = draw()
    na = np.asarray(plan.na, np.float32).reshape(-1, 2)
    ts = lcm_timesteps(schedule, plan.steps) if plan.sampler == "lcm" else schedule.timesteps(plan.steps)
    for i, t in enumerate(ts.tolist()):
        eps = guided(model, x, t, na, plan.guidance_scale).astype(np.float32, copy=False)
        if plan.sampler == "ddim":
            x = ddim_step(
                schedule, eps, t, x, plan.steps, eta=plan.eta, noise=draw() if plan.eta > 0 else None
            )
        elif plan.sampler == "lcm":
            prev = int(ts[i + 1]) if i + 1 < len(ts) else None
            x = lcm_step(schedule, eps, t, prev, x, noise=draw() if prev is not None else None)
        else:
            prev = int(ts[i + 1]) if i + 1 < len(ts) else -1
            x = ddpm_step(schedule, eps, t, prev, x, noise=draw() if t > 0 else None)
        yield i + 1, len(ts), x


def sample(
    model: ModelFn,
    schedule: NoiseSchedule,
    plan: SamplingPlan,
    size: int,
    *,
    channels: int = 1,
    on_step: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Denoise one batch; returns (B, channels, size, size) float32 in the model's range ([-1, 1]).
    ``cancelled`` is asked before every step (:class:`SamplingCancelled`), ``on_step`` told after."""
    images = None
    if cancelled is not None and cancelled():
        raise SamplingCancelled("cancelled before the first step")
    for step, total, x in iter_sample(model, schedule, plan, size, channels=channels):
        images = x
        if on_step is not None:
            on_step(step, total)
        if step < total and cancelled is not None and cancelled():
            raise SamplingCancelled(f"cancelled before step {step + 1} of {total}")
    assert images is not None  # a plan has at least one step
    return images


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Model range [-1, 1] → uint8 (B, H, W) grey images."""
    return np.round((np.clip(x[:, 0], -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


__all__ = ["ModelFn", "SamplingCancelled", "SamplingPlan", "guided", "iter_sample", "sample", "to_uint8"]
