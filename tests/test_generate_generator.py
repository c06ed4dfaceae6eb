"""The deployed-generator library (no torch on this path): MANIFEST spec, sampler/steps/guidance checks,
determinism through ONNX Runtime, auto-labels, fidelity metrics and the Fréchet distance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hipgen.angle.measure import measurer_from_backend
from hipgen.generate.conditions import ConditionError, NaRequest
from hipgen.generate.generator import Generator, GeneratorSpec, NotAGeneratorError, choose_sampler
from hipgen.generate.label import auto_label
from hipgen.inference.backend import OrtBackend
from hipgen.metrics.distribution import frechet_distance
from hipgen.metrics.fidelity import angle_fidelity, fidelity_grid


def test_spec_round_trips_through_the_manifest(tiny_generator_repo: Path) -> None:
    manifest = json.loads((tiny_generator_repo / "generator_ddpm" / "MANIFEST.json").read_text())
    spec = GeneratorSpec.from_manifest(manifest)
    assert spec.size == 32 and spec.samplers == ("ddim", "ddpm") and spec.default_sampler == "ddim"
    assert GeneratorSpec.from_manifest({"generator": spec.manifest_section()}) == spec
    assert manifest["onnx"]["sampling_parity_max_abs"] < 1e-3  # PyTorch vs ORT over a guided run
    assert manifest["files"]["1/model.onnx"]["sha256"]
    with pytest.raises(NotAGeneratorError, match="no 'generator' section"):
        GeneratorSpec.from_manifest({"name": "x"}, "x")
    with pytest.raises(NotAGeneratorError, match="malformed"):
        GeneratorSpec.from_manifest({"generator": {"size": 32}}, "x")


def test_sampler_choice_defaults_and_refusals(tiny_generator_repo: Path) -> None:
    teacher = Generator(OrtBackend(tiny_generator_repo), "generator_ddpm").spec
    student = Generator(OrtBackend(tiny_generator_repo), "generator_lcm").spec
    c = choose_sampler(teacher, None, None, None)
    assert (c.sampler, c.steps, c.guidance_scale) == ("ddim", 50, 2.0)
    assert choose_sampler(teacher, "DDPM", None, 0.0).steps == 1000
    c = choose_sampler(student, None, None, None)
    assert (c.sampler, c.steps, c.guidance_scale) == ("lcm", 4, 1.0)
    for spec, args, field in [
        (teacher, ("euler", None, None), "sampler"),
        (teacher, ("lcm", None, None), "sampler"),
        (student, ("ddim", None, None), "sampler"),
        (teacher, ("ddim", 1001, None), "steps"),
        (student, ("lcm", 51, None), "steps"),
        (teacher, (None, None, float("nan")), "guidance_scale"),
        (teacher, (None, None, 21.0), "guidance_scale"),
        (student, ("lcm", None, 2.0), "guidance_scale"),  # its guidance is distilled in
    ]:
        with pytest.raises(ConditionError) as err:
            choose_sampler(spec, *args)
        assert err.value.field == field


def test_onnx_generation_is_deterministic_per_image_and_labelled(tiny_generator_repo: Path) -> None:
    backend = OrtBackend(tiny_generator_repo)
    gen = Generator(backend, "generator_ddpm")
    choice = choose_sampler(gen.spec, "ddim", 4, None)
    reqs = [NaRequest(80, 120), NaRequest(110, 95), NaRequest(100, 100)]
    batch = gen.generate(gen.plan(reqs, [5, 6, 7], choice))
    alone = gen.generate(gen.plan(reqs[1:2], [6], choice))
    assert batch.shape == (3, 32, 32) and batch.dtype == np.float32
    assert batch.min() >= 0.0 and batch.max() <= 1.0
    np.testing.assert_array_equal(batch[1], alone[0])  # an image does not depend on its batch
    assert np.abs(batch[0] - batch[2]).max() > 0.05
    with pytest.raises(ConditionError, match="na_right"):
        gen.plan([NaRequest(100, 131)], [0], choice)
    assert [e.field for e in NaRequest(60, float("inf")).problems(gen.spec.na_range)] == [
        "na_left",
        "na_right",
    ]
    labels = auto_label(
        measurer_from_backend(backend),
        batch,
        reqs,
        [5, 6, 7],
        choice,
        generator="generator_ddpm",
        model_version=gen.version,
        file_names=["a.png", "b.png", "c.png"],
    )
    row = labels[1].to_dict()
    assert row["requested_na_left"] == 110 and row["sampler"] == "ddim" and row["steps"] == 4
    assert row["synthetic"] and row["seed"] == 6 and row["model_version"] == "tiny"
    assert np.isfinite(row["na_left"]) and row["file_name"] == "b.png"


def test_not_a_generator_is_refused(angle_repo: Path) -> None:
    with pytest.raises(NotAGeneratorError, match="not a generator"):
        Generator(OrtBackend(angle_repo), "angle_keypoints")


def test_fidelity_metrics() -> None:
    grid = fidelity_grid((80.0, 100.0, 120.0))
    assert grid.shape == (9, 2) and {tuple(p) for p in grid} == {
        (a, b) for a in (80, 100, 120) for b in (80, 100, 120)
    }
    exact = angle_fidelity(grid, grid)
    assert exact["both"].pearson_r == pytest.approx(1.0) and exact["both"].r2 == pytest.approx(1.0)
    assert exact["left"].mae == 0.0 and exact["both"].within_5 == 1.0
    shifted = angle_fidelity(grid, grid + [3.0, -1.0])
    assert shifted["left"].bias == pytest.approx(3.0) and shifted["right"].bias == pytest.approx(-1.0)
    assert shifted["left"].pearson_r == pytest.approx(1.0) and shifted["left"].r2 < 1.0
    rng = np.random.default_rng(0)
    noise = angle_fidelity(grid, rng.uniform(70, 130, grid.shape))
    assert abs(noise["both"].pearson_r) < 0.9 and noise["both"].r2 < 0.5
    from scipy.stats import pearsonr

    measured = grid + rng.normal(0, 4, grid.shape)
    assert angle_fidelity(grid, measured)["right"].pearson_r == pytest.approx(
        pearsonr(grid[:, 1], measured[:, 1])[0]
    )
    with_nan = measured.copy()
    with_nan[0, 0] = np.nan
    assert angle_fidelity(grid, with_nan)["left"].n == 8
    with pytest.raises(ValueError):
        angle_fidelity(grid, grid[:, :1])


def test_frechet_distance_matches_torchmetrics() -> None:
    torch = pytest.importorskip("torch")
    from torchmetrics.image.fid import _compute_fid

    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, (200, 6))
    b = rng.normal(0.5, 1.3, (150, 6)) @ rng.normal(0, 1, (6, 6))
    ref = _compute_fid(
        torch.tensor(a.mean(0)),
        torch.tensor(np.cov(a, rowvar=False)),
        torch.tensor(b.mean(0)),
        torch.tensor(np.cov(b, rowvar=False)),
    )
    assert frechet_distance(a, b) == pytest.approx(float(ref), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a, b[:, :5])


class _PickyMeasurer:
    """Measures like the angle model, but finds no hips in an all-black image (as a failed sample)."""

    def __init__(self, real) -> None:  # noqa: ANN001
        self.real = real

    def measure(self, images):  # noqa: ANN001, ANN201
        if any(im.max() == 0 for im in images):
            raise ValueError("the located heads coincide")
        return self.real.measure(images)


def test_an_unmeasurable_sample_costs_only_its_own_label(angle_repo: Path) -> None:
    from hipgen.generate.generator import SamplerChoice
    from hipgen.generate.label import measure_each, measured_angles
    from hipgen.phantom import PhantomSpec, render_phantom

    good = render_phantom(PhantomSpec(width=256, height=256), seed=3).pixels.astype(np.float32)
    images = [good, np.zeros_like(good), good]
    measurer = _PickyMeasurer(measurer_from_backend(OrtBackend(angle_repo)))
    found = measure_each(measurer, images)
    assert found[1] is None and found[0] is not None and found[2] is not None
    angles = measured_angles(found)
    assert np.isnan(angles[1]).all() and np.isfinite(angles[[0, 2]]).all()
    labels = auto_label(
        measurer,
        images,
        [NaRequest(100, 100)] * 3,
        [1, 2, 3],
        SamplerChoice("ddim", 4, 2.0),
        generator="g",
        model_version="v",
        file_names=["a.png", "b.png", "c.png"],
    )
    assert labels[1].record is None and labels[0].record is not None
    row = labels[1].to_dict()
    assert (
        row["measured"] is False and "na_left" not in row and row["seed"] == 2 and row["file_name"] == "b.png"
    )
