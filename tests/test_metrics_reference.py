"""hipgen.metrics (numpy) against the reference libraries on the same inputs — torchmetrics,
torch-fidelity and pytorch-msssim: agreement within 1e-3 relative."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytorch_msssim = pytest.importorskip("pytorch_msssim")
torch_fidelity_kid = pytest.importorskip("torch_fidelity.metric_kid")
torch_fidelity_prc = pytest.importorskip("torch_fidelity.metric_prc")

from hipgen.metrics.distribution import (  # noqa: E402
    frechet_distance,
    kid,
    mmd_rbf,
    polynomial_kernel,
    precision_recall,
)
from hipgen.metrics.structural import diversity, ms_ssim, paired_similarity, ssim  # noqa: E402

REL = 1e-3


def _features(seed: int, n: int = 120, d: int = 24, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mix + shift).astype(np.float64)


def _images(seed: int, n: int = 4, size: int = 64) -> np.ndarray:
    """Smooth structured images with noise, so SSIM is neither ~0 nor ~1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 0.5 + 0.3 * np.sin(6 * xx + 3 * yy)[None] + 0.1 * rng.normal(size=(n, size, size))
    return np.clip(base, 0, 1)


def test_fid_matches_torchmetrics() -> None:
    from torchmetrics.image.fid import _compute_fid

    a, b = _features(0), _features(1, shift=0.3)
    ref = _compute_fid(
        torch.tensor(a.mean(0)), torch.tensor(np.cov(a, rowvar=False)),
        torch.tensor(b.mean(0)), torch.tensor(np.cov(b, rowvar=False)),
    )  # fmt: skip
    assert frechet_distance(a, b) == pytest.approx(float(ref), rel=REL)


def test_kid_matches_torch_fidelity_over_subsets() -> None:
    real, fake = _features(2, n=90), _features(3, n=80, shift=0.2)
    ref = torch_fidelity_kid.kid_features_to_metric(
        torch.tensor(fake), torch.tensor(real), kid_subsets=20, kid_subset_size=50, rng_seed=7,
        kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
        kid_kernel_poly_coef0=1, verbose=False,
    )  # fmt: skip
    ours = kid(real, fake, subsets=20, subset_size=50, seed=7)
    assert ours.value == pytest.approx(ref["kernel_inception_distance_mean"], rel=REL)
    assert ours.std == pytest.approx(ref["kernel_inception_distance_std"], rel=REL)
    assert ours.value > 0


def test_kid_matches_torchmetrics_on_the_whole_set() -> None:
    from torchmetrics.image.kid import poly_mmd

    real, fake = _features(4, n=60), _features(5, n=60, shift=0.1)
    ref = poly_mmd(torch.tensor(real), torch.tensor(fake), degree=3, gamma=None, coef=1.0)
    assert kid(real, fake, subsets=1, subset_size=60).value == pytest.approx(float(ref), rel=REL)
    k = polynomial_kernel(real, fake)
    assert k.shape == (60, 60)


def test_mmd_rbf_matches_torch_fidelity_kernel_mmd() -> None:
    real, fake = _features(6, n=70), _features(7, n=70, shift=0.25)
    ours = mmd_rbf(real, fake)
    ref = torch_fidelity_kid.kernel_mmd(fake, real, kid_kernel="rbf", kid_kernel_rbf_sigma=ours.sigma)
    assert ours.value == pytest.approx(float(ref), rel=REL)
    # further apart → larger MMD; the same set against itself → about 0
    assert mmd_rbf(real, _features(8, n=70, shift=1.0), sigma=ours.sigma).value > ours.value
    assert abs(mmd_rbf(real, _features(9, n=70), sigma=ours.sigma).value) < ours.value


def test_precision_recall_matches_torch_fidelity() -> None:
    real, fake = _features(10, n=100), _features(11, n=90, shift=0.6)
    ref = torch_fidelity_prc.calculate_precision_recall_full(torch.tensor(fake), torch.tensor(real), 3, 10000)
    ours = precision_recall(real, fake, k=3)
    assert (ours.precision, ours.recall) == pytest.approx(ref, rel=REL)
    assert 0 < ours.precision < 1 and 0 < ours.recall < 1


