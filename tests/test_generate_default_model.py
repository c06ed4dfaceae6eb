"""The committed default generators (``model_repository/generator_*``) through the serving path: they
generate pelvis views the default angle model can measure, deterministically; and — the headline
target — the measured angles should follow the requested ones. The committed generator does not meet
that yet (CPU-only training budget; see the README's generator results), so that check is a strict
xfail: it fails the suite the day a model that does follow the request is committed without raising
the bar here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hipgen.angle.measure import measurer_from_backend
from hipgen.generate.conditions import NaRequest
from hipgen.generate.generator import Generator, choose_sampler
from hipgen.generate.label import measure_each, measured_angles
from hipgen.inference.backend import OrtBackend
from hipgen.metrics.fidelity import angle_fidelity, fidelity_grid

# left and right varied independently, so a generator that ignores one side cannot pass on the other
GRID = fidelity_grid((80.0, 100.0, 120.0))
CASES = [("generator_ddpm", "ddim", 25), ("generator_lcm", "lcm", 4)]


def _measured(repo: Path, model: str, sampler: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    backend = OrtBackend(repo)
    gen = Generator(backend, model)
    choice = choose_sampler(gen.spec, sampler, steps, None)
    images = gen.generate(gen.plan([NaRequest(a, b) for a, b in GRID], list(range(len(GRID))), choice))
    return images, measured_angles(measure_each(measurer_from_backend(backend), list(images)))


@pytest.mark.parametrize(("model", "sampler", "steps"), CASES)
def test_committed_generators_make_measurable_deterministic_views(
    angle_repo: Path, model, sampler, steps
) -> None:  # noqa: ANN001
    images, measured = _measured(angle_repo, model, sampler, steps)
    assert images.shape == (len(GRID), 128, 128)
    assert np.isfinite(measured).all(axis=1).mean() >= 0.8  # the angle model finds the hips
    ok = np.isfinite(measured)
    assert ((measured[ok] > 40) & (measured[ok] < 160)).all()  # anatomically plausible angles
    again, _ = _measured(angle_repo, model, sampler, steps)
    np.testing.assert_array_equal(images, again)


@pytest.mark.xfail(
    strict=True, reason="the committed generator does not follow the requested angle yet (r ≈ 0)"
)
@pytest.mark.parametrize(("model", "sampler", "steps"), CASES)
def test_requested_and_measured_angles_correlate(angle_repo: Path, model, sampler, steps) -> None:  # noqa: ANN001
    _, measured = _measured(angle_repo, model, sampler, steps)
    report = angle_fidelity(GRID, measured)
    for side in ("left", "right"):
        assert report[side].pearson_r >= 0.5, (side, report[side])
