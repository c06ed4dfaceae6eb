"""The exported UNet: ONNX Runtime matches PyTorch per call and over a whole guided sampling run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from hipgen.generate.sampling import SamplingPlan, sample  # noqa: E402
from hipgen.generate.schedulers import NoiseSchedule  # noqa: E402
from training.diffusion.export import export_unet, ort_model  # noqa: E402
from training.diffusion.model import NaConditionedUNet, unet_config  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[NaConditionedUNet, Path]:
    torch.manual_seed(0)
    net = NaConditionedUNet(unet_config(16, tiny=True)).eval()
    with torch.no_grad():
        net.null.normal_()
    return net, export_unet(net, tmp_path_factory.mktemp("onnx") / "unet.onnx")


def torch_model(net: NaConditionedUNet):  # noqa: ANN201
    def model(x, t, na, keep):  # noqa: ANN001, ANN202
        with torch.no_grad():
            args = (torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(na), torch.from_numpy(keep))
            return net(*args).numpy()

    return model


def test_one_call_matches_pytorch_at_any_batch(exported) -> None:  # noqa: ANN001
    net, path = exported
    ort_fn = ort_model(path)
    rng = np.random.default_rng(0)
    for b in (1, 3):
        x = rng.standard_normal((b, 1, 16, 16)).astype(np.float32)
        t = rng.integers(0, 1000, b).astype(np.int64)
        na = rng.uniform(-1, 1, (b, 2)).astype(np.float32)
        keep = rng.random(b) < 0.5
        np.testing.assert_allclose(ort_fn(x, t, na, keep), torch_model(net)(x, t, na, keep), atol=1e-4)


def test_guided_sampling_run_matches_pytorch(exported) -> None:  # noqa: ANN001
    net, path = exported
    plan = SamplingPlan(
        np.array([[-0.4, 0.6], [0.8, -0.8]], np.float32), [11, 12], steps=10, guidance_scale=3.0
    )
    a = sample(ort_model(path), NoiseSchedule(), plan, 16)
    b = sample(torch_model(net), NoiseSchedule(), plan, 16)
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_hint_model_exports_with_a_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(1)
    base = NaConditionedUNet(unet_config(16, tiny=True)).eval()
    net = NaConditionedUNet.with_hint_from(base, (70.0, 130.0)).eval()
    with torch.no_grad():
        net.unet.conv_in.weight[:, 1:].normal_()  # make the hint matter
    ort_fn = ort_model(export_unet(net, tmp_path / "hint.onnx"))
    rng = np.random.default_rng(3)
    for b in (1, 4):  # the example batch is 2: neither may be frozen into the graph
        x = rng.standard_normal((b, 1, 16, 16)).astype(np.float32)
        t = rng.integers(0, 1000, b).astype(np.int64)
        na = rng.uniform(-1, 1, (b, 2)).astype(np.float32)
        keep = np.arange(b) % 2 == 0
        np.testing.assert_allclose(ort_fn(x, t, na, keep), torch_model(net)(x, t, na, keep), atol=1e-4)
