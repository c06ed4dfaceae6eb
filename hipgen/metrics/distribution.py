"""Distances between two sets of image *features* (N, D) — FID, KID, MMD and improved precision/recall —
in numpy, so the serving path (ScoreService) needs no torch.

Written here rather than imported because the reference implementations (torchmetrics, torch-fidelity,
clean-fid) compute on torch tensors; the tests check every function against them on the same inputs.
Conventions follow torch-fidelity: ``real`` is the reference set, ``fake`` the set being scored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def _pair(a: np.ndarray, b: np.ndarray, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < minimum:
        raise ValueError(
            f"need two (N ≥ {minimum}, D) feature sets of the same D, got {a.shape} and {b.shape}"
        )
    return a, b


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) — FID's formula
    ‖μa − μb‖² + tr(Σa + Σb − 2 (Σa Σb)^½); scipy's sqrtm, imaginary round-off dropped."""
    from scipy import linalg

    a, b = _pair(a, b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # singular product: offset both, as pytorch-fid does
        eps = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    root = np.real(root)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD² from kernel matrices (diagonals of the within-set kernels left out) — the estimator
    of Bińkowski et al. that KID uses."""
    m, n = len(k_xx), len(k_yy)
    xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * k_xy.sum() / (m * n))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """KID's kernel (x·y / D + coef0)^degree."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


@dataclass(frozen=True)
class KidResult:
    value: float  # mean MMD² over subsets, unitless
    std: float  # population std over subsets (what torchmetrics and torch-fidelity report)
    standard_error: float  # std / √subsets
    subsets: int
    subset_size: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def kid(
    real: np.ndarray, fake: np.ndarray, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> KidResult:
    """Kernel Inception Distance: unbiased polynomial-kernel MMD² averaged over ``subsets`` random
    subsets of ``subset_size`` from each set (clipped to the smaller set's size). Subsets are drawn as
    torch-fidelity draws them (``RandomState(seed).choice`` without replacement, fake then real), so the
    same seed gives torch-fidelity's number."""
    fake, real = _pair(fake, real)
    size = min(subset_size, len(real), len(fake))
    rng = np.random.RandomState(seed % 2**32)  # torch-fidelity's generator; it takes 32-bit seeds
    values = np.empty(subsets)
    for i in range(subsets):
        f = fake[rng.choice(len(fake), size, replace=False)]
        r = real[rng.choice(len(real), size, replace=False)]
        values[i] = mmd2_unbiased(polynomial_kernel(f, f), polynomial_kernel(f, r), polynomial_kernel(r, r))
    std = float(values.std())
    return KidResult(float(values.mean()), std, std / np.sqrt(subsets), subsets, size)


def squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances (X, Y), clipped at 0 against round-off."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.maximum(d, 0.0)


CHUNK = 1024  # rows of a kernel or distance matrix held at once: memory O(CHUNK × N), never N²
BANDWIDTH_SAMPLE = 1000  # points the median heuristic looks at (the median of ~500k distances)


def median_bandwidth(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> float:
    """The median heuristic (Gretton et al. 2012): σ = median Euclidean distance between distinct points
    of the pooled sample (of a seeded subsample of ``BANDWIDTH_SAMPLE`` points when larger). Scale-free,
    so MMDs on different backbones need no hand-tuned σ; with it the kernel is
    k(x, y) = exp(−‖x − y‖² / (2σ²))."""
    pooled = np.concatenate([real, fake])
    if len(pooled) > BANDWIDTH_SAMPLE:
        pooled = pooled[np.random.default_rng(seed).choice(len(pooled), BANDWIDTH_SAMPLE, replace=False)]
    d = squared_distances(pooled, pooled)[np.triu_indices(len(pooled), k=1)]
    sigma = float(np.sqrt(np.median(d)))
    return sigma if sigma > 0 else 1.0


@dataclass(frozen=True)
class MmdResult:
    value: float  # unbiased MMD², unitless
    sigma: float  # RBF bandwidth in feature units

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def mmd_rbf(real: np.ndarray, fake: np.ndarray, *, sigma: float | None = None) -> MmdResult:
    """Unbiased MMD² with the RBF kernel exp(−‖x − y‖² / (2σ²)); σ by :func:`median_bandwidth` unless
    given (give the same σ to compare sets, e.g. a model and its noise baseline)."""
    real, fake = _pair(real, fake)
    s = float(sigma) if sigma is not None else median_bandwidth(real, fake)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma}")
    k = lambda x, y: np.exp(-squared_distances(x, y) / (2.0 * s * s))  # noqa: E731
    m, n = len(fake), len(real)
    ff, ff_diag = _kernel_sum(fake, fake, k, same=True)
    rr, rr_diag = _kernel_sum(real, real, k, same=True)
    fr, _ = _kernel_sum(fake, real, k, same=False)
    value = (ff - ff_diag) / (m * (m - 1)) + (rr - rr_diag) / (n * (n - 1)) - 2.0 * fr / (m * n)
    return MmdResult(float(value), s)


def _kernel_sum(x: np.ndarray, y: np.ndarray, k: Any, *, same: bool) -> tuple[float, float]:
    """Sum of the kernel matrix k(x, y) and of its diagonal (when ``same``), a block of rows at a time."""
    total = diag = 0.0
    for a in range(0, len(x), CHUNK):
        block = k(x[a : a + CHUNK], y)
        total += float(block.sum())
        if same:
            r = np.arange(len(block))
            diag += float(block[r, a + r].sum())
    return total, diag


def kth_neighbour_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point of ``x`` to its k-th nearest *other* point of ``x``."""
    if not 1 <= k < len(x):
        raise ValueError(f"k-NN manifold needs 1 ≤ k < set size, got k={k} for {len(x)} points")
    out = np.empty(len(x))
    for a in range(0, len(x), CHUNK):
        d = np.sqrt(squared_distances(x[a : a + CHUNK], x))
        out[a : a + CHUNK] = np.partition(d, k, axis=1)[:, k]  # the k+1-th smallest: the point itself is 0
    return out


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float  # fraction of fake samples inside the real manifold
    recall: float  # fraction of real samples inside the fake manifold
    k: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of
    balls reaching every point's k-th nearest neighbour; precision is the fraction of ``fake`` inside
    the real manifold (realism), recall the fraction of ``real`` inside the fake one (coverage)."""
    real, fake = _pair(real, fake, minimum=k + 1)
    return PrecisionRecall(
        _inside(fake, real, kth_neighbour_radii(real, k)),
        _inside(real, fake, kth_neighbour_radii(fake, k)),
        k,
    )


def _inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """Fraction of ``points`` within ``radii[j]`` of some ``centres[j]``."""
    hit = np.zeros(len(points), bool)
    for a in range(0, len(points), CHUNK):
        d = np.sqrt(squared_distances(points[a : a + CHUNK], centres))
        hit[a : a + CHUNK] = (radii[None, :] >= d).any(axis=1)
    return float(hit.mean())


__all__ = [
    "KidResult",
    "MmdResult",
    "PrecisionRecall",
    "frechet_distance",
    "kid",
    "median_bandwidth",
    "mmd2_unbiased",
    "mmd_rbf",
    "polynomial_kernel",
    "precision_recall",
    "squared_distances",
]
