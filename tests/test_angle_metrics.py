"""Angle metrics against hand-computed values and torchmetrics' reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hipgen.metrics.angle import classifier_report, expected_calibration_error, regression_report, roc_auc


def test_regression_report_by_hand() -> None:
    true = np.array([100.0, 110.0, 90.0, 120.0])
    pred = np.array([102.0, 104.0, 90.0, 131.0])  # errors 2, -6, 0, 11
    r = regression_report(pred, true)
    assert r.n == 4
    assert r.mae == pytest.approx(19 / 4)
    assert r.rmse == pytest.approx(math.sqrt((4 + 36 + 0 + 121) / 4))
    assert r.mape == pytest.approx(100 * (2 / 100 + 6 / 110 + 0 + 11 / 120) / 4)
    assert r.bias == pytest.approx(7 / 4)
    assert r.max_error == 11
    assert (r.within_3, r.within_5, r.within_10) == (0.5, 0.5, 0.75)
    ss_tot = ((true - true.mean()) ** 2).sum()
    assert r.r2 == pytest.approx(1 - 161 / ss_tot)


def test_regression_report_rejects_mismatch() -> None:
    with pytest.raises(ValueError, match="equal"):
        regression_report([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        regression_report([], [])


def test_perfect_prediction() -> None:
    t = np.linspace(80, 125, 20)
    r = regression_report(t, t)
    assert r.mae == 0 and r.r2 == 1 and r.within_3 == 1


def test_auc_and_ece_match_torchmetrics() -> None:
    torch = pytest.importorskip("torch")
    from torchmetrics.functional.classification import binary_auroc, binary_calibration_error

    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.4
    p = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1)
    p[:20] = 0.5  # ties
    ref_auc = float(binary_auroc(torch.tensor(p), torch.tensor(y.astype(int))))
    assert roc_auc(p, y) == pytest.approx(ref_auc, abs=1e-6)
    ref_ece = float(
        binary_calibration_error(torch.tensor(p), torch.tensor(y.astype(int)), n_bins=15, norm="l1")
    )
    assert expected_calibration_error(p, y, n_bins=15) == pytest.approx(ref_ece, abs=1e-5)


def test_classifier_report_small_is_positive() -> None:
    true_big = np.array([True, True, False, False, False])
    prob_big = np.array([0.9, 0.4, 0.2, 0.1, 0.6])  # calls: big, small, small, small, big
    r = classifier_report(prob_big, true_big, angle_big=np.array([True, False, False, True, True]))
    assert r.accuracy == pytest.approx(3 / 5)
    assert r.sensitivity == pytest.approx(2 / 3)  # small hips called small
    assert r.specificity == pytest.approx(1 / 2)  # big hips called big
    assert r.agreement_with_angle == pytest.approx(4 / 5)
    # P(small) = 1 - p ranks: small hips score .8 .9 .4, big hips .1 .6 — 5 of 6 pairs in order
    assert r.auc == pytest.approx(5 / 6)
    assert 0 <= r.ece <= 1


def test_auc_degenerate() -> None:
    assert math.isnan(roc_auc([0.1, 0.2], [True, True]))
    assert roc_auc([0.1, 0.9], [False, True]) == 1.0
