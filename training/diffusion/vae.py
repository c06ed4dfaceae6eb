"""The latent (SD-like) path: a small diffusers ``AutoencoderKL`` trained on phantom pelvis views, so the
angle-conditioned UNet can denoise 4-channel latents at 1/4 (or 1/8) of the side — 256² or 512² images
for the compute of 64² — and an ONNX decoder turns the sampled latents back into pixels on the serving
path.

Loss: L1 reconstruction + a small KL term (β = 1e-6, as latent-diffusion autoencoders use without their
GAN/perceptual terms, which would need pretrained networks). The latents are scaled by 1/std of the
training latents (``scaling_factor``, as SD's 0.18215) so the diffusion sees unit variance.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL
from torch import nn
from tqdm import tqdm

from training.diffusion.export import OPSET


@dataclass
class VaeConfig:
    size: int = 256
    tiny: bool = False
    latent_channels: int = 4
    steps: int = 3000
    batch_size: int = 8
    lr: float = 1e-3
    kl_weight: float = 1e-6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size % self.factor:
            raise ValueError(f"size {self.size} must be a multiple of the VAE's downsampling {self.factor}")

    @property
    def factor(self) -> int:
        return 2 ** (len(vae_config(self).get("block_out_channels")) - 1)


def vae_config(config: VaeConfig) -> dict[str, Any]:
    """AutoencoderKL settings: 3 levels (÷4) by default, 2 (÷2) for tests."""
    channels = (8, 16) if config.tiny else (32, 64, 128)
    return dict(
        in_channels=1,
        out_channels=1,
        latent_channels=config.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=config.size,
    )


def train_vae(
    config: VaeConfig, images: np.ndarray, out: str | Path, *, progress: bool = True
) -> tuple[AutoencoderKL, float]:
    """Train on ``images`` (N, 1, S, S) in [-1, 1]; returns the VAE and its latent scaling factor, both
    saved in ``out`` (diffusers' ``save_pretrained`` layout + ``vae.json``)."""
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[-1] != config.size:
        raise ValueError(f"images must be (N, 1, {config.size}, {config.size}), got {images.shape}")
    torch.manual_seed(config.seed)
    vae = AutoencoderKL(**vae_config(config))
    opt = torch.optim.AdamW(vae.parameters(), lr=config.lr)
    losses = []
    for step in tqdm(range(config.steps), desc="train VAE", disable=not progress):
        g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        idx = torch.randint(len(images), (config.batch_size,), generator=g)
        x = torch.from_numpy(images[idx.numpy()])
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g)
        recon = vae.decode(z).sample
        loss = nn.functional.l1_loss(recon, x) + config.kl_weight * posterior.kl().mean()
        loss.backward()
        nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    vae.eval()
    with torch.no_grad():
        sample = torch.from_numpy(images[: min(len(images), 64)])
        scaling = float(1.0 / vae.encode(sample).latent_dist.mean.std().clamp(min=1e-6))
    out = Path(out)
    vae.save_pretrained(out / "vae")
    meta = {"config": asdict(config), "scaling_factor": scaling, "final_loss": losses[-1] if losses else None}
    (out / "vae.json").write_text(json.dumps(meta, indent=2))
    return vae, scaling


def load_vae(run: str | Path) -> tuple[AutoencoderKL, float, VaeConfig]:
    run = Path(run)
    meta = json.loads((run / "vae.json").read_text())
    return (
        AutoencoderKL.from_pretrained(run / "vae").eval(),
        float(meta["scaling_factor"]),
        VaeConfig(**meta["config"]),
    )


def encode(vae: AutoencoderKL, images: np.ndarray, scaling: float, batch: int = 32) -> np.ndarray:
    """(N, 1, S, S) [-1, 1] → scaled latent means (N, C, S/f, S/f) float32: the diffusion's data."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(vae.encode(torch.from_numpy(images[i : i + batch])).latent_dist.mean * scaling)
    return torch.cat(out).numpy().astype(np.float32)


def decoder_fn(vae: AutoencoderKL, scaling: float):  # noqa: ANN201 - numpy latents → numpy pixels
    """Scaled latents (B, C, h, w) → images (B, 1, S, S) in [-1, 1], for sample grids."""
    dec = _Decoder(vae.eval(), scaling)

    def decode(latents: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return dec(torch.from_numpy(np.asarray(latents, np.float32))).numpy()

    return decode


class _Decoder(nn.Module):
    def __init__(self, vae: AutoencoderKL, scaling: float) -> None:
        super().__init__()
        self.vae, self.scaling = vae, scaling

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent / self.scaling).sample.clamp(-1.0, 1.0)


def export_decoder(vae: AutoencoderKL, scaling: float, path: str | Path) -> Path:
    """ONNX ``latent`` (B, C, h, w), as the UNet samples it → ``image`` (B, 1, S, S) in [-1, 1]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    c = vae.config.latent_channels
    h = vae.config.sample_size // 2 ** (len(vae.config.block_out_channels) - 1)
    torch.onnx.export(
        _Decoder(vae.eval(), scaling),
        (torch.zeros(1, c, h, h),),
        str(path),
        input_names=["latent"],
        output_names=["image"],
        dynamic_axes={"latent": {0: "batch"}, "image": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    return path


__all__ = ["VaeConfig", "decoder_fn", "encode", "export_decoder", "load_vae", "train_vae", "vae_config"]
