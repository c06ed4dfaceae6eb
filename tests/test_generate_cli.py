"""``hipgen generate`` on tiny exported generators: an image folder of synthetic-marked PNGs whose
labels are measured, a generation.jsonl with what was asked; one red line (exit 2) for bad requests;
``hipgen export generator`` and ``hipgen evaluate generator`` on the same repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from hipgen.cli import app
from hipgen.data.imagefolder import iter_imagefolder

runner = CliRunner()


def test_generate_writes_a_labelled_synthetic_folder(tiny_generator_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen"
    args = ["generate", "--repo", str(tiny_generator_repo), "--na-left", "95", "--na-right", "110"]
    res = runner.invoke(
        app, [*args, "--count", "3", "--steps", "2", "--batch-size", "2", "--seed", "4", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "generation.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [4, 5, 6]
    assert all(r["requested_na_left"] == 95 and r["requested_na_right"] == 110 for r in rows)
    assert all(
        r["sampler"] == "ddim" and r["steps"] == 2 and r["generator"] == "generator_ddpm" for r in rows
    )
    records = list(iter_imagefolder(out))
    assert [rec.file_name for rec, _ in records] == [r["file_name"] for r in rows]
    for (rec, rad), row in zip(records, rows, strict=True):
        assert rec.synthetic and rec.na_left == pytest.approx(row["na_left"])
        assert rad.pixels.shape == (32, 32)
        assert Image.open(out / rec.file_name).text["hipgen:synthetic"] == "true"
    again = runner.invoke(app, [*args, "--count", "1", "-o", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--na-left", "140", "--na-right", "100"], "na_left"),
        (["--na-left", "100", "--na-right", "100", "--sampler", "euler"], "unknown sampler"),
        (["--na-left", "100", "--na-right", "100", "--model", "generator_ddpm", "--sampler", "lcm"], "lcm"),
        (["--na-left", "100", "--na-right", "100", "--steps", "5000"], "steps"),
        (["--na-left", "100", "--na-right", "100", "--model", "nope"], "nope"),
    ],
)
def test_bad_generate_requests_are_one_line(
    tiny_generator_repo: Path, tmp_path: Path, extra, message
) -> None:  # noqa: ANN001
    res = runner.invoke(
        app, ["generate", "--repo", str(tiny_generator_repo), "-o", str(tmp_path / "o"), *extra]
    )
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o" / "metadata.csv").exists()


def test_evaluate_generator_records_fidelity(tiny_generator_repo: Path, tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(tiny_generator_repo, repo, symlinks=True)
    res = runner.invoke(
        app,
        [
            "evaluate", "generator", "--repo", str(repo), "--sampler", "lcm", "--steps", "2",
            "--grid", "80,120", "--reference", "0", "-o", str(tmp_path / "ev"), "--record",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "ev" / "lcm-2.json").read_text())
    assert report["fidelity"]["both"]["n"] == 8 and report["images"] == 4
    manifest = json.loads((repo / "generator_lcm" / "MANIFEST.json").read_text())
    assert manifest["metrics"]["lcm-2"]["fidelity"] == report["fidelity"]
    assert (tmp_path / "ev" / "lcm-2.png").stat().st_size > 5000


def test_generate_draws_angles_in_a_range(tiny_generator_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "range"
    args = ["generate", "--repo", str(tiny_generator_repo), "--na-range", "80", "120", "--steps", "2"]
    res = runner.invoke(app, [*args, "--count", "4", "--seed", "9", "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "generation.jsonl").read_text().splitlines()]
    req = [(r["requested_na_left"], r["requested_na_right"]) for r in rows]
    assert len(set(req)) == 4 and all(80 <= a <= 120 and 80 <= b <= 120 for a, b in req)
    again = runner.invoke(app, [*args, "--count", "4", "--seed", "9", "-o", str(tmp_path / "again")])
    assert again.exit_code == 0
    rows2 = [json.loads(line) for line in (tmp_path / "again" / "generation.jsonl").read_text().splitlines()]
    assert [(r["requested_na_left"], r["requested_na_right"]) for r in rows2] == req  # seeded
    for extra in ([], ["--na-left", "90"]):  # neither, or only half of a pair
        bad = runner.invoke(
            app, ["generate", "--repo", str(tiny_generator_repo), *extra, "-o", str(tmp_path / "x")]
        )
        assert bad.exit_code == 2 and "--na-range" in bad.output
    both = runner.invoke(app, [*args, "--na-left", "90", "--na-right", "90", "-o", str(tmp_path / "y")])
    assert both.exit_code == 2 and "either" in both.output
