"""A diffusers ``UNet2DModel`` conditioned on the requested Norberg-angle pair.

diffusers' ``class_embed_type="identity"`` adds a (B, time_embed_dim) vector to the timestep embedding;
we make that vector from the two angles (fixed Fourier features → MLP), so the condition is continuous
— 101.5° is between 101° and 102°, not a class. A learned *null* vector stands in when the condition is
dropped in training, which is what classifier-free guidance needs at sampling time.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers import UNet2DModel
from torch import nn

# Fixed (not learned) octave frequencies: the embedding is deterministic and exports to ONNX as constants.
N_FREQUENCIES = 8


def fourier_features(na: torch.Tensor, n_frequencies: int = N_FREQUENCIES) -> torch.Tensor:
    """(B, 2) angles scaled to [-1, 1] → (B, 2 + 4·n) [na, sin(2^k π na), cos(2^k π na)]."""
    freqs = (2.0 ** torch.arange(n_frequencies, dtype=na.dtype, device=na.device)) * math.pi
    angles = na[..., None] * freqs  # (B, 2, n)
    return torch.cat([na, angles.sin().flatten(1), angles.cos().flatten(1)], dim=1)


def unet_config(size: int = 128, *, tiny: bool = False, channels: int = 1) -> dict[str, Any]:
    """UNet2DModel settings: the default for 128² pixel space (or ``channels`` latents), or a tiny one
    for tests."""
    if tiny:
        return dict(
            sample_size=size,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            attention_head_dim=8,
        )
    # Five levels (128 → 8 px) with self-attention only at 16², thin at full resolution: the 2-core CPU
    # this was trained on does ~1 step/s at batch 16 (the 4-level (32, 64, 128, 128) UNet: ~9 s).
    return dict(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(16, 32, 64, 128, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=32,
    )


PELVIS_SPAN = 2.4  # hipgen.angle.geometry.PELVIS_SPAN: the views' side over the inter-head distance
HINT_LENGTH = 0.22  # ray length over the inter-head distance (the rim is ≈ 0.14 of it from the head)
HINT_WIDTH = 0.02  # Gaussian half-width of the ray, same unit


def angle_hint(na_deg: torch.Tensor, size: int, span: float = PELVIS_SPAN) -> torch.Tensor:
    """(B, 2) [left, right] requested angles in degrees → (B, 1, S, S) map of the two rays along which
    the craniolateral rims must lie in a pelvis view (heads at fixed places: centred, upright, side =
    span × inter-head distance; the right head on image left). A spatial condition (as ControlNet's
    keypoint maps) is learnt in far fewer steps than the same information as a global embedding: the
    Norberg angle is a few pixels of rim position, which a global vector barely moves."""
    d = size / span
    c = (size - 1) / 2.0
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=na_deg.dtype, device=na_deg.device),
        torch.arange(size, dtype=na_deg.dtype, device=na_deg.device),
        indexing="ij",
    )
    rad = na_deg * (math.pi / 180.0)  # torch.deg2rad has no ONNX export
    rays = []
    for side, sign in ((1, -1.0), (0, 1.0)):  # right head on image left (x = c − d/2), rim lateral
        hx = c + sign * d / 2
        ux = (-sign * torch.cos(rad[:, side]))[:, None, None]  # the lateral x component
        uy = (-torch.sin(rad[:, side]))[:, None, None]  # cranial = up
        vx, vy = xx[None] - hx, yy[None] - c
        along = vx * ux + vy * uy
        perp = (vx * uy - vy * ux).abs()
        inside = ((along >= 0) & (along <= HINT_LENGTH * d)).to(na_deg.dtype)
        rays.append(inside * torch.exp(-0.5 * (perp / (HINT_WIDTH * d)) ** 2))
    # no tensor sized from len(na_deg): the ONNX trace would freeze the batch
    out = torch.maximum(rays[0], rays[1])
    return out[:, None]


class NaConditionedUNet(nn.Module):
    """``forward(sample, timestep, na, keep)`` → predicted noise; ``na`` (B, 2) from
    :func:`hipgen.generate.conditions.condition_vector`, ``keep`` (B,) bool: False uses the null
    condition (unconditional branch of classifier-free guidance).

    With ``hint`` (pixel space only) the requested angles also enter as an extra input channel, the
    rays of :func:`angle_hint` (zeros for the null condition); the graph's inputs stay the same."""

    def __init__(
        self,
        config: dict[str, Any],
        n_frequencies: int = N_FREQUENCIES,
        *,
        hint: bool = False,
        na_range: tuple[float, float] = (70.0, 130.0),
    ) -> None:
        super().__init__()
        self.config = dict(config)
        self.hint = hint
        self.na_range = na_range
        unet_kw = dict(config)
        if hint:
            unet_kw["in_channels"] = config["in_channels"] + 1
        self.unet = UNet2DModel(**unet_kw, class_embed_type="identity")
        dim = config["block_out_channels"][0] * 4  # UNet2DModel's time_embed_dim
        self.n_frequencies = n_frequencies
        self.cond_mlp = nn.Sequential(nn.Linear(2 + 4 * n_frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null = nn.Parameter(torch.zeros(dim))

    def embed(self, na: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.cond_mlp(fourier_features(na, self.n_frequencies))
        if keep is None:
            return emb
        return torch.where(keep[:, None], emb, self.null.expand_as(emb))

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, na: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.hint:
            lo, hi = self.na_range
            hint = angle_hint((na + 1.0) / 2.0 * (hi - lo) + lo, sample.shape[-1])
            if keep is not None:
                hint = hint * keep[:, None, None, None].to(hint.dtype)
            sample = torch.cat([sample, hint], dim=1)
        return self.unet(sample, timestep, class_labels=self.embed(na, keep)).sample

    @classmethod
    def with_hint_from(cls, base: NaConditionedUNet, na_range: tuple[float, float]) -> NaConditionedUNet:
        """``base`` with the hint channel added: its weights, and a zero-initialised input filter for the
        hint, so training starts exactly where ``base`` was (fine-tuning, as ControlNet's zero convs)."""
        net = cls(base.config, base.n_frequencies, hint=True, na_range=na_range)
        state = base.state_dict()
        w = state["unet.conv_in.weight"]
        state["unet.conv_in.weight"] = torch.cat([w, torch.zeros_like(w[:, :1])], dim=1)
        net.load_state_dict(state)
        return net


def torch_model_fn(net: NaConditionedUNet):  # noqa: ANN201 - a hipgen.generate.sampling.ModelFn
    """The PyTorch UNet as the numpy callable :func:`hipgen.generate.sampling.sample` drives."""

    def model(x, t, na, keep):  # noqa: ANN001, ANN202
        with torch.no_grad():
            args = (torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(na), torch.from_numpy(keep))
            return net.eval()(*args).numpy()

    return model


__all__ = [
    "N_FREQUENCIES",
    "NaConditionedUNet",
    "angle_hint",
    "fourier_features",
    "torch_model_fn",
    "unet_config",
]
