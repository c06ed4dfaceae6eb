"""Angle-measurement metrics (pure numpy: the score service and ONNX-side evaluation use them without
torch; tests hold them against torchmetrics).

Regression on Norberg angles in degrees; the Big/Small classifier with *Small* (suspect dysplasia) as
the positive class, so sensitivity is the share of dysplastic hips caught.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class RegressionReport:
    n: int
    mae: float  # degrees
    rmse: float  # degrees
    mape: float  # percent
    r2: float
    bias: float  # mean(pred - true), degrees
    max_error: float  # degrees
    within_3: float  # fraction of |error| ≤ 3°
    within_5: float
    within_10: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def regression_report(pred: np.ndarray, true: np.ndarray) -> RegressionReport:
    p, t = np.asarray(pred, np.float64).ravel(), np.asarray(true, np.float64).ravel()
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"need equal, non-empty prediction and truth arrays, got {p.shape} and {t.shape}")
    e = p - t
    a = np.abs(e)
    ss_tot = float(((t - t.mean()) ** 2).sum())
    return RegressionReport(
        n=int(p.size),
        mae=float(a.mean()),
        rmse=float(np.sqrt((e**2).mean())),
        mape=float(100.0 * (a / np.abs(t)).mean()),
        r2=float(1.0 - (e**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
        bias=float(e.mean()),
        max_error=float(a.max()),
        within_3=float((a <= 3.0).mean()),
        within_5=float((a <= 5.0).mean()),
        within_10=float((a <= 10.0).mean()),
    )


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann–Whitney) identity, ties counted half."""
    s, y = np.asarray(score, np.float64).ravel(), np.asarray(positive, bool).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def expected_calibration_error(prob: np.ndarray, label: np.ndarray, n_bins: int = 15) -> float:
    """ECE of P(positive) with equal-width bins, as torchmetrics' ``binary_calibration_error`` (l1):
    Σ_bins (share of samples) × |mean predicted probability − observed frequency|."""
    p, y = np.asarray(prob, np.float64).ravel(), np.asarray(label, np.float64).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(ece)


@dataclass(frozen=True)
class ClassifierReport:
    n: int
    accuracy: float
    sensitivity: float  # Small (dysplastic) hips called Small
    specificity: float  # Big hips called Big
    auc: float
    ece: float
    agreement_with_angle: float  # classifier's class == class of the predicted NA (nan if not given)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def classifier_report(
    prob_big: np.ndarray, true_big: np.ndarray, *, angle_big: np.ndarray | None = None
) -> ClassifierReport:
    p = np.asarray(prob_big, np.float64).ravel()
    y = np.asarray(true_big, bool).ravel()
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"need equal, non-empty probability and label arrays, got {p.shape} and {y.shape}")
    pred = p >= 0.5
    small, big = ~y, y
    nan = float("nan")
    return ClassifierReport(
        n=int(p.size),
        accuracy=float((pred == y).mean()),
        sensitivity=float((~pred[small]).mean()) if small.any() else nan,
        specificity=float(pred[big].mean()) if big.any() else nan,
        auc=roc_auc(1.0 - p, small),
        ece=expected_calibration_error(p, y),
        agreement_with_angle=(
            float((pred == np.asarray(angle_big, bool).ravel()).mean()) if angle_big is not None else nan
        ),
    )
