"""SSIM and MS-SSIM in numpy (the serving path has no torch), paired (image i of one set against image i
of the other, as the published elbow study scores one synthetic image per real test image) and as
*intra-set diversity* (mean similarity of random pairs within one set: lower = more varied; a collapsed
generator scores near 1).

The definitions are pytorch-msssim's (Wang et al. 2003/2004): an 11-tap Gaussian window with σ = 1.5
applied as a *valid* separable filter, K = (0.01, 0.03), MS-SSIM over five scales with the standard
weights, 2× average pooling between scales, negative contrast terms clipped at 0. The tests check both
functions against pytorch-msssim and torchmetrics on the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    if size % 2 != 1 or size < 1:
        raise ValueError(f"window size must be odd, got {size}")
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Separable correlation over the last two axes, 'valid' region only (no padding)."""
    from numpy.lib.stride_tricks import sliding_window_view

    x = sliding_window_view(x, len(win), axis=-1) @ win
    return np.swapaxes(sliding_window_view(np.swapaxes(x, -1, -2), len(win), axis=-1) @ win, -1, -2)


def _as_batch(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"images must be (H, W) or (N, H, W), got shape {x.shape}")
    return x


def _ssim_cs(
    x: np.ndarray, y: np.ndarray, win: np.ndarray, data_range: float, k: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    c1, c2 = (k[0] * data_range) ** 2, (k[1] * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, win), _filter_valid(y, win)
    var_x = np.maximum(_filter_valid(x * x, win) - mu_x**2, 0.0)  # ≥ 0 against round-off
    var_y = np.maximum(_filter_valid(y * y, win) - mu_y**2, 0.0)
    cov = _filter_valid(x * y, win) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    return ssim_map.mean(axis=(-2, -1)), cs_map.mean(axis=(-2, -1))


def _check(x: np.ndarray, y: np.ndarray, smallest: int) -> None:
    if x.shape != y.shape:
        raise ValueError(f"paired images must have the same shape, got {x.shape} and {y.shape}")
    if min(x.shape[-2:]) < smallest:
        raise ValueError(f"images must be at least {smallest} px on each side, got {x.shape[-2:]}")


def ssim(
    x: np.ndarray,
    y: np.ndarray,
    *,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k: tuple[float, float] = (0.01, 0.03),
    border: str = "valid",
) -> np.ndarray:
    """SSIM of each pair: ``x``, ``y`` (N, H, W) or (H, W) → (N,). ``border``: "valid" averages the SSIM
    map where the window fits (Wang et al.'s code, pytorch-msssim); "reflect" pads by half a window with
    mirrored pixels and averages the full-size map (torchmetrics' convention, slightly different)."""
    x, y = _as_batch(x), _as_batch(y)
    _check(x, y, win_size)
    if border == "reflect":
        p = win_size // 2
        x, y = (np.pad(a, [(0, 0), (p, p), (p, p)], mode="reflect") for a in (x, y))
    elif border != "valid":
        raise ValueError(f"border must be 'valid' or 'reflect', got {border!r}")
    return _ssim_cs(x, y, gaussian_window(win_size, sigma), data_range, k)[0]


def _avg_pool2(x: np.ndarray) -> np.ndarray:
    """torch's avg_pool2d(kernel 2, padding = side % 2, zeros counted), as pytorch-msssim downsamples."""
    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    if ph or pw:
        x = np.pad(x, [(0, 0), (ph, ph), (pw, pw)])
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[:, :h, :w]
    return 0.25 * (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2])


def ms_ssim_min_side(win_size: int = 11, levels: int = len(MS_SSIM_WEIGHTS)) -> int:
    """Smallest image side MS-SSIM accepts: the window must still fit after ``levels − 1`` halvings."""
    return (win_size - 1) * 2 ** (levels - 1) + 1


def ms_ssim(
    x: np.ndarray,
    y: np.ndarray,
    *,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    k: tuple[float, float] = (0.01, 0.03),
) -> np.ndarray:
    """MS-SSIM of each pair: (N, H, W) → (N,). Images need ≥ :func:`ms_ssim_min_side` px a side (161 for
    the defaults); score smaller ones resized up, as the published study did."""
    x, y = _as_batch(x), _as_batch(y)
    _check(x, y, ms_ssim_min_side(win_size, len(weights)))
    win = gaussian_window(win_size, sigma)
    factors = []
    for level in range(len(weights)):
        s, cs = _ssim_cs(x, y, win, data_range, k)
        if level < len(weights) - 1:
            factors.append(np.maximum(cs, 0.0))
            x, y = _avg_pool2(x), _avg_pool2(y)
    factors.append(np.maximum(s, 0.0))
    return np.prod(np.stack(factors) ** np.asarray(weights)[:, None], axis=0)


@dataclass(frozen=True)
class Similarity:
    mean: float
    std: float
    pairs: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _summary(values: np.ndarray) -> Similarity:
    return Similarity(float(values.mean()), float(values.std()), int(len(values)))


def paired_similarity(
    x: np.ndarray, y: np.ndarray, *, multiscale: bool = False, batch: int = 16
) -> Similarity:
    """Mean (M)S-SSIM of image i of ``x`` with image i of ``y``."""
    x, y = _as_batch(x), _as_batch(y)
    if len(x) != len(y) or not len(x):
        raise ValueError(f"paired scoring needs two non-empty sets of one size, got {len(x)} and {len(y)}")
    fn = ms_ssim if multiscale else ssim
    return _summary(np.concatenate([fn(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]))


def pair_indices(n: int, pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``pairs`` distinct unordered pairs (i < j) of ``n`` images, drawn without replacement (all pairs
    when there are fewer); the same seed gives the same pairs."""
    if n < 2:
        raise ValueError(f"diversity needs at least 2 images, got {n}")
    total = n * (n - 1) // 2
    if total <= pairs:
        return np.triu_indices(n, k=1)
    rng = np.random.default_rng(seed)
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < pairs:  # rejection sampling: never builds the n² list of pairs
        a, b = rng.integers(n, size=2)
        if a != b:
            chosen.add((int(min(a, b)), int(max(a, b))))
    i, j = np.array(sorted(chosen)).T
    return i, j


def diversity(
    x: Sequence[np.ndarray],
    *,
    pairs: int = 200,
    seed: int = 0,
    multiscale: bool = False,
    batch: int = 16,
    on_batch: Callable[[int, int], None] | None = None,
) -> Similarity:
    """Intra-set similarity: mean (M)S-SSIM over ``pairs`` random pairs of distinct images of ``x``
    (every pair when there are fewer). Lower means a more diverse set. ``x`` is an (N, H, W) array or
    any sequence of equal-shape images — e.g. one that loads each image when indexed, so only the
    images the pairs touch are ever made; ``on_batch(done, total)`` follows every batch of pairs."""
    i, j = pair_indices(len(x), pairs, seed)
    fn = ms_ssim if multiscale else ssim
    vals = []
    for s in range(0, len(i), batch):
        a, b = i[s : s + batch], j[s : s + batch]
        vals.append(fn(np.stack([x[int(k)] for k in a]), np.stack([x[int(k)] for k in b])))
        if on_batch:
            on_batch(min(s + batch, len(i)), len(i))
    return _summary(np.concatenate(vals))


__all__ = [
    "MS_SSIM_WEIGHTS",
    "Similarity",
    "diversity",
    "gaussian_window",
    "ms_ssim",
    "ms_ssim_min_side",
    "paired_similarity",
    "pair_indices",
    "ssim",
]
