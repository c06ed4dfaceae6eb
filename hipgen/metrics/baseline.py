"""The pure-noise baseline of the published elbow study: every metric is also computed for images of
uniform noise (same count and size as the scored set), and the *improvement factor* says how much better
than noise the generator is — noise/model for distances (FID, KID, MMD: lower is better), model/noise for
similarities (SSIM, MS-SSIM, precision, recall: higher is better)."""

from __future__ import annotations

import numpy as np

LOWER_IS_BETTER = frozenset({"fid", "kid", "mmd"})


def noise_image(index: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Noise image ``index`` of the baseline set ``seed``: (H, W) float32 uniform in [0, 1], quantised to
    8 bits like every scored image. Each is drawn on its own, so a set is made a batch at a time."""
    rng = np.random.default_rng([seed, index])
    return rng.integers(0, 256, size=shape, dtype=np.uint8).astype(np.float32) / 255.0


def noise_images(count: int, shape: tuple[int, int], seed: int = 0, start: int = 0) -> np.ndarray:
    """(count, H, W): noise images ``start … start + count − 1`` of the baseline set ``seed``."""
    return (
        np.stack([noise_image(start + i, shape, seed) for i in range(count)])
        if count
        else np.zeros((0, *shape))
    )


def improvement_factor(metric: str, value: float, noise_value: float) -> float:
    """How many times better than noise ``value`` is (> 1 = better); NaN where undefined."""
    lower = metric in LOWER_IS_BETTER
    num, den = (noise_value, value) if lower else (value, noise_value)
    if not (np.isfinite(num) and np.isfinite(den)) or den <= 0:
        return float("nan")
    return float(num / den)


__all__ = ["LOWER_IS_BETTER", "improvement_factor", "noise_image", "noise_images"]
