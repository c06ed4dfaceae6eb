"""Behaviour of the metrics that have no reference library: memorisation, the GAN-train/test probe,
the noise-baseline improvement factor, and angle fidelity's RMSE."""

from __future__ import annotations

import numpy as np
import pytest

from hipgen.metrics.baseline import improvement_factor, noise_images
from hipgen.metrics.fidelity import angle_fidelity
from hipgen.metrics.memorisation import memorisation
from hipgen.metrics.transfer import accuracy, fit_probe, gan_train_test


def test_memorisation_flags_near_copies_and_only_them() -> None:
    rng = np.random.default_rng(0)
    training = rng.normal(size=(50, 8))
    new = rng.normal(size=(20, 8))
    copies = training[[3, 17]] + rng.normal(scale=1e-3, size=(2, 8))
    m = memorisation(training, np.concatenate([new, copies]))
    assert set(m.flagged.tolist()) == {20, 21}
    assert m.nearest[20] == 3 and m.nearest[21] == 17
    assert m.flagged_fraction == pytest.approx(2 / 22)
    assert np.median(m.score[:20]) > 0.7  # new samples sit about as far as training images from each other
    with pytest.raises(ValueError, match="training"):
        memorisation(training[:1], new)


def test_probe_learns_a_separable_rule_and_gan_train_test_reads_it() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    probe = fit_probe(x, y)
    assert accuracy(probe, x, y) > 0.95
    # synthetic set with the same rule → both directions transfer; a label-shuffled one → GAN-train drops
    xs = rng.normal(size=(120, 5))
    ys = (xs[:, 0] + 0.5 * xs[:, 1] > 0).astype(int)
    good = gan_train_test(x, y, xs, ys)
    bad = gan_train_test(x, y, xs, rng.permutation(ys))
    assert good.gan_train > 0.9 and good.gan_test > 0.9 and good.base > 0.85
    assert bad.gan_train < 0.75 and bad.gan_test < 0.75
    with pytest.raises(ValueError, match="two classes"):
        fit_probe(x, np.zeros(200, int))


def test_improvement_factor_direction_and_noise_images() -> None:
    assert improvement_factor("fid", 10.0, 100.0) == pytest.approx(10.0)  # lower is better
    assert improvement_factor("ssim", 0.5, 0.05) == pytest.approx(10.0)  # higher is better
    assert np.isnan(improvement_factor("fid", 0.0, 1.0))
    n = noise_images(3, (16, 20), seed=4)
    assert n.shape == (3, 16, 20) and n.min() >= 0 and n.max() <= 1
    np.testing.assert_array_equal(n, noise_images(3, (16, 20), seed=4))
    assert np.allclose(n * 255, np.round(n * 255))


def test_angle_fidelity_reports_rmse_per_side() -> None:
    req = np.array([[80.0, 100.0], [90.0, 110.0], [100.0, 120.0]])
    mea = req + np.array([[3.0, -4.0], [3.0, 4.0], [3.0, 0.0]])
    rep = angle_fidelity(req, mea)
    assert rep["left"].rmse == pytest.approx(3.0) and rep["left"].bias == pytest.approx(3.0)
    assert rep["right"].rmse == pytest.approx(np.sqrt(32 / 3))


def test_angle_fidelity_skips_images_without_a_request_or_a_measurement() -> None:
    req = np.array([[80.0, 100.0], [np.nan, np.nan], [100.0, 120.0], [90.0, 95.0]])
    mea = np.array([[82.0, 101.0], [90.0, 90.0], [np.nan, np.nan], [93.0, 96.0]])
    rep = angle_fidelity(req, mea)
    assert rep["left"].n == 2 and rep["left"].mae == pytest.approx(2.5)
    assert rep["both"].n == 4 and np.isfinite(rep["both"].rmse)
