"""Memorisation: does a generator hand back (near-)copies of its training images? For each synthetic
image, its nearest training image in feature space and the distance to it, compared with how close
training images are to *each other*.

The score is d_nn(synthetic → training) / median d_nn(training → other training images): about 1 or more
for a new image, near 0 for a copy. An image is flagged below ``threshold`` (default 0.5: closer to a
training image than half the typical gap between two training images). Feature distances rather than
pixels, so a shifted or re-exposed copy is still caught.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hipgen.metrics.distribution import squared_distances

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Memorisation:
    nearest: np.ndarray  # (S,) index of each synthetic image's nearest training image
    distance: np.ndarray  # (S,) feature distance to it
    score: np.ndarray  # (S,) distance / typical training nearest-neighbour distance
    typical: float  # median nearest-neighbour distance within the training set
    threshold: float

    @property
    def flagged(self) -> np.ndarray:
        """Indices of the synthetic images that look like copies, closest first."""
        idx = np.flatnonzero(self.score < self.threshold)
        return idx[np.argsort(self.score[idx])]

    @property
    def flagged_fraction(self) -> float:
        return float(len(self.flagged) / len(self.score)) if len(self.score) else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "typical_training_nn_distance": self.typical,
            "threshold": self.threshold,
            "flagged_fraction": self.flagged_fraction,
            "flagged": [int(i) for i in self.flagged],
            "median_score": float(np.median(self.score)) if len(self.score) else float("nan"),
            "min_score": float(self.score.min()) if len(self.score) else float("nan"),
        }


def _dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(squared_distances(x, y))


def memorisation(
    training: np.ndarray, synthetic: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD, chunk: int = 1024
) -> Memorisation:
    """``training`` (T, D) and ``synthetic`` (S, D) features (T ≥ 2)."""
    t, s = np.asarray(training, np.float64), np.asarray(synthetic, np.float64)
    if t.ndim != 2 or s.ndim != 2 or t.shape[1] != s.shape[1] or len(t) < 2:
        raise ValueError(f"need (T ≥ 2, D) training and (S, D) synthetic features, got {t.shape}, {s.shape}")
    own = np.empty(len(t))
    for i in range(0, len(t), chunk):
        d = _dists(t[i : i + chunk], t)
        d[np.arange(len(d)), np.arange(i, i + len(d))] = np.inf  # not itself
        own[i : i + chunk] = d.min(1)
    typical = float(np.median(own))
    nearest = np.empty(len(s), np.int64)
    dist = np.empty(len(s))
    for i in range(0, len(s), chunk):
        d = _dists(s[i : i + chunk], t)
        nearest[i : i + chunk] = d.argmin(1)
        dist[i : i + chunk] = d.min(1)
    score = dist / typical if typical > 0 else np.where(dist > 0, np.inf, 0.0)
    return Memorisation(nearest, dist, score, typical, float(threshold))


__all__ = ["DEFAULT_THRESHOLD", "Memorisation", "memorisation"]
