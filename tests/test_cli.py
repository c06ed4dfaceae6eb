"""The hipgen command line end to end: render every format, convert, inspect, and fail cleanly."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hipgen.cli import app
from hipgen.data.datasets import FORMATS, iter_dataset
from hipgen.data.manifest import read_manifest, verify_manifest
from hipgen.data.record import LabelRecord
from hipgen.phantom import PhantomSpec, render_phantom
from hipgen.phantom.dataset import SPECS_NAME

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_phantom_writes_every_format_with_exact_labels(tmp_path: Path, fmt: str):
    out = tmp_path / fmt
    r = run(
        "phantom",
        "-n",
        "3",
        "-o",
        str(out),
        "-f",
        fmt,
        "--size",
        "128",
        "--na-range",
        "80",
        "115",
        "--seed",
        "5",
        "--json",
    )
    assert r.exit_code == 0, r.output
    printed = [
        LabelRecord.from_mapping(json.loads(line)) for line in r.stdout.splitlines() if line.startswith("{")
    ]
    assert len(printed) == 3
    read = {rec.file_name: rec for rec, _ in iter_dataset(out)}
    assert {p.file_name: p for p in printed} == read  # what --json printed is what was stored
    assert verify_manifest(out).ok
    specs = [json.loads(line) for line in (out / SPECS_NAME).read_text().splitlines()]
    for item in specs:
        spec = PhantomSpec.from_dict(item["spec"])
        rec = read[item["file_name"]]
        assert 80 <= rec.na_left <= 115 and abs(rec.na_left - spec.na_left) < 0.01
        assert abs(rec.na_right - spec.na_right) < 0.01
        assert rec.synthetic is True and rec.seed == item["seed"]


def test_spec_sidecar_reproduces_each_image(tmp_path: Path):
    out = tmp_path / "set"
    assert run("phantom", "-n", "2", "-o", str(out), "--size", "128", "--bits", "16").exit_code == 0
    first = json.loads((out / SPECS_NAME).read_text().splitlines()[1])
    again = render_phantom(PhantomSpec.from_dict(first["spec"]), seed=first["seed"])
    stored = dict((rec.file_name, img) for rec, img in iter_dataset(out))[first["file_name"]]
    assert np.array_equal(np.round(stored.pixels * 65535), again.pixels16.astype(np.float64))


def test_dicom_output_keeps_pixel_spacing(tmp_path: Path):
    out = tmp_path / "dcm"
    assert run("phantom", "-n", "1", "-o", str(out), "-f", "dicom", "--size", "128").exit_code == 0
    ((rec, img),) = list(iter_dataset(out))
    spec = PhantomSpec.from_dict(json.loads((out / SPECS_NAME).read_text())["spec"])
    expected = spec.body_size_mm / np.hypot(
        rec.left_head_x - rec.right_head_x, rec.left_head_y - rec.right_head_y
    )
    assert img.pixel_spacing_mm is not None
    assert img.pixel_spacing_mm[0] == pytest.approx(expected, rel=1e-4)


def test_convert_chain_keeps_labels(tmp_path: Path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert run("phantom", "-n", "4", "-o", str(a), "--size", "96", "--bits", "16").exit_code == 0
    assert run("convert", str(a), str(b), "--to", "webdataset").exit_code == 0
    assert run("convert", str(b), str(c), "--to", "classfolders").exit_code == 0
    original = sorted(rec.na_left for rec, _ in iter_dataset(a))
    assert sorted(rec.na_left for rec, _ in iter_dataset(c)) == original
    assert read_manifest(c).provenance["converted_from"] == "webdataset"
    with open(a / "metadata.csv") as f:
        assert next(csv.reader(f))[:2] == ["file_name", "text"]  # as diffusers / HF imagefolder expect


def test_inspect_shows_labels_of_an_image_in_a_folder(tmp_path: Path):
    out = tmp_path / "a"
    run("phantom", "-n", "2", "-o", str(out), "--size", "96")
    r = run("inspect", str(out / "phantom_0_000001.png"), "--json")
    info = json.loads(r.stdout)
    assert info["format"] == "png" and info["label"]["file_name"] == "phantom_0_000001.png"
    assert info["metadata"]["hipgen:synthetic"] == "true"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["phantom", "-n", "1", "-o", "{tmp}/x", "-f", "tiff"], "unknown dataset format 'tiff'"),
        (["phantom", "-n", "1", "-o", "{tmp}/x", "--na-range", "10", "20"], "na_range must satisfy"),
        (["phantom", "-n", "1", "-o", "{tmp}/x", "--distribution", "normal"], "--distribution 'normal'"),
        (["inspect", "{tmp}/missing.png"], "no such file"),
        (["inspect", "{tmp}/junk.png"], "not an image file"),
        (["convert", "{tmp}", "{tmp}/y", "--to", "imagefolder"], "cannot tell the dataset format"),
        (["phantom", "-n", "1", "-o", "/proc/hipgen-test/x"], "/proc/hipgen-test"),  # an OSError
        (
            ["convert", "{tmp}", "{tmp}/y", "--to", "dicom", "--square", "round"],
            "--square must be crop or pad",
        ),
        (["deidentify", "{tmp}/none", "{tmp}/y", "--salt", "s"], "no such file or folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str):
    (tmp_path / "junk.png").write_text("junk")
    r = runner.invoke(app, [a.format(tmp=tmp_path) for a in args], catch_exceptions=False)  # a crash raises
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.strip()]) <= 2  # one message (may wrap once)


def test_refuses_to_write_into_a_non_empty_folder(tmp_path: Path):
    (tmp_path / "keep.txt").write_text("x")
    r = runner.invoke(app, ["phantom", "-n", "1", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "not empty" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_entry_point_runs_as_a_program(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "hipgen.cli", "inspect", str(tmp_path / "nope.dcm")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no such file" in done.stderr and "Traceback" not in done.stderr


def test_bad_settings_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HIPGEN_MAX_IMAGE_PIXELS", "lots")
    r = runner.invoke(app, ["inspect", str(tmp_path)], catch_exceptions=False)
    assert r.exit_code == 2 and "settings: max_image_pixels" in r.stderr
    monkeypatch.delenv("HIPGEN_MAX_IMAGE_PIXELS")
    cfg = tmp_path / "bad.toml"
    cfg.write_text("port = [unclosed")
    monkeypatch.setenv("HIPGEN_CONFIG", str(cfg))
    r = runner.invoke(app, ["version"], catch_exceptions=False)
    assert r.exit_code == 2 and "settings:" in r.stderr


def test_phantom_split_is_stratified_and_recorded(tmp_path: Path):
    out = tmp_path / "s"
    r = run("phantom", "-n", "40", "-o", str(out), "--size", "64", "--split", "219", "31", "84")
    assert r.exit_code == 0, r.output
    files = [f for f in read_manifest(out).files if f.record is not None]
    counts = {k: sum(f.split == k for f in files) for k in ("train", "val", "test")}
    assert counts == {"train": 26, "val": 4, "test": 10}  # 40 × 219/31/84, largest remainders
    small = {
        k: sum(f.split == k and "small" in (f.record.class_left, f.record.class_right) for f in files)
        for k in counts
    }
    total_small = sum(small.values())
    assert abs(small["train"] - total_small * 26 / 40) <= 1  # stratified by Big/Small


def test_convert_preprocesses_pixels_and_keypoints_together(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run("phantom", "-n", "2", "-o", str(a), "--size", "96", "--distribution", "tidy").exit_code == 0
    r = run("convert", str(a), str(b), "--to", "imagefolder", "--square", "pad", "--resize", "64", "--clahe")
    assert r.exit_code == 0, r.output
    before = {rec.file_name: (rec, img) for rec, img in iter_dataset(a)}
    for rec, img in iter_dataset(b):
        old, old_img = before[rec.file_name]
        assert img.pixels.shape == (64, 64)
        k = 64 / max(old_img.pixels.shape)
        assert rec.left_radius == pytest.approx(old.left_radius * k, rel=1e-6)
        assert rec.na_left == pytest.approx(old.na_left, abs=1e-6)  # a similarity keeps the angle
    assert read_manifest(b).preprocessing is not None


def test_inspect_reads_label_files(tmp_path: Path):
    from hipgen.data.keypoints import write_mat

    out = tmp_path / "a"
    run("phantom", "-n", "2", "-o", str(out), "--size", "96")
    info = json.loads(run("inspect", str(out / "metadata.csv"), "--json").stdout)
    assert [rec["file_name"] for rec in info["labels"]] == ["phantom_0_000000.png", "phantom_0_000001.png"]
    rec = LabelRecord.from_mapping(info["labels"][0])
    write_mat(tmp_path / "x.mat", rec)
    mat = json.loads(run("inspect", str(tmp_path / "x.mat"), "--json").stdout)["labels"][0]
    assert mat["na_left"] == pytest.approx(rec.na_left)


def test_deidentify_command(tmp_path: Path):
    import pydicom

    src = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.dcm").write_bytes(src.read_bytes())
    r = run("deidentify", str(tmp_path / "in"), str(tmp_path / "out"), "--salt", "s3cret")
    assert r.exit_code == 0, r.output
    ds = pydicom.dcmread(tmp_path / "out" / "a.dcm")
    original = pydicom.dcmread(src)
    assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientName) != str(original.PatientName)
    assert ds.StudyInstanceUID != original.StudyInstanceUID


def test_phantom_dicom_flags_burned_in_text(tmp_path: Path):
    import pydicom

    out = tmp_path / "d"
    assert run("phantom", "-n", "6", "-o", str(out), "-f", "dicom", "--size", "64").exit_code == 0
    specs = {
        json.loads(line)["file_name"]: PhantomSpec.from_dict(json.loads(line)["spec"])
        for line in (out / SPECS_NAME).read_text().splitlines()
    }
    flags = {n: pydicom.dcmread(out / n).BurnedInAnnotation for n in specs}
    assert {flags[n] == ("YES" if s.burned_text or s.overlay else "NO") for n, s in specs.items()} == {True}
    assert "YES" in flags.values()
