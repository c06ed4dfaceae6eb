"""`hipgen train diffusion` end to end on a tiny config: pelvis views of fresh phantoms → checkpoints
with sample grids → EMA model and ONNX; a second call resumes; bad options are one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hipgen.cli import app

pytest.importorskip("torch")
pytest.importorskip("diffusers")

runner = CliRunner()
TINY = ["--count", "6", "--size", "32", "--tiny", "--batch-size", "2", "--checkpoint-every", "2"]
TINY += ["--grid-steps", "2", "--workers", "1"]


def test_train_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "diffusion", "--out", str(out), "--steps", "4", *TINY])
    assert res.exit_code == 0, res.output
    for name in (
        "model.pt",
        "model.json",
        "unet.onnx",
        "train.json",
        "samples_000002.png",
        "samples_000004.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = json.loads((out / "train.json").read_text())
    assert report["steps"] == 4 and report["train_images"] == 6 and report["config"]["size"] == 32
    res = runner.invoke(app, ["train", "diffusion", "--out", str(out), "--steps", "6", "--resume", *TINY])
    assert res.exit_code == 0, res.output
    assert (out / "samples_000006.png").is_file()
    assert json.loads((out / "train.json").read_text())["steps"] == 6


def test_bad_options_are_one_line(tmp_path: Path) -> None:
    bad_size = [a if a != "32" else "36" for a in TINY]
    res = runner.invoke(app, ["train", "diffusion", "--out", str(tmp_path), "--steps", "2", *bad_size])
    assert res.exit_code != 0 and "multiple of 8" in res.output
    res = runner.invoke(
        app, ["train", "diffusion", "--out", str(tmp_path / "x"), "--resume", "--steps", "2", *TINY]
    )
    assert res.exit_code == 2 and "no checkpoint" in res.output