def test_ssim_matches_pytorch_msssim_and_torchmetrics() -> None:
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    x, y = _images(12), _images(13)
    ours = ssim(x, y)
    ref = pytorch_msssim.ssim(
        torch.tensor(x[:, None]), torch.tensor(y[:, None]), data_range=1.0, size_average=False
    )
    np.testing.assert_allclose(ours, ref.numpy(), rtol=REL)
    tm = tm_ssim(torch.tensor(x[:, None]), torch.tensor(y[:, None]), data_range=1.0, reduction="none")
    np.testing.assert_allclose(ssim(x, y, border="reflect"), tm.numpy(), rtol=REL)
    assert ssim(x, x) == pytest.approx(1.0)


@pytest.mark.parametrize("size", [176, 181])  # even, and odd (avg-pool padding at every level)
def test_ms_ssim_matches_pytorch_msssim(size: int) -> None:
    x, y = _images(14, n=2, size=size), _images(15, n=2, size=size)
    ours = ms_ssim(x, y)
    ref = pytorch_msssim.ms_ssim(
        torch.tensor(x[:, None]), torch.tensor(y[:, None]), data_range=1.0, size_average=False
    )
    np.testing.assert_allclose(ours, ref.numpy(), rtol=REL)
    assert paired_similarity(x, y, multiscale=True).mean == pytest.approx(float(ref.mean()), rel=REL)


def test_ms_ssim_matches_torchmetrics() -> None:
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as tm_ms

    x, y = _images(16, n=2, size=192), _images(17, n=2, size=192)
    tm = tm_ms(torch.tensor(x[:, None]), torch.tensor(y[:, None]), data_range=1.0, reduction="none")
    np.testing.assert_allclose(ms_ssim(x, y), tm.numpy(), rtol=REL)


def test_structural_metrics_refuse_bad_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        ssim(np.zeros((2, 32, 32)), np.zeros((2, 32, 30)))
    with pytest.raises(ValueError, match="at least 161"):
        ms_ssim(np.zeros((1, 128, 128)), np.zeros((1, 128, 128)))


def test_diversity_is_low_for_varied_sets_and_one_for_copies() -> None:
    varied = np.random.default_rng(0).random((6, 48, 48))
    copies = np.repeat(_images(18, n=1, size=48), 6, axis=0)
    assert diversity(copies).mean == pytest.approx(1.0)
    assert diversity(varied).mean < 0.1
    assert diversity(varied, pairs=4).pairs == 4


def test_angle_fidelity_matches_torchmetrics_regression_metrics() -> None:
    from torchmetrics.functional import mean_absolute_error, mean_squared_error, pearson_corrcoef, r2_score

    from hipgen.metrics.fidelity import angle_fidelity

    rng = np.random.default_rng(20)
    req = rng.uniform(70, 130, (40, 2))
    mea = 0.6 * req + 40 + rng.normal(0, 6, (40, 2))
    rep = angle_fidelity(req, mea)
    for k, side in enumerate(("left", "right")):
        t, p = torch.tensor(req[:, k]), torch.tensor(mea[:, k])
        f = rep[side]
        assert f.pearson_r == pytest.approx(float(pearson_corrcoef(p, t)), rel=REL)
        assert f.r2 == pytest.approx(float(r2_score(p, t)), rel=REL)  # R² of measured against identity
        assert f.mae == pytest.approx(float(mean_absolute_error(p, t)), rel=REL)
        assert f.rmse == pytest.approx(float(mean_squared_error(p, t, squared=False)), rel=REL)


def test_memorisation_nearest_neighbours_match_torch_cdist() -> None:
    from hipgen.metrics.memorisation import memorisation

    train, synth = _features(21, n=60), _features(22, n=25, shift=0.1)
    m = memorisation(train, synth)
    d = torch.cdist(torch.tensor(synth), torch.tensor(train))
    np.testing.assert_array_equal(m.nearest, d.argmin(1).numpy())
    np.testing.assert_allclose(m.distance, d.min(1).values.numpy(), rtol=REL)
