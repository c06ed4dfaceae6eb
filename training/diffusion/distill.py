"""Latent-consistency distillation (LLCM, published-methods §C) of the angle-conditioned DDPM into a
few-step student that samples with diffusers' ``LCMScheduler`` (numpy port: ``hipgen.generate.schedulers``).

Per step, for a batch of training views ``x0`` and a grid index ``n`` on the teacher's 50-point DDIM grid
(``t = (n+1)·k − 1``, skipping step **k = 20**, ``s = t − k``):

- ``x_t`` = forward-noised ``x0``; the frozen teacher's guided noise ``ε̃ = (1+ω) ε(x_t, c) − ω ε(x_t, ∅)``
  (classifier-free guidance *inside* the PF-ODE, ω fixed per run) takes one ODE step ``t → s`` with the
  DDIM solver, or the leapfrog solver (:func:`leapfrog_step`);
- the consistency function ``f(x, t) = c_skip(t) x + c_out(t) x̂0`` (diffusers' boundary scalings,
  σ_data = 0.5, timestep scaling 10: c_skip(0) = 1, c_out(0) = 0) of the online student at ``(x_t, t)``
  is pulled towards the EMA ("target") student's ``f`` at ``(x_s, s)``, pseudo-Huber loss as in diffusers'
  ``train_lcm_distill_*`` scripts.

The student starts as a copy of the teacher and keeps its inputs, so it exports and serves exactly like
it; as ω is baked in, it samples with guidance 1 (one UNet pass per step).

Why not diffusers' script: it is written for text-conditioned latent SD (a VAE, a text encoder, a w
embedding); the loop is short, and this one reuses the teacher's data, seeding and resume conventions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm import tqdm

from hipgen.generate.conditions import TRAINED_NA_RANGE
from training.diffusion.model import NaConditionedUNet
from training.diffusion.train import (
    DiffusionConfig,
    DiffusionSet,
    noise_scheduler,
    resume_step,
    save_checkpoint,
    seeded_batch,
)

SOLVERS = ("ddim", "leapfrog")


@dataclass
class DistillConfig:
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-5
    grad_clip: float = 0.5
    ema_decay: float = 0.95  # the target network (LLCM)
    omega: float = 1.0  # CFG inside the PF-ODE: ε̃ = (1+ω)ε_c − ω ε_∅ (ω = guidance scale − 1)
    skip: int = 20  # k: the teacher's ODE step spans k training timesteps
    solver: str = "ddim"
    huber_c: float = 0.001
    seed: int = 0
    checkpoint_every: int = 250
    timestep_scaling: float = 10.0
    na_range: tuple[float, float] = TRAINED_NA_RANGE

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.steps < 1 or self.batch_size < 1 or self.skip < 1:
            raise ValueError("steps, batch_size and skip must be ≥ 1")
        if self.omega < 0:
            raise ValueError(f"omega must be ≥ 0, got {self.omega}")


@dataclass
class DistillRun:
    model: NaConditionedUNet  # the target (EMA) student, what LCM sampling uses
    config: DistillConfig
    steps: int
    losses: list[float] = field(default_factory=list)


def boundary_scalings(t: torch.Tensor, timestep_scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """c_skip, c_out of diffusers' LCM (σ_data = 0.5): exactly those :func:`lcm_step` samples with."""
    scaled = t.float() * timestep_scaling
    c_skip = 0.25 / (scaled**2 + 0.25)
    c_out = scaled / (scaled**2 + 0.25) ** 0.5
    return c_skip[:, None, None, None], c_out[:, None, None, None]


