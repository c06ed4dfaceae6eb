"""The angle-conditioned UNet (tiny config): shapes, the condition reaches the output, and the
classifier-free-guidance null branch ignores the angles."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from training.diffusion.model import NaConditionedUNet, fourier_features, unet_config  # noqa: E402


@pytest.fixture(scope="module")
def net() -> NaConditionedUNet:
    torch.manual_seed(0)
    model = NaConditionedUNet(unet_config(32, tiny=True)).eval()
    with torch.no_grad():  # a fresh null vector is zeros; make it distinct from any embedding
        model.null.normal_()
    return model


def test_fourier_features_are_deterministic_and_separate_nearby_angles() -> None:
    na = torch.tensor([[0.0, 0.1], [0.0, 0.11]])
    f = fourier_features(na, 4)
    assert f.shape == (2, 2 + 16)
    assert torch.equal(f, fourier_features(na, 4))
    assert float((f[0] - f[1]).abs().max()) > 0.01


def test_output_shape_and_the_condition_reaches_it(net: NaConditionedUNet) -> None:
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([100, 100])
    with torch.no_grad():
        a = net(x, t, torch.tensor([[-0.5, 0.5], [-0.5, 0.5]]))
        b = net(x, t, torch.tensor([[0.5, -0.5], [0.5, -0.5]]))
    assert a.shape == x.shape
    assert float((a - b).abs().mean()) > 1e-4  # different angles, different prediction


def test_dropped_condition_ignores_the_angles(net: NaConditionedUNet) -> None:
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(2)).repeat(2, 1, 1, 1)
    t = torch.tensor([500, 500])
    na = torch.tensor([[-0.9, 0.2], [0.7, -0.3]])
    with torch.no_grad():
        dropped = net(x, t, na, keep=torch.tensor([False, False]))
        kept = net(x, t, na, keep=torch.tensor([True, False]))
    torch.testing.assert_close(dropped[0], dropped[1])  # the null branch: angles do not matter
    torch.testing.assert_close(kept[1], dropped[1])  # per-sample: one row's keep does not leak
    assert float((kept[0] - dropped[0]).abs().mean()) > 1e-4
