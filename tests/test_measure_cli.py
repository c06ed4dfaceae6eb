"""``hipgen measure``: the AngleService pipeline in-process — a table, label records with --json,
overlays with --overlays; one red line with exit code 2 when nothing can run (bad options, missing files
or models), and one red line per image that cannot be measured, the others measured, exit code 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hipgen import anatomy, cli
from hipgen.angle.measure import measurer_from_backend
from hipgen.cli import app
from hipgen.data.dicom import write_synthetic_dicom
from hipgen.data.imagefolder import png_text
from hipgen.data.images import encode_png
from hipgen.data.record import LabelRecord
from hipgen.inference.backend import OrtBackend
from hipgen.phantom import PhantomSpec, render_phantom

runner = CliRunner()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A synthetic-marked 8-bit PNG (320x256), a plain 16-bit PNG (256x288) and a DICOM (256x256)."""
    root = tmp_path_factory.mktemp("measure")
    a = render_phantom(PhantomSpec(width=320, height=256), seed=1)
    b = render_phantom(PhantomSpec(width=256, height=288), seed=2)
    c = render_phantom(PhantomSpec(width=256, height=256), seed=3)
    (root / "a.png").write_bytes(encode_png(a.pixels, text=png_text(a.record("a.png"))))
    (root / "b.png").write_bytes(encode_png(b.pixels, bits=16))
    write_synthetic_dicom(
        root / "c.dcm",
        c.pixels,
        record=c.record("c.dcm"),
        generator="phantom",
        model_version="test",
        seed=3,
        pixel_spacing_mm=(0.2, 0.2),
    )
    return [root / "a.png", root / "b.png", root / "c.dcm"]


def _measure(*args: str):
    return runner.invoke(app, ["measure", *args], catch_exceptions=False)


def _one_red_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2, r.output
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error:"), r.stderr  # one message (may wrap once)
    return r.stderr


def _records(stdout: str) -> list[LabelRecord]:
    return [LabelRecord.from_mapping(json.loads(line)) for line in stdout.splitlines() if line.strip()]


def _error_lines(r) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]


def test_table_lists_every_image(images: list[Path], angle_repo: Path):
    r = _measure(*map(str, images), "--model-repo", str(angle_repo))
    assert r.exit_code == 0, r.output
    for name in ("a.png", "b.png", "c.dcm", "NA R", "P(big) L"):
        assert name in r.stdout


def test_json_prints_one_label_record_per_image(images: list[Path], angle_repo: Path):
    r = _measure(
        *map(str, images), "--model-repo", str(angle_repo), "--json", "--scheme", "BVA", "--threshold", "100"
    )
    assert r.exit_code == 0, r.output
    recs = _records(r.stdout)
    assert [rec.file_name for rec in recs] == ["a.png", "b.png", "c.dcm"]
    for rec in recs:
        assert rec.grade_left == anatomy.grade(rec.na_left, "bva")
        assert rec.class_right == anatomy.hip_class(rec.na_right, 100.0)
    assert [rec.synthetic for rec in recs] == [True, None, True]  # b.png carries no synthetic marker
    assert recs[0].seed == 1 and recs[0].generator == "phantom"


def test_overlays_are_written_per_image(images: list[Path], angle_repo: Path, tmp_path: Path):
    out = tmp_path / "ov"
    r = _measure(*map(str, images), "--model-repo", str(angle_repo), "--overlays", str(out))
    assert r.exit_code == 0, r.output
    sizes = {p.name: Image.open(p).size for p in out.iterdir()}
    assert sizes == {"a_overlay.png": (320, 256), "b_overlay.png": (256, 288), "c_overlay.png": (256, 256)}


