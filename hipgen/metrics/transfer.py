"""GAN-train / GAN-test (Shmelkov et al. 2018; the GIST pipeline's evaluation): train a classifier on
synthetic images and test it on real ones (GAN-train: are the synthetic images *useful*, do they cover
the real classes?), and train on real and test on synthetic (GAN-test: are they *realistic*, do they
land in the right class?). The real→real accuracy on a held-out half is the base it is read against.

The classifier is multinomial logistic regression on backbone features (standardised, L2-regularised,
full-batch gradient descent, a few hundred iterations): a linear probe, numpy-only so it runs in
ScoreService. scikit-learn's LogisticRegression would do the same but would be a serving dependency for
one linear model. Labels are the Big/Small class of the image (Big only when both hips are ≥ 105°), or
any integer labels the caller gives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class LinearProbe:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # (D + 1, C)
    classes: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self.mean) / self.scale
        logits = np.c_[z, np.ones(len(z))] @ self.weights
        return self.classes[logits.argmax(1)]


def fit_probe(
    x: np.ndarray, y: np.ndarray, *, l2: float = 1e-2, iterations: int = 300, lr: float = 0.5
) -> LinearProbe:
    """Multinomial logistic regression by gradient descent on the mean cross-entropy + l2 ‖W‖²/2."""
    x = np.asarray(x, np.float64)
    classes, idx = np.unique(np.asarray(y), return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"a classifier needs at least two classes in its training set, got {list(classes)}")
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = np.c_[(x - mean) / scale, np.ones(len(x))]
    onehot = np.eye(len(classes))[idx]
    w = np.zeros((z.shape[1], len(classes)))
    for _ in range(iterations):
        logits = z @ w
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        grad = z.T @ (p - onehot) / len(z)
        grad[:-1] += l2 * w[:-1]
        w -= lr * grad
    return LinearProbe(mean, scale, w, classes)


def accuracy(probe: LinearProbe, x: np.ndarray, y: np.ndarray) -> float:
    return float((probe.predict(x) == np.asarray(y)).mean()) if len(y) else float("nan")


@dataclass(frozen=True)
class TransferScores:
    gan_train: float  # trained on synthetic, accuracy on real
    gan_test: float  # trained on real, accuracy on synthetic
    base: float  # trained on one half of real, accuracy on the other half
    real: int
    synthetic: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def gan_train_test(
    real: np.ndarray,
    real_labels: np.ndarray,
    synthetic: np.ndarray,
    synthetic_labels: np.ndarray,
    *,
    seed: int = 0,
) -> TransferScores:
    real, synthetic = np.asarray(real, np.float64), np.asarray(synthetic, np.float64)
    ry, sy = np.asarray(real_labels), np.asarray(synthetic_labels)
    if len(real) != len(ry) or len(synthetic) != len(sy):
        raise ValueError("each feature row needs one label")
    perm = np.random.default_rng(seed).permutation(len(real))
    a, b = perm[: len(real) // 2], perm[len(real) // 2 :]
    try:
        base = accuracy(fit_probe(real[a], ry[a]), real[b], ry[b])
    except ValueError:  # one half holds a single class
        base = float("nan")
    return TransferScores(
        gan_train=accuracy(fit_probe(synthetic, sy), real, ry),
        gan_test=accuracy(fit_probe(real, ry), synthetic, sy),
        base=base,
        real=len(real),
        synthetic=len(synthetic),
    )


__all__ = ["LinearProbe", "TransferScores", "accuracy", "fit_probe", "gan_train_test"]
