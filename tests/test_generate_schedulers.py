"""The numpy DDPM/DDIM steps the service samples with agree with diffusers' schedulers: the same
model outputs and noise give the same trajectory, for each prediction type, schedule and spacing."""

from __future__ import annotations

import numpy as np
import pytest

from hipgen.generate.schedulers import NoiseSchedule, ddim_step, ddpm_step

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


def fake_model(x: np.ndarray, t: int) -> np.ndarray:
    """A deterministic stand-in for the UNet: depends on the sample and the timestep."""
    return (np.tanh(x) * 0.8 + 0.05 * np.sin(t / 37.0)).astype(np.float32)


CONFIGS = [
    {},
    {"prediction_type": "v_prediction", "beta_schedule": "squaredcos_cap_v2"},
    {"prediction_type": "sample", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"timestep_spacing": "trailing", "clip_sample": False},
    {"timestep_spacing": "linspace", "set_alpha_to_one": False},
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_matches_diffusers(config: dict, eta: float) -> None:
    steps = 12
    ref = diffusers.DDIMScheduler(**config)
    ref.set_timesteps(steps)
    ours = NoiseSchedule.from_config(dict(ref.config))
    np.testing.assert_array_equal(ours.timesteps(steps), ref.timesteps.numpy())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    y = torch.from_numpy(x.copy())
    for t in ref.timesteps.tolist():
        noise = rng.standard_normal(x.shape).astype(np.float32)
        x = ddim_step(ours, fake_model(x, t), t, x, steps, eta=eta, noise=noise)
        y = ref.step(
            torch.from_numpy(fake_model(y.numpy(), t)),
            t,
            y,
            eta=eta,
            variance_noise=torch.from_numpy(noise) if eta > 0 else None,
        ).prev_sample
        np.testing.assert_allclose(x, y.numpy(), rtol=1e-4, atol=1e-4)
    assert x.dtype == np.float32


@pytest.mark.parametrize("config", CONFIGS[:3])
def test_ddpm_matches_diffusers(config: dict) -> None:
    steps = 25
    ref = diffusers.DDPMScheduler(**config)
    ref.set_timesteps(steps)
    ours = NoiseSchedule.from_config(dict(ref.config))
    ts = ours.timesteps(steps)
    np.testing.assert_array_equal(ts, ref.timesteps.numpy())
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)
    y = torch.from_numpy(x.copy())
    for i, t in enumerate(ts.tolist()):
        prev = int(ts[i + 1]) if i + 1 < len(ts) else -1
        seed = 100 + i  # diffusers draws its noise from a generator: draw the same numbers for ours
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).numpy()
        x = ddpm_step(ours, fake_model(x, t), t, prev, x, noise=noise)
        y = ref.step(
            torch.from_numpy(fake_model(y.numpy(), t)), t, y, generator=torch.Generator().manual_seed(seed)
        ).prev_sample
        np.testing.assert_allclose(x, y.numpy(), rtol=1e-4, atol=1e-4)


def test_full_length_ddpm_timesteps_and_bad_settings() -> None:
    s = NoiseSchedule()
    np.testing.assert_array_equal(s.timesteps(1000), np.arange(999, -1, -1))
    with pytest.raises(ValueError, match="steps must be between 1 and 1000"):
        s.timesteps(0)
    with pytest.raises(ValueError, match="thresholding"):
        NoiseSchedule.from_config({"thresholding": True})
    with pytest.raises(ValueError, match="needs noise"):
        ddim_step(s, np.zeros((1, 1, 2, 2), np.float32), 500, np.zeros((1, 1, 2, 2), np.float32), 10, eta=1.0)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("config", [{}, {"prediction_type": "v_prediction", "original_inference_steps": 25}])
def test_lcm_matches_diffusers(config: dict, steps: int) -> None:
    from hipgen.generate.schedulers import lcm_step, lcm_timesteps

    ref = diffusers.LCMScheduler(**config)
    ref.set_timesteps(steps)
    ours = NoiseSchedule.from_config(dict(ref.config))
    ts = lcm_timesteps(ours, steps)
    np.testing.assert_array_equal(ts, ref.timesteps.numpy())
    x = np.random.default_rng(3).standard_normal((2, 1, 8, 8)).astype(np.float32)
    y = torch.from_numpy(x.copy())
    for i, t in enumerate(ts.tolist()):
        last = i + 1 == len(ts)
        seed = 200 + i
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).numpy()
        x = lcm_step(ours, fake_model(x, t), t, None if last else int(ts[i + 1]), x, noise=noise)
        y = ref.step(
            torch.from_numpy(fake_model(y.numpy(), t)), t, y, generator=torch.Generator().manual_seed(seed)
        ).prev_sample
        np.testing.assert_allclose(x, y.numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="for LCM"):
        lcm_timesteps(ours, ours.original_inference_steps + 1)