def test_model_repository_defaults_to_the_setting(
    images: list[Path], angle_repo: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HIPGEN_MODEL_REPOSITORY", str(angle_repo))
    r = _measure(str(images[0]), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["file_name"] == "a.png"


def test_missing_file_is_one_line_exit_2(angle_repo: Path, tmp_path: Path):
    assert str(tmp_path / "nope.png") in _one_red_line(
        _measure(str(tmp_path / "nope.png"), "--model-repo", str(angle_repo))
    )


def test_corrupt_and_tiny_images_fail_alone_and_the_run_exits_1(
    images: list[Path], angle_repo: Path, tmp_path: Path
):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(images[0].read_bytes()[:200])
    tiny = tmp_path / "tiny.png"
    tiny.write_bytes(encode_png(np.full((40, 16), 0.5)))
    paths = [corrupt, images[0], tiny, images[1]]
    r = _measure(*map(str, paths), "--model-repo", str(angle_repo), "--json")
    assert r.exit_code == 1, r.output
    assert [rec.file_name for rec in _records(r.stdout)] == ["a.png", "b.png"]  # measured in order
    errors = _error_lines(r)
    assert len(errors) == 2 and str(corrupt) in errors[0] and str(tiny) in errors[1], r.stderr
    assert "16x40" in errors[1] and "32" in errors[1]
    assert "Traceback" not in r.output
    table = _measure(*map(str, paths), "--model-repo", str(angle_repo))  # the table keeps the good rows
    assert table.exit_code == 1 and "a.png" in table.stdout and "b.png" in table.stdout
    assert "2 of 4 images could not be measured" in table.stderr


class _FailsOnBlank:
    """The real measurer, except that a batch holding a blank image raises ``error`` (as the geometry
    raises ValueError on coinciding points)."""

    def __init__(self, inner: Any, error: Exception) -> None:
        self.inner, self.error = inner, error

    def measure(self, images: list[np.ndarray]) -> list[Any]:
        if any(float(im.max()) == 0.0 for im in images):
            raise self.error
        return self.inner.measure(images)


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (ValueError("head centres coincide"), "no measurable pair of hips"),
        (RuntimeError("boom"), "RuntimeError"),
    ],
)
def test_an_image_the_measurer_fails_on_fails_alone(
    images: list[Path],
    angle_repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    why: str,
):
    real = measurer_from_backend(OrtBackend(angle_repo))
    monkeypatch.setattr(cli, "_angle_measurer", lambda repo, model: _FailsOnBlank(real, error))
    blank = tmp_path / "blank.png"
    blank.write_bytes(encode_png(np.zeros((64, 64))))
    r = _measure(str(images[0]), str(blank), str(images[2]), "--model-repo", str(angle_repo), "--json")
    assert r.exit_code == 1, r.output
    assert [rec.file_name for rec in _records(r.stdout)] == ["a.png", "c.dcm"]
    errors = _error_lines(r)
    assert len(errors) == 1 and str(blank) in errors[0] and why in errors[0], r.stderr


def test_bad_options_and_missing_models_are_one_line_exit_2(
    images: list[Path], angle_repo: Path, tmp_path: Path
):
    assert "--scheme" in _one_red_line(
        _measure(str(images[0]), "--model-repo", str(angle_repo), "--scheme", "ofa")
    )
    assert "--threshold" in _one_red_line(
        _measure(str(images[0]), "--model-repo", str(angle_repo), "--threshold", "-1")
    )
    assert "angle_keypoints" in _one_red_line(_measure(str(images[0]), "--model-repo", str(tmp_path)))
    assert "nope" in _one_red_line(
        _measure(str(images[0]), "--model-repo", str(angle_repo), "--model", "nope")
    )
    not_keypoints = _measure(str(images[0]), "--model-repo", str(angle_repo), "--model", "angle_locator")
    assert "not a hip keypoint model" in _one_red_line(not_keypoints)


@pytest.mark.parametrize("broken", ["angle_keypoints/1/model.onnx", "angle_keypoints/MANIFEST.json"])
def test_a_corrupt_model_is_one_line_exit_2(
    images: list[Path], angle_repo: Path, tmp_path: Path, broken: str
):
    repo = tmp_path / "repo"
    shutil.copytree(angle_repo, repo)
    (repo / broken).write_bytes(b"\x00 not a model {" * 64)
    err = _one_red_line(_measure(str(images[0]), "--model-repo", str(repo)))
    assert "cannot load the model" in err and "Traceback" not in err


def test_measure_refuses_the_same_small_images_as_the_service():
    from hipgen.angle import measure
    from services.angle import servicer

    assert servicer.MIN_SIDE is measure.MIN_SIDE  # one constant, shared


def test_evaluate_angle_on_a_users_labelled_folder(tmp_path: Path) -> None:
    """`hipgen evaluate angle --data` reads a labelled folder (here an imagefolder of phantoms at a
    real study's proportions) and reports the deployed models' errors against its labels."""
    pytest.importorskip("torch")  # the evaluation lives in training/ (its plots and sets)
    data = tmp_path / "labelled"
    made = runner.invoke(
        app,
        ["phantom", "--count", "4", "--out", str(data), "--format", "imagefolder", "--size", "1024"]
        + ["--distribution", "population", "--seed", "5"],
    )
    assert made.exit_code == 0, made.output
    out = tmp_path / "eval"
    res = runner.invoke(app, ["evaluate", "angle", "--data", str(data), "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "eval.json").read_text())
    metrics = report["eval"]["labelled"]
    assert metrics["n_images"] == 4 and metrics["na"]["n"] == 8
    assert metrics["na"]["mae"] < 4.0  # the default model on in-distribution phantoms: ~1° on average
    assert (out / "eval.png").stat().st_size > 10_000
    missing = runner.invoke(app, ["evaluate", "angle", "--data", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such folder" in missing.output
