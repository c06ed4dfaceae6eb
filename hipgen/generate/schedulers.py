"""DDPM, DDIM and LCM (multistep consistency) sampling steps in numpy, for the serving path.

Why not diffusers' schedulers: they import and compute in torch, and ``services/`` must run on ONNX
Runtime or Triton without torch. These are line-for-line ports of diffusers' ``DDPMScheduler``,
``DDIMScheduler`` and ``LCMScheduler`` (epsilon / sample / v prediction, clipping, "leading" / "trailing"
/ "linspace" spacing), checked against diffusers in ``tests/test_generate_schedulers.py``. They are pure
functions of a :class:`NoiseSchedule` and the step's timesteps: a request builds its own timestep list,
so nothing is shared between concurrent requests (diffusers' scheduler objects keep per-run state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

PredictionType = Literal["epsilon", "sample", "v_prediction"]


@dataclass(frozen=True)
class NoiseSchedule:
    """The subset of a diffusers scheduler config these steps honour (names as in diffusers)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    prediction_type: PredictionType = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    timestep_spacing: Literal["leading", "trailing", "linspace"] = "leading"
    steps_offset: int = 0
    set_alpha_to_one: bool = True  # DDIM's last step goes to alpha = 1
    original_inference_steps: int = 50  # LCM: the distillation's timestep grid
    timestep_scaling: float = 10.0  # LCM: boundary-condition scalings
    alphas_cumprod: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # float32 throughout, as diffusers computes them, so the two agree to float rounding
        t = self.num_train_timesteps
        if self.beta_schedule == "linear":
            betas = np.linspace(self.beta_start, self.beta_end, t, dtype=np.float32)
        elif self.beta_schedule == "scaled_linear":
            betas = np.linspace(self.beta_start**0.5, self.beta_end**0.5, t, dtype=np.float32) ** 2
        elif self.beta_schedule == "squaredcos_cap_v2":

            def bar(x: float) -> float:
                return math.cos((x + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = np.array([min(1 - bar((i + 1) / t) / bar(i / t), 0.999) for i in range(t)], np.float32)
        else:
            raise ValueError(f"beta_schedule {self.beta_schedule!r} is not supported")
        object.__setattr__(self, "alphas_cumprod", np.cumprod(1.0 - betas, dtype=np.float32))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NoiseSchedule:
        """From a diffusers ``scheduler_config.json`` (keys this port does not use are ignored; ones it
        cannot honour, such as thresholding, are refused)."""
        if config.get("thresholding"):
            raise ValueError("thresholding is not supported by the numpy sampler")
        if config.get("rescale_betas_zero_snr"):
            raise ValueError("rescale_betas_zero_snr is not supported by the numpy sampler")
        names = {f.name for f in fields(cls) if f.init}
        return cls(**{k: v for k, v in config.items() if k in names})

    def config(self) -> dict[str, Any]:
        """The diffusers-style config (JSON-ready) that :meth:`from_config` reads back."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def timesteps(self, num_inference_steps: int) -> np.ndarray:
        """The descending timesteps of an ``num_inference_steps`` run (diffusers' ``set_timesteps``)."""
        n, t = int(num_inference_steps), self.num_train_timesteps
        if not 1 <= n <= t:
            raise ValueError(f"steps must be between 1 and {t}, got {n}")
        if self.timestep_spacing == "linspace":
            return np.linspace(0, t - 1, n).round()[::-1].astype(np.int64)
        if self.timestep_spacing == "leading":
            return (np.arange(0, n) * (t // n)).round()[::-1].astype(np.int64) + self.steps_offset
        ratio = t / n
        return np.round(np.arange(t, 0, -ratio)).astype(np.int64) - 1

    def _x0_eps(self, model_output: np.ndarray, t: int, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = self.alphas_cumprod[t]
        b = 1 - a
        if self.prediction_type == "epsilon":
            x0, eps = (sample - b**0.5 * model_output) / a**0.5, model_output
        elif self.prediction_type == "sample":
            x0 = model_output
            eps = (sample - a**0.5 * x0) / b**0.5
        else:  # v_prediction
            x0 = a**0.5 * sample - b**0.5 * model_output
            eps = a**0.5 * model_output + b**0.5 * sample
        if self.clip_sample:
            x0 = np.clip(x0, -self.clip_sample_range, self.clip_sample_range)
        return x0, eps


def ddim_step(
    schedule: NoiseSchedule,
    model_output: np.ndarray,
    timestep: int,
    sample: np.ndarray,
    num_inference_steps: int,
    *,
    eta: float = 0.0,
    noise: np.ndarray | None = None,
) -> np.ndarray:
    """One DDIM step from ``timestep`` (diffusers ``DDIMScheduler.step``); ``noise`` is needed when
    ``eta`` > 0 (the caller draws it, so seeds are the caller's)."""
    prev = timestep - schedule.num_train_timesteps // num_inference_steps
    ac = schedule.alphas_cumprod
    a_t = ac[timestep]
    a_prev = ac[prev] if prev >= 0 else (np.float32(1.0) if schedule.set_alpha_to_one else ac[0])
    x0, eps = schedule._x0_eps(model_output, timestep, sample)
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std = eta * variance**0.5
    out = a_prev**0.5 * x0 + (1 - a_prev - std**2) ** 0.5 * eps
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        out = out + std * noise
    return out.astype(sample.dtype, copy=False)


def ddpm_step(
    schedule: NoiseSchedule,
    model_output: np.ndarray,
    timestep: int,
    prev_timestep: int,
    sample: np.ndarray,
    noise: np.ndarray | None = None,
) -> np.ndarray:
    """One ancestral DDPM step ``timestep`` → ``prev_timestep`` (−1 after the last): diffusers
    ``DDPMScheduler.step`` with ``variance_type="fixed_small"``; ``noise`` is needed while
    ``timestep`` > 0."""
    ac = schedule.alphas_cumprod
    a_t = ac[timestep]
    a_prev = ac[prev_timestep] if prev_timestep >= 0 else np.float32(1.0)
    alpha_t = a_t / a_prev
    beta_t = 1 - alpha_t
    x0, _ = schedule._x0_eps(model_output, timestep, sample)
    out = (a_prev**0.5 * beta_t / (1 - a_t)) * x0 + (alpha_t**0.5 * (1 - a_prev) / (1 - a_t)) * sample
    if timestep > 0:
        if noise is None:
            raise ValueError("ddpm_step needs noise while timestep > 0")
        variance = max((1 - a_prev) / (1 - a_t) * beta_t, 1e-20)
        out = out + variance**0.5 * noise
    return out.astype(sample.dtype, copy=False)


def lcm_timesteps(schedule: NoiseSchedule, num_inference_steps: int) -> np.ndarray:
    """diffusers ``LCMScheduler.set_timesteps(n)``: ``n`` evenly spaced points of the distillation grid
    (``original_inference_steps`` points, k = T // original apart), descending."""
    n, original = int(num_inference_steps), schedule.original_inference_steps
    if not 1 <= n <= original:
        raise ValueError(f"steps must be between 1 and {original} for LCM, got {n}")
    k = schedule.num_train_timesteps // original
    grid = (np.arange(1, original + 1) * k - 1)[::-1]
    return grid[np.floor(np.linspace(0, len(grid), num=n, endpoint=False)).astype(np.int64)]


def lcm_step(
    schedule: NoiseSchedule,
    model_output: np.ndarray,
    timestep: int,
    prev_timestep: int | None,
    sample: np.ndarray,
    noise: np.ndarray | None = None,
) -> np.ndarray:
    """One multistep consistency-sampling step (diffusers ``LCMScheduler.step``): the consistency
    function's estimate of x0, re-noised to ``prev_timestep`` — or returned as is on the last step
    (``prev_timestep`` None)."""
    ac = schedule.alphas_cumprod
    x0, _ = schedule._x0_eps(model_output, timestep, sample)
    scaled = timestep * schedule.timestep_scaling
    c_skip = 0.25 / (scaled**2 + 0.25)  # sigma_data = 0.5
    c_out = scaled / (scaled**2 + 0.25) ** 0.5
    denoised = c_out * x0 + c_skip * sample
    if prev_timestep is None:
        return denoised.astype(sample.dtype, copy=False)
    if noise is None:
        raise ValueError("lcm_step needs noise before the last step")
    a_prev = ac[prev_timestep]
    return (a_prev**0.5 * denoised + (1 - a_prev) ** 0.5 * noise).astype(sample.dtype, copy=False)


__all__ = ["NoiseSchedule", "ddim_step", "ddpm_step", "lcm_step", "lcm_timesteps"]
