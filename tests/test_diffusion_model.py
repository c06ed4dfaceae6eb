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


def test_angle_hint_rays_pass_through_the_rims_and_fine_tuning_starts_where_the_base_was() -> None:
    from training.diffusion.model import angle_hint

    # a pelvis view of 128 px: heads at (36.8, 63.5) and (90.2, 63.5); rims of NA right 129.5°, left 70.2°
    h = angle_hint(torch.tensor([[70.2, 129.5]]), 128)[0, 0]
    assert h[58, 32] > 0.5 and h[56, 88] > 0.5  # the labelled rim points (row, col), rounded
    assert h[63, 63] == 0 and h[100, 36] == 0  # nothing between the heads or below them
    torch.manual_seed(0)
    base = NaConditionedUNet(unet_config(32, tiny=True)).eval()
    hinted = NaConditionedUNet.with_hint_from(base, (70.0, 130.0)).eval()
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([10, 900])
    na, keep = torch.tensor([[-0.5, 0.5], [1.0, -1.0]]), torch.tensor([True, False])
    with torch.no_grad():
        torch.testing.assert_close(hinted(x, t, na, keep), base(x, t, na, keep))  # zero-initialised input
        hinted.unet.conv_in.weight[:, 1:].normal_()
        moved = (hinted(x, t, na, keep) - base(x, t, na, keep)).abs().amax(dim=(1, 2, 3))
    assert moved[0] > 1e-4 and moved[1] < 1e-6  # the null condition sees no hint
