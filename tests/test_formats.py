"""hipgen.data formats: every writer round-trips through its reader (labels exactly, pixels to the bit),
keypoint files round-trip any record, and bad input fails with a typed error naming the file or is
skipped and reported."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hipgen import anatomy
from hipgen.data import keypoints as kpio
from hipgen.data.datasets import FORMATS, detect_format, iter_dataset, open_writer
from hipgen.data.images import encode_png
from hipgen.data.manifest import FileEntry, read_manifest, verify_manifest
from hipgen.data.preprocess import Preprocessing, Resize
from hipgen.data.record import LABEL_COLUMNS, LabelRecord
from hipgen.errors import CorruptFileError, InputError, LabelError, UnsupportedImageError


def hips(
    na_left: float,
    na_right: float,
    *,
    cx: float = 32.0,
    cy: float = 32.0,
    sep: float = 30.0,
    radius: float | None = None,
) -> anatomy.HipKeypoints:
    """Heads ``sep`` apart (patient's left on image right), rims at 1.1× radius, cranial and lateral."""
    r = radius if radius is not None else 0.22 * sep
    lh, rh = (cx + sep / 2, cy), (cx - sep / 2, cy)
    a, b = math.radians(na_left), math.radians(na_right)
    return anatomy.HipKeypoints(
        left_head=lh,
        right_head=rh,
        left_rim=(lh[0] - 1.1 * r * math.cos(a), lh[1] - 1.1 * r * math.sin(a)),
        right_rim=(rh[0] + 1.1 * r * math.cos(b), rh[1] - 1.1 * r * math.sin(b)),
        left_radius=r,
        right_radius=r,
    )


def sample(
    i: int, na: tuple[float, float], *, synthetic: bool | None = True, size: int = 64
) -> tuple[LabelRecord, np.ndarray, np.ndarray]:
    prov = {"generator": "phantom", "model_version": "1.2", "seed": i} if synthetic else {}
    rec = LabelRecord.from_keypoints(f"img_{i:03d}.png", hips(*na), synthetic=synthetic, **prov)
    p16 = np.random.default_rng(i).integers(0, 65536, (size, size), dtype=np.uint16)
    return rec, (p16 / 65535.0).astype(np.float32), p16


NAS = [(112.0, 108.0), (95.0, 110.5), (104.9, 120.0), (130.0, 88.0), (106.0, 106.0)]

# --- every text label format round-trips any record -------------------------------------------------
_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
_float = st.floats(allow_nan=False, allow_infinity=False)
records = st.builds(
    LabelRecord,
    file_name=_text,
    text=_text,
    na_left=_float,
    na_right=_float,
    left_head_x=_float,
    left_head_y=_float,
    right_head_x=_float,
    right_head_y=_float,
    left_rim_x=_float,
    left_rim_y=_float,
    right_rim_x=_float,
    right_rim_y=_float,
    left_radius=_float,
    right_radius=_float,
    class_left=_text,
    class_right=_text,
    grade_left=_text,
    grade_right=_text,
    synthetic=st.none() | st.booleans(),
    generator=st.none() | _text,
    model_version=st.none() | _text,
    seed=st.none() | st.integers(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=st.lists(records, min_size=1, max_size=4))
def test_any_record_round_trips_through_json_csv_and_manifest_entries(
    tmp_path: Path, recs: list[LabelRecord]
) -> None:
    kpio.write_labels_json(tmp_path / "l.json", recs)
    assert kpio.read_labels_json(tmp_path / "l.json") == recs
    (tmp_path / "one.json").write_text(json.dumps(recs[0].to_dict()))
    assert kpio.read_labels_json(tmp_path / "one.json") == [recs[0]]
    kpio.write_labels_csv(tmp_path / "l.csv", recs)
    assert kpio.read_labels_csv(tmp_path / "l.csv") == recs
    e = FileEntry("a.png", "0" * 64, 1, "train", recs[0], tuple(recs))
    assert FileEntry.from_dict(json.loads(json.dumps(e.to_dict())), "m") == e


keypoints = st.builds(
    hips,
    na_left=st.floats(60, 135),
    na_right=st.floats(60, 135),
    cx=st.floats(-1e3, 1e3),
    cy=st.floats(-1e3, 1e3),
    sep=st.floats(80, 120),
    radius=st.floats(10, 30),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kp=keypoints)
def test_mat_round_trips_keypoints_and_angles(tmp_path: Path, kp: anatomy.HipKeypoints) -> None:
    rec = LabelRecord.from_keypoints("x.png", kp)
    kpio.write_mat(tmp_path / "x.mat", rec)
    m = scipy.io.loadmat(str(tmp_path / "x.mat"))
    assert m["Four_points"].shape == (5, 2) and m["Angles"].shape == (1, 2)
    assert m["Angles"][0].tolist() == [rec.na_right, rec.na_left]
    assert kpio.mat_record(tmp_path / "x.mat", "x.png") == rec


# --- the published .mat folder -----------------------------------------------------------------------
def _mat_folder(root: Path, n: int = 3) -> list[LabelRecord]:
    recs = []
    for i in range(n):
        rec, px, _ = sample(i, NAS[i], synthetic=None)
        (root / rec.file_name).write_bytes(encode_png(px))
        kpio.write_mat(root / f"img_{i:03d}.mat", rec)
        recs.append(rec)
    return recs


def test_mat_folder_reads_into_records(tmp_path: Path) -> None:
    recs = _mat_folder(tmp_path)
    assert detect_format(tmp_path) == "mat"
    reader = iter_dataset(tmp_path)
    got = [r for r, _ in reader]
    assert got == recs and reader.report.warnings == [] and reader.report.read == 3


def test_mat_folder_reports_stored_angles_that_disagree_with_the_points(tmp_path: Path) -> None:
    recs = _mat_folder(tmp_path, 1)
    four, _ = anatomy.to_published(recs[0].keypoints())
    angles = np.array([[recs[0].na_right + 0.6, recs[0].na_left]])
    scipy.io.savemat(tmp_path / "img_000.mat", {"Four_points": four, "Angles": angles})
    reader = iter_dataset(tmp_path, fmt="mat")
    assert [r for r, _ in reader] == recs  # the points win
    assert len(reader.report.warnings) == 1 and "right angle" in reader.report.warnings[0]


def test_mat_folder_bad_input(tmp_path: Path) -> None:
    _mat_folder(tmp_path, 2)
    (tmp_path / "orphan.mat").write_bytes((tmp_path / "img_000.mat").read_bytes())
    (tmp_path / "img_001.mat").write_bytes(b"not a mat file at all")
    scipy.io.savemat(tmp_path / "img_002.mat", {"Points": np.zeros((5, 2))})
    (tmp_path / "img_002.png").write_bytes(encode_png(np.zeros((8, 8))))
    with pytest.raises(CorruptFileError, match="img_001.mat"):
        list(iter_dataset(tmp_path, fmt="mat"))
    reader = iter_dataset(tmp_path, fmt="mat", on_error="skip")
    assert [r.file_name for r, _ in reader] == ["img_000.png"]
    skipped = {Path(s.source).name: s for s in reader.report.skipped}
    assert skipped["img_001.mat"].error == "CorruptFileError"
    assert skipped["img_002.mat"].error == "LabelError" and "Four_points" in skipped["img_002.mat"].reason
    assert skipped["orphan.mat"].error == "LabelError" and "missing image" in skipped["orphan.mat"].reason


# --- every dataset format round-trips ----------------------------------------------------------------
def _write(fmt: str, root: Path, n: int = 5, **opts: object) -> list[LabelRecord]:
    stored = []
    with open_writer(fmt, root, provenance={"generator": "phantom"}, **opts) as w:  # type: ignore[arg-type]
        for i in range(n):
            rec, px, p16 = sample(i, NAS[i % len(NAS)])
            stored.append(w.add(rec, px, p16, split="train" if i < 3 else "test"))
    return stored


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_labels_and_16_bit_pixels(tmp_path: Path, fmt: str) -> None:
    stored = _write(fmt, tmp_path / "ds", bits=16)
    assert detect_format(tmp_path / "ds") == fmt
    reader = iter_dataset(tmp_path / "ds")
    got = list(reader)
    assert reader.report.skipped == [] and reader.report.read == 5
    by_name = {r.file_name: (r, rad) for r, rad in got}
    for i, want in enumerate(stored):
        rec, rad = by_name[want.file_name]
        original = sample(i, NAS[i])[0]
        assert rec == want and replace(rec, file_name=original.file_name) == original
        assert rad.bit_depth == 16
        np.testing.assert_array_equal(np.round(rad.pixels.astype(np.float64) * 65535), sample(i, NAS[i])[2])
    assert verify_manifest(tmp_path / "ds").ok
    man = read_manifest(tmp_path / "ds")
    assert man.format == fmt and man.split_counts == {"test": 2, "train": 3}
    assert man.provenance == {"generator": "phantom"}
    assert man.to_dict()["generators"] == [{"generator": "phantom", "model_version": "1.2", "images": 5}]


def test_imagefolder_layout_and_synthetic_png_chunks(tmp_path: Path) -> None:
    with open_writer("imagefolder", tmp_path / "ds") as w:
        w.add(*sample(0, NAS[0])[:2])
        w.add(replace(sample(1, NAS[1], synthetic=False)[0], file_name="sub/real.jpg"), sample(1, NAS[1])[1])
    header = (tmp_path / "ds" / "metadata.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == LABEL_COLUMNS and header[:2] == ["file_name", "text"]
    synth = Image.open(tmp_path / "ds" / "img_000.png")
    assert synth.mode == "L" and synth.info["hipgen:synthetic"] == "true"
    assert synth.info["hipgen:generator"] == "phantom" and synth.info["hipgen:seed"] == "0"
    assert not any(k.startswith("hipgen:") for k in Image.open(tmp_path / "ds" / "sub/real.png").info)
    got = {r.file_name: rad for r, rad in iter_dataset(tmp_path / "ds")}
    assert set(got) == {"img_000.png", "sub/real.png"} and got["img_000.png"].bit_depth == 8
    np.testing.assert_array_equal(got["img_000.png"].pixels, np.round(sample(0, NAS[0])[1] * 255) / 255)


def test_classfolders_file_by_worst_side(tmp_path: Path) -> None:
    stored = _write("classfolders", tmp_path / "ds")
    want = [
        "Big/img_000.png",
        "Small/img_001.png",
        "Small/img_002.png",
        "Small/img_003.png",
        "Big/img_004.png",
    ]
    assert [r.file_name for r in stored] == want
    assert all((tmp_path / "ds" / f).is_file() for f in want)
    assert [r.file_name for r in kpio.read_labels_csv(tmp_path / "ds" / "metadata.csv")] == want


def test_classfolders_report_an_image_filed_under_the_wrong_class(tmp_path: Path) -> None:
    _write("classfolders", tmp_path / "ds", n=1)
    recs = kpio.read_labels_csv(tmp_path / "ds" / "metadata.csv")
    (tmp_path / "ds" / "Small").mkdir()
    (tmp_path / "ds" / "Big" / "img_000.png").rename(tmp_path / "ds" / "Small" / "img_000.png")
    kpio.write_labels_csv(tmp_path / "ds" / "metadata.csv", [replace(recs[0], file_name="Small/img_000.png")])
    reader = iter_dataset(tmp_path / "ds")
    assert len(list(reader)) == 1 and "labels say Big" in reader.report.warnings[0]


def test_webdataset_shards_by_count_and_split(tmp_path: Path) -> None:
    _write("webdataset", tmp_path / "ds", n=5, maxcount=2, prefix="hips")
    names = sorted(p.name for p in (tmp_path / "ds").glob("*.tar"))
    assert names == ["hips-test-000000.tar", "hips-train-000000.tar", "hips-train-000001.tar"]
    with tarfile.open(tmp_path / "ds" / "hips-train-000000.tar") as t:
        members = t.getnames()
        assert members == [
            "img_000.json",
            "img_000.png",
            "img_000.txt",
            "img_001.json",
            "img_001.png",
            "img_001.txt",
        ]
        assert t.extractfile("img_000.txt").read().decode() == sample(0, NAS[0])[0].text  # type: ignore[union-attr]
    assert [len(e.samples) for e in read_manifest(tmp_path / "ds").files] == [2, 1, 2]


def test_webdataset_reads_without_torch(tmp_path: Path) -> None:
    _write("webdataset", tmp_path / "ds", n=2)
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch': raise ModuleNotFoundError('torch blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from hipgen.data.datasets import iter_dataset\n"
        f"n = len(list(iter_dataset({str(tmp_path / 'ds')!r})))\n"
        "assert n == 2 and 'torch' not in sys.modules, n\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_dicom_writer_refuses_a_record_that_says_real(tmp_path: Path) -> None:
    rec, px, _ = sample(0, NAS[0], synthetic=False)
    with pytest.raises(ValueError, match="synthetic images only"), open_writer("dicom", tmp_path / "ds") as w:
        w.add(rec, px)
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_dicom_folder_file_without_labels(tmp_path: Path) -> None:
    from hipgen.data.dicom import write_synthetic_dicom  # fails loudly if the module is missing

    _write("dicom", tmp_path / "ds", n=2)
    write_synthetic_dicom(
        tmp_path / "ds" / "nolabel.dcm",
        np.zeros((8, 8)),
        record=None,
        generator="g",
        model_version="1",
        seed=None,
        pixel_spacing_mm=None,
    )
    (tmp_path / "ds" / "junk.dcm").write_bytes(b"\0" * 10)
    (tmp_path / "ds" / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="junk.dcm"):
        list(iter_dataset(tmp_path / "ds"))
    reader = iter_dataset(tmp_path / "ds", on_error="skip")
    assert [r.file_name for r, _ in reader] == ["img_000.dcm", "img_001.dcm"]
    assert {Path(s.source).name for s in reader.report.skipped} == {"nolabel.dcm", "junk.dcm"}
    assert [Path(w.split(":")[0]).name for w in reader.report.warnings] == ["notes.txt"]


def test_writer_applies_and_records_preprocessing(tmp_path: Path) -> None:
    pre = Preprocessing([Resize(32)])
    with open_writer("imagefolder", tmp_path / "ds", preprocessing=pre) as w:
        rec = w.add(*sample(0, NAS[0])[:2])
    assert rec.left_radius == pytest.approx(sample(0, NAS[0])[0].left_radius / 2)
    assert read_manifest(tmp_path / "ds").preprocessing == pre.describe()
    assert next(iter_dataset(tmp_path / "ds"))[1].pixels.shape == (32, 32)


def test_writer_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="imagefolder, classfolders, webdataset, dicom"):
        open_writer("zip", tmp_path / "a")
    with pytest.raises(ValueError, match="valid formats"):
        iter_dataset(tmp_path, fmt="zip")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        open_writer("imagefolder", tmp_path / "full")
    rec, px, _ = sample(0, NAS[0])
    with pytest.raises(RuntimeError), open_writer("webdataset", tmp_path / "wds") as w:
        w.add(rec, px)
        with pytest.raises(ValueError, match="duplicate"):
            w.add(rec, px)
        with pytest.raises(ValueError, match="finite float"):
            w.add(replace(rec, file_name="b.png"), np.full((4, 4), np.nan))
        raise RuntimeError("stop")
    assert list((tmp_path / "wds").iterdir()) == []  # no half shard, no manifest
    with pytest.raises(InputError, match="relative path"):
        open_writer("imagefolder", tmp_path / "c").add(replace(rec, file_name="../evil.png"), px)
    with pytest.raises(InputError, match="cannot tell"):
        detect_format(tmp_path / "c")


# --- bad input in folders ----------------------------------------------------------------------------
def _broken_imagefolder(root: Path) -> None:
    _write("imagefolder", root, n=5)
    (root / "img_001.png").write_bytes((root / "img_001.png").read_bytes()[:1000])  # truncated
    (root / "img_002.png").write_bytes(b"this is not an image")
    (root / "img_003.png").unlink()
    (root / "stray.png").write_bytes(encode_png(np.zeros((4, 4))))


@pytest.mark.parametrize(
    "name, err",
    [("img_001.png", CorruptFileError), ("img_002.png", UnsupportedImageError), ("img_003.png", LabelError)],
)
def test_imagefolder_bad_files_raise_naming_the_file(tmp_path: Path, name: str, err: type) -> None:
    _broken_imagefolder(tmp_path / "ds")
    for other in {"img_001.png", "img_002.png", "img_003.png"} - {name}:
        (tmp_path / "ds" / other).write_bytes((tmp_path / "ds" / "img_000.png").read_bytes())
    with pytest.raises(err, match=name) as e:
        list(iter_dataset(tmp_path / "ds"))
    assert "\n" not in str(e.value)


def test_imagefolder_skip_reports_every_bad_file(tmp_path: Path) -> None:
    _broken_imagefolder(tmp_path / "ds")
    reader = iter_dataset(tmp_path / "ds", on_error="skip")
    assert [r.file_name for r, _ in reader] == ["img_000.png", "img_004.png"]
    assert [(Path(s.source).name, s.error) for s in reader.report.skipped] == [
        ("img_001.png", "CorruptFileError"),
        ("img_002.png", "UnsupportedImageError"),
        ("img_003.png", "LabelError"),
    ]
    assert "missing file" in reader.report.skipped[2].reason
    assert any("stray.png" in w for w in reader.report.warnings)
    assert not verify_manifest(tmp_path / "ds").ok


def test_metadata_missing_columns_and_bad_rows(tmp_path: Path) -> None:
    _write("imagefolder", tmp_path / "ds", n=3)
    meta = tmp_path / "ds" / "metadata.csv"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join([lines[0], lines[1], lines[2].replace(",", ",oops,", 3), lines[3]]) + "\n")
    with pytest.raises(LabelError, match=r"metadata.csv:3"):
        list(iter_dataset(tmp_path / "ds"))
    reader = iter_dataset(tmp_path / "ds", on_error="skip")
    assert len(list(reader)) == 2 and reader.report.skipped[0].source.endswith("metadata.csv:3")
    meta.write_text("file_name,text,na_left\nimg_000.png,x,100\n")
    with pytest.raises(LabelError, match="metadata.csv: label table is missing columns: na_right"):
        list(iter_dataset(tmp_path / "ds"))
    meta.write_bytes(b"\xff\xfe\x00bad")
    reader = iter_dataset(tmp_path / "ds", on_error="skip")
    assert list(reader) == [] and reader.report.skipped[0].error == "CorruptFileError"


def test_json_labels_bad_input(tmp_path: Path) -> None:
    p = tmp_path / "l.json"
    p.write_text('[1, {"file_name": "a"}]')
    with pytest.raises(LabelError, match=r"l.json\[0\]"):
        kpio.read_labels_json(p)
    p.write_text("{")
    with pytest.raises(CorruptFileError, match="l.json"):
        kpio.read_labels_json(p)


def test_webdataset_bad_shards(tmp_path: Path) -> None:
    _write("webdataset", tmp_path / "ds", n=4, maxcount=2)
    shard = tmp_path / "ds" / "shard-train-000001.tar"  # holds img_002 only
    shard.write_bytes(shard.read_bytes()[:700])  # a header and part of the first member
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in ("lonely.png", "README"):
            info = tarfile.TarInfo(name)
            info.size = 3
            t.addfile(info, io.BytesIO(b"abc"))
    (tmp_path / "ds" / "shard-zz-000000.tar").write_bytes(buf.getvalue())
    (tmp_path / "ds" / "shard-zzz-000000.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(InputError, match="shard-"):
        list(iter_dataset(tmp_path / "ds"))
    reader = iter_dataset(tmp_path / "ds", on_error="skip")
    names = [r.file_name for r, _ in reader]
    assert {"img_000.png", "img_001.png", "img_003.png"} <= set(names)
    reasons = {Path(s.source.split(":")[0]).name: s.reason for s in reader.report.skipped}
    assert "shard-train-000001.tar" in reasons
    assert "no json" in reasons["shard-zz-000000.tar"]
    assert "not a readable tar" in reasons["shard-zzz-000000.tar"]
    assert any("'README' is not <key>.<ext>" in w for w in reader.report.warnings)
