"""The numpy sampling loop: the same trajectory as diffusers driving the PyTorch UNet, deterministic per
image seed, progress after every step, cancellation between steps, guidance only when asked for."""

from __future__ import annotations

import numpy as np
import pytest

from hipgen.generate.sampling import SamplingCancelled, SamplingPlan, sample, to_uint8
from hipgen.generate.schedulers import NoiseSchedule

NA = np.array([[-0.5, 0.5], [0.3, -0.2]], np.float32)


class FakeModel:
    """Element-wise in the sample (so batch neighbours cannot matter), dependent on t, na and keep."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x: np.ndarray, t: np.ndarray, na: np.ndarray, keep: np.ndarray) -> np.ndarray:
        self.batches.append(len(x))
        cond = (na.sum(axis=1) * keep)[:, None, None, None]
        return (np.tanh(x) * 0.7 + 0.1 * cond + 0.01 * np.cos(t / 50.0)[:, None, None, None]).astype(
            np.float32
        )


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "lcm"])
def test_same_seed_same_bytes_whatever_the_batch(sampler: str) -> None:
    plan = SamplingPlan(NA, [7, 8], sampler=sampler, steps=10, guidance_scale=2.0)
    a = sample(FakeModel(), NoiseSchedule(), plan, 16)
    b = sample(FakeModel(), NoiseSchedule(), plan, 16)
    alone = sample(
        FakeModel(),
        NoiseSchedule(),
        SamplingPlan(NA[1:], [8], sampler=sampler, steps=10, guidance_scale=2.0),
        16,
    )
    assert to_uint8(a).tobytes() == to_uint8(b).tobytes()
    np.testing.assert_array_equal(a[1], alone[0])
    assert not np.array_equal(a[0], a[1])


def test_progress_cancellation_and_guidance_batches() -> None:
    model, seen = FakeModel(), []
    sample(
        model, NoiseSchedule(), SamplingPlan(NA, [1, 2], steps=6), 8, on_step=lambda i, n: seen.append((i, n))
    )
    assert seen == [(i, 6) for i in range(1, 7)]
    assert model.batches == [2] * 6  # guidance 1: no unconditional pass
    model = FakeModel()
    sample(model, NoiseSchedule(), SamplingPlan(NA, [1, 2], steps=3, guidance_scale=3.0), 8)
    assert model.batches == [4] * 3  # conditional and unconditional in one doubled batch
    model, steps = FakeModel(), []
    with pytest.raises(SamplingCancelled, match="before step 4 of 10"):
        sample(
            model,
            NoiseSchedule(),
            SamplingPlan(NA, [1, 2], steps=10),
            8,
            on_step=lambda i, n: steps.append(i),
            cancelled=lambda: len(steps) >= 3,
        )
    assert len(model.batches) == 3  # stopped within one step of the cancel


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="sampler"):
        SamplingPlan(NA, [1, 2], sampler="euler")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="for LCM"):
        sample(FakeModel(), NoiseSchedule(), SamplingPlan(NA, [1, 2], sampler="lcm", steps=60), 8)
    with pytest.raises(ValueError, match="seeds"):
        SamplingPlan(NA, [1])
    with pytest.raises(ValueError, match="guidance_scale"):
        SamplingPlan(NA, [1, 2], guidance_scale=float("nan"))


def test_matches_diffusers_driving_the_torch_unet() -> None:
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from training.diffusion.model import NaConditionedUNet, unet_config

    torch.manual_seed(0)
    net = NaConditionedUNet(unet_config(16, tiny=True)).eval()
    with torch.no_grad():
        net.null.normal_()

    def model(x, t, na, keep):  # noqa: ANN001, ANN202
        with torch.no_grad():
            return net(
                torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(na), torch.from_numpy(keep)
            ).numpy()

    steps, scale = 8, 2.5
    ours = sample(model, NoiseSchedule(), SamplingPlan(NA, [3, 4], steps=steps, guidance_scale=scale), 16)
    ref = diffusers.DDIMScheduler()
    ref.set_timesteps(steps)
    x = torch.from_numpy(
        np.stack([np.random.default_rng(s).standard_normal((1, 16, 16), dtype=np.float32) for s in (3, 4)])
    )
    na = torch.from_numpy(NA)
    with torch.no_grad():
        for t in ref.timesteps:
            tt = t.repeat(2)
            cond = net(x, tt, na, torch.ones(2, dtype=torch.bool))
            uncond = net(x, tt, na, torch.zeros(2, dtype=torch.bool))
            x = ref.step(uncond + scale * (cond - uncond), t, x).prev_sample
    np.testing.assert_allclose(ours, x.numpy(), atol=2e-4)
