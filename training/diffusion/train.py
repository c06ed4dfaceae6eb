"""Training loop of the angle-conditioned pixel-space DDPM, under accelerate (this CPU, one GPU or DDP
on several, unchanged).

Defaults are the publications': AdamW lr 3e-4, grad-norm clip 0.5; plus EMA of the weights and
condition dropout (10 %) for classifier-free guidance. Every random draw of step ``k`` (batch, noise,
timesteps, dropout) comes from a generator seeded by ``(seed, k)``, so a run resumed from a checkpoint
continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel, compute_snr
from tqdm import tqdm

from hipgen.generate.conditions import TRAINED_NA_RANGE, condition_vector
from training.diffusion.model import NaConditionedUNet, unet_config


@dataclass
class DiffusionConfig:
    size: int = 128  # side of what the UNet denoises: pixels, or latents of a VAE run
    tiny: bool = False  # the test-sized UNet
    channels: int = 1  # 1: pixel space; the VAE's latent channels on the latent path
    hint: bool = False  # the requested angles also as a spatial input channel (model.angle_hint)
    init: str | None = None  # start from this model.pt (fine-tuning; adds the hint channel if asked)
    steps: int = 20_000
    batch_size: int = 16
    lr: float = 3e-4
    grad_clip: float = 0.5
    ema_decay: float = 0.999
    cond_drop: float = 0.1
    snr_gamma: float | None = 5.0  # Min-SNR-γ loss weighting (Hang et al. 2023): converges several × faster
    warmup_steps: int = 200
    seed: int = 0
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    checkpoint_every: int = 1000
    na_range: tuple[float, float] = TRAINED_NA_RANGE

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.size < 8:
            raise ValueError("steps and batch_size must be ≥ 1 and size ≥ 8")
        if not 0.0 <= self.cond_drop < 1.0:
            raise ValueError(f"cond_drop must be in [0, 1), got {self.cond_drop}")


@dataclass
class DiffusionSet:
    """Square grey images (N, 1, S, S) float32 in [-1, 1] — or scaled VAE latents (N, C, s, s) — and
    their Norberg angles (N, 2) [left, right] in degrees."""

    images: np.ndarray
    na: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[2] != self.images.shape[3]:
            raise ValueError(f"images must be (N, C, S, S), got {self.images.shape}")
        if len(self.images) != len(self.na) or len(self.images) == 0:
            raise ValueError(f"{len(self.images)} images for {len(self.na)} angle pairs")


@dataclass
class DiffusionRun:
    model: NaConditionedUNet  # the EMA weights
    config: DiffusionConfig
    steps: int
    losses: list[float] = field(default_factory=list)


def build_model(config: DiffusionConfig) -> NaConditionedUNet:
    return NaConditionedUNet(
        unet_config(config.size, tiny=config.tiny, channels=config.channels),
        hint=config.hint,
        na_range=config.na_range,
    )


def noise_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)


def _step_batch(
    config: DiffusionConfig, data: DiffusionSet, step: int, scheduler: DDPMScheduler
) -> tuple[torch.Tensor, ...]:
    g, x0, na, noise = seeded_batch(data, config.seed, step, config.batch_size, config.na_range)
    t = torch.randint(config.num_train_timesteps, (config.batch_size,), generator=g)
    keep = torch.rand(config.batch_size, generator=g) >= config.cond_drop
    return scheduler.add_noise(x0, noise, t), t, na, keep, noise


def seeded_batch(
    data: DiffusionSet, seed: int, step: int, batch_size: int, na_range: tuple[float, float]
) -> tuple[torch.Generator, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step ``step``'s images, model-scaled conditions and noise, from a generator seeded by
    ``(seed, step)`` — returned too, for the step's further draws — so a resumed run repeats them."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(len(data.images), (batch_size,), generator=g).numpy()
    x0 = torch.from_numpy(data.images[idx])
    na = torch.from_numpy(condition_vector(data.na[idx], na_range))
    return g, x0, na, torch.randn(x0.shape, generator=g)


def resume_step(accelerator: Accelerator, ckpt: Path) -> int:
    """Load ``ckpt`` (accelerate state) and return the step it was saved at."""
    if not (ckpt / "step.json").is_file():
        raise FileNotFoundError(f"{ckpt}: no checkpoint to resume from")
    accelerator.load_state(str(ckpt))
    return int(json.loads((ckpt / "step.json").read_text())["step"])


def save_checkpoint(accelerator: Accelerator, ckpt: Path, step: int) -> None:
    accelerator.save_state(str(ckpt))
    (ckpt / "step.json").write_text(json.dumps({"step": step}))


def _loss(
    pred: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    scheduler: DDPMScheduler,
    snr_gamma: float | None,
) -> torch.Tensor:
    """ε-MSE, per sample weighted by min(SNR, γ)/SNR when ``snr_gamma`` is set (diffusers' recipe)."""
    if snr_gamma is None:
        return F.mse_loss(pred, noise)
    snr = compute_snr(scheduler, t)
    weight = torch.clamp(snr, max=snr_gamma) / snr
    per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weight).mean()


