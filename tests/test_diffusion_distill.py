"""LLCM consistency distillation (tiny config): the solvers, the boundary conditions, and a short run
that changes the student and resumes exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from hipgen.generate.schedulers import NoiseSchedule, lcm_step  # noqa: E402
from training.diffusion.distill import (  # noqa: E402
    DistillConfig,
    boundary_scalings,
    ddim_solver_step,
    distill,
    leapfrog_step,
)
from training.diffusion.model import NaConditionedUNet, unet_config  # noqa: E402
from training.diffusion.train import DiffusionConfig, DiffusionSet, load, noise_scheduler  # noqa: E402


def _ac() -> torch.Tensor:
    return noise_scheduler(DiffusionConfig()).alphas_cumprod


def test_leapfrog_is_ddim_when_the_noise_estimate_does_not_change() -> None:
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    t, s = torch.tensor([999, 519, 19]), torch.tensor([979, 499, -1])
    ddim = ddim_solver_step(x, eps, t, s, _ac())
    leap = leapfrog_step(x, eps, t, s, _ac(), lambda x1, tt: eps)
    torch.testing.assert_close(leap, ddim, rtol=1e-5, atol=1e-5)
    other = leapfrog_step(x, eps, t, s, _ac(), lambda x1, tt: eps + 0.5)  # a second evaluation matters
    assert (other - ddim).abs().max() > 1e-3


def test_boundary_scalings_match_the_lcm_sampler() -> None:
    c_skip, c_out = boundary_scalings(torch.tensor([0, 19, 999]), 10.0)
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0  # f(x, 0) = x
    # the numpy LCM step's denoised output at the last step is exactly c_skip x + c_out x0
    schedule = NoiseSchedule(clip_sample=False)
    rng = np.random.default_rng(0)
    x, eps = (
        rng.standard_normal((1, 1, 4, 4)).astype(np.float32),
        rng.standard_normal((1, 1, 4, 4)).astype(np.float32),
    )
    ac = schedule.alphas_cumprod
    x0 = (x - np.sqrt(1 - ac[19]) * eps) / np.sqrt(ac[19])
    expect = c_skip[1].item() * x + c_out[1].item() * x0
    np.testing.assert_allclose(lcm_step(schedule, eps, 19, None, x), expect, rtol=1e-5, atol=1e-5)


def _setup() -> tuple[NaConditionedUNet, DiffusionConfig, DiffusionSet]:
    torch.manual_seed(0)
    config = DiffusionConfig(size=16, tiny=True)
    teacher = NaConditionedUNet(unet_config(16, tiny=True)).eval()
    rng = np.random.default_rng(0)
    data = DiffusionSet(rng.uniform(-1, 1, (6, 1, 16, 16)).astype(np.float32), rng.uniform(70, 130, (6, 2)))
    return teacher, config, data


@pytest.mark.parametrize("solver", ["ddim", "leapfrog"])
def test_distillation_moves_the_student_and_resumes_exactly(tmp_path: Path, solver: str) -> None:
    teacher, config, data = _setup()
    cfg = DistillConfig(steps=4, batch_size=3, lr=1e-3, solver=solver, checkpoint_every=2)
    straight = distill(teacher, config, cfg, data, tmp_path / "a", progress=False)
    assert len(straight.losses) == 4 and all(np.isfinite(straight.losses))
    moved = max(
        (p - q).abs().max().item()
        for p, q in zip(straight.model.parameters(), teacher.parameters(), strict=True)
    )
    assert moved > 0
    distill(
        teacher, config, DistillConfig(**{**cfg.__dict__, "steps": 2}), data, tmp_path / "b", progress=False
    )
    resumed = distill(teacher, config, cfg, data, tmp_path / "b", resume=True, progress=False)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    student, student_config = load(tmp_path / "a" / "model.pt")  # the teacher's format
    assert student_config == config
    for p, q in zip(student.parameters(), straight.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_bad_distill_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="solver"):
        DistillConfig(solver="euler")
    with pytest.raises(ValueError, match="omega"):
        DistillConfig(omega=-1.0)