def _alpha(ac: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = ac[t.clamp(min=0)][:, None, None, None]
    return a.sqrt(), (1 - a).sqrt()


def x0_estimate(x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, ac: torch.Tensor) -> torch.Tensor:
    sa, sb = _alpha(ac, t)
    return (x - sb * eps) / sa


def ddim_solver_step(
    x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, s: torch.Tensor, ac: torch.Tensor
) -> torch.Tensor:
    """One deterministic DDIM step t → s (s = −1 … 0 means ᾱ_s = ᾱ_0, as diffusers' DDIMSolver)."""
    x0 = x0_estimate(x, eps, t, ac)
    sa_s, sb_s = _alpha(ac, s)
    return sa_s * x0 + sb_s * eps


def leapfrog_step(
    x: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    s: torch.Tensor,
    ac: torch.Tensor,
    eps_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    h: float = 0.25,
) -> torch.Tensor:
    """The leapfrog ODE step as transcribed (published-methods §C), initialised from DDIM quantities:

    ``x_t = √ᾱ_s x̂0``, ``v_t = √(1−ᾱ_s) ε̂``, ``v½ = 2 v_t``; ``x1 = x_t + h v½``;
    ``v3/2 = v½ + h F(x1)``; ``x2 = x1 + h v3/2``.

    The transcription leaves h and F open; our reading: ``F(x1) = (2√(1−ᾱ_s) ε̂(x1, s) − v½) / (2h)``
    (the change of v½ when the noise is re-estimated at the half step, per unit h) and ``h = 1/4``, the
    one value for which the step is exactly DDIM when the noise estimate does not change
    (``x2 = √ᾱ_s x̂0 + √(1−ᾱ_s)(¾ ε̂ + ¼ ε̂(x1, s))``) — a test checks that reduction.
    """
    x0 = x0_estimate(x, eps, t, ac)
    sa_s, sb_s = _alpha(ac, s)
    pos = sa_s * x0
    v_half = 2 * sb_s * eps
    x1 = pos + h * v_half
    force = (2 * sb_s * eps_at(x1, s.clamp(min=0)) - v_half) / (2 * h)
    v_3half = v_half + h * force
    return x1 + h * v_3half


def _pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    return (torch.sqrt((a.float() - b.float()) ** 2 + c**2) - c).mean()


def _draws(
    config: DistillConfig, data: DiffusionSet, step: int, n_grid: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g, x0, na, noise = seeded_batch(data, config.seed, step, config.batch_size, config.na_range)
    n = torch.randint(n_grid, (config.batch_size,), generator=g)
    return x0, na, noise, n


def distill(
    teacher: NaConditionedUNet,
    teacher_config: DiffusionConfig,
    config: DistillConfig,
    data: DiffusionSet,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_checkpoint: Callable[[DistillRun], None] | None = None,
) -> DistillRun:
    """Distil to ``config.steps`` steps, checkpointing into ``out/checkpoint``; returns the target student
    (also saved as ``out/model.pt/.json`` in the teacher's format, so ``train.load`` reads it)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    accelerator = Accelerator()
    teacher = teacher.eval().requires_grad_(False).to(accelerator.device)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    target = copy.deepcopy(teacher).eval().requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=config.lr)
    student, opt = accelerator.prepare(student, opt)
    target.to(accelerator.device)
    scheduler = noise_scheduler(teacher_config)
    ac = scheduler.alphas_cumprod.to(accelerator.device)
    n_grid = teacher_config.num_train_timesteps // config.skip
    ckpt = out / "checkpoint"
    start = 0
    if resume:
        start = resume_step(accelerator, ckpt)
        target.load_state_dict(torch.load(ckpt / "target.pt", map_location="cpu", weights_only=True))

    def guided_eps(x: torch.Tensor, t: torch.Tensor, na: torch.Tensor) -> torch.Tensor:
        b = len(x)
        both = teacher(
            torch.cat([x, x]),
            torch.cat([t, t]),
            torch.cat([na, na]),
            torch.cat([torch.ones(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)]).to(x.device),
        )
        cond, uncond = both[:b], both[b:]
        return (1 + config.omega) * cond - config.omega * uncond

    losses: list[float] = []
    keep = torch.ones(config.batch_size, dtype=torch.bool, device=accelerator.device)
    bar = tqdm(range(start, config.steps), desc="distil LCM", disable=not progress, initial=start)
    for step in bar:
        x0, na, noise, n = (v.to(accelerator.device) for v in _draws(config, data, step, n_grid))
        t = (n + 1) * config.skip - 1
        s = t - config.skip
        x_t = scheduler.add_noise(x0, noise, t)
        cs_t, co_t = boundary_scalings(t, config.timestep_scaling)
        cs_s, co_s = boundary_scalings(s.clamp(min=0), config.timestep_scaling)
        pred = cs_t * x_t + co_t * x0_estimate(x_t, student(x_t, t, na, keep), t, ac)
        with torch.no_grad():
            eps = guided_eps(x_t, t, na)
            if config.solver == "ddim":
                x_s = ddim_solver_step(x_t, eps, t, s, ac)
            else:
                x_s = leapfrog_step(x_t, eps, t, s, ac, lambda x, tt, na=na: guided_eps(x, tt, na))
            s0 = s.clamp(min=0)
            tgt = cs_s * x_s + co_s * x0_estimate(x_s, target(x_s, s0, na, keep), s0, ac)
        loss = _pseudo_huber(pred, tgt, config.huber_c)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(student.parameters(), config.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p_t, p_s in zip(
                target.parameters(), accelerator.unwrap_model(student).parameters(), strict=True
            ):
                p_t.mul_(config.ema_decay).add_(p_s.detach(), alpha=1 - config.ema_decay)
        losses.append(float(loss.detach()))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.5f}")
        done = step + 1
        if done % config.checkpoint_every == 0 or done == config.steps:
            ckpt.mkdir(parents=True, exist_ok=True)
            torch.save(target.state_dict(), ckpt / "target.pt")
            save_checkpoint(accelerator, ckpt, done)  # step.json last: it marks the checkpoint whole
            if on_checkpoint is not None:
                on_checkpoint(DistillRun(target, config, done, losses))
    run = DistillRun(target.eval(), config, config.steps, losses)
    save_student(run, teacher_config, out / "model")
    return run


def save_student(run: DistillRun, teacher_config: DiffusionConfig, path: str | Path) -> Path:
    """The student in the teacher's format (``train.load`` reads it), plus the distillation config."""
    path = Path(path)
    torch.save(run.model.state_dict(), path.with_suffix(".pt"))
    meta = {
        "config": asdict(teacher_config),
        "distill": asdict(run.config),
        "steps": run.steps,
        "final_loss": run.losses[-1] if run.losses else None,
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path.with_suffix(".pt")


__all__ = [
    "SOLVERS",
    "DistillConfig",
    "DistillRun",
    "boundary_scalings",
    "ddim_solver_step",
    "distill",
    "leapfrog_step",
    "save_student",
    "x0_estimate",
]