def train(
    config: DiffusionConfig,
    data: DiffusionSet,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_checkpoint: Callable[[DiffusionRun], None] | None = None,
) -> DiffusionRun:
    """Train to ``config.steps`` total steps, checkpointing into ``out/checkpoint`` (model, optimizer,
    EMA); ``resume`` continues from there. Returns the EMA model, also saved as ``out/model.pt/.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if data.images.shape[-1] != config.size or data.images.shape[1] != config.channels:
        raise ValueError(
            f"data is {data.images.shape[1:]}, the config says {config.channels} × {config.size}²"
        )
    torch.manual_seed(config.seed)
    accelerator = Accelerator()
    model = build_model(config)
    if config.init and not resume:
        base, _ = load(config.init)
        model = (
            NaConditionedUNet.with_hint_from(base, config.na_range) if config.hint and not base.hint else base
        )
    ema = EMAModel(model.parameters(), decay=config.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / max(1, config.warmup_steps)))
    model, opt, warmup = accelerator.prepare(model, opt, warmup)
    accelerator.register_for_checkpointing(ema)
    scheduler = noise_scheduler(config)
    ckpt = out / "checkpoint"
    start = resume_step(accelerator, ckpt) if resume else 0
    losses: list[float] = []
    model.train()
    bar = tqdm(range(start, config.steps), desc="train diffusion", disable=not progress, initial=start)
    for step in bar:
        noisy, t, na, keep, noise = (
            v.to(accelerator.device) for v in _step_batch(config, data, step, scheduler)
        )
        loss = _loss(model(noisy, t, na, keep), noise, t, scheduler, config.snr_gamma)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        warmup.step()
        opt.zero_grad(set_to_none=True)
        ema.step(accelerator.unwrap_model(model).parameters())
        losses.append(float(loss.detach()))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        done = step + 1
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_checkpoint(accelerator, ckpt, done)
            if on_checkpoint is not None:
                on_checkpoint(DiffusionRun(_ema_model(accelerator, model, ema, config), config, done, losses))
    run = DiffusionRun(_ema_model(accelerator, model, ema, config), config, config.steps, losses)
    save(run, out / "model")
    return run


def _ema_model(
    accelerator: Accelerator, model: torch.nn.Module, ema: EMAModel, config: DiffusionConfig
) -> NaConditionedUNet:
    copy = build_model(config)
    copy.load_state_dict(accelerator.unwrap_model(model).state_dict())
    ema.copy_to(copy.parameters())
    return copy.eval()


def save(run: DiffusionRun, path: str | Path) -> Path:
    path = Path(path)
    torch.save(run.model.state_dict(), path.with_suffix(".pt"))
    meta = {
        "config": asdict(run.config),
        "steps": run.steps,
        "final_loss": run.losses[-1] if run.losses else None,
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path.with_suffix(".pt")


def load(path: str | Path) -> tuple[NaConditionedUNet, DiffusionConfig]:
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    cfg = meta["config"] | {"na_range": tuple(meta["config"]["na_range"])}
    config = DiffusionConfig(**cfg)
    model = build_model(config)
    model.load_state_dict(torch.load(path.with_suffix(".pt"), map_location="cpu", weights_only=True))
    return model.eval(), config


__all__ = [
    "DiffusionConfig",
    "DiffusionRun",
    "DiffusionSet",
    "build_model",
    "load",
    "noise_scheduler",
    "save",
    "train",
]
