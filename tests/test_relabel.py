"""hipgen.data.relabel and hipgen.data.convert: corrected labels written back in place in every format (all
files or none, a crash finished by the journal), and a reviewed set exported with labels replaced."""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_formats import hips

from hipgen.data import relabel as relabel_mod
from hipgen.data.classfolders import class_folder
from hipgen.data.convert import convert_dataset
from hipgen.data.datasets import FORMATS, iter_dataset, open_writer
from hipgen.data.images import encode_png
from hipgen.data.manifest import MANIFEST_NAME, read_manifest, sha256_file, verify_manifest
from hipgen.data.record import LabelRecord
from hipgen.data.relabel import JOURNAL_NAME, recover_relabel, relabel_dataset, retext_png

NAS = [(112.0, 108.0), (95.0, 110.5), (120.0, 115.0)]  # Big, Small, Big
PROVENANCE = {"dataset_job": "job-1", "complete": True}
GENERATION = b'{"file_name": "000000.png", "requested_na_left": 112.0}\n'
SIDECAR = "review/corrections.jsonl"


def write_set(root: Path, fmt: str) -> list[LabelRecord]:
    """Three 64×64 16-bit synthetic images (two shards for webdataset) plus a job-runner sidecar."""
    opts = {"maxcount": 2} if fmt == "webdataset" else {}
    stored = []
    with open_writer(fmt, root, bits=16, provenance=PROVENANCE, **opts) as w:
        for i, na in enumerate(NAS):
            prov = {"synthetic": True, "generator": "phantom", "model_version": "1.0", "seed": i}
            rec = LabelRecord.from_keypoints(f"{i:06d}.png", hips(*na), **prov)
            p16 = np.random.default_rng(i).integers(0, 65536, (64, 64), dtype=np.uint16)
            stored.append(w.add(rec, p16 / 65535.0, p16, split="train"))
        w.add_sidecar("generation.jsonl", GENERATION)
    return stored


def read_set(root: Path) -> tuple[dict[str, tuple[LabelRecord, np.ndarray]], list[str]]:
    """Records and pixels by stem (a class-folder move changes the file name, not the stem), and the
    reader's warnings and skips."""
    items = iter_dataset(root)
    out = {Path(rec.file_name).stem: (rec, rad.pixels) for rec, rad in items}
    return out, items.report.warnings + [s.reason for s in items.report.skipped]


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def corrected(rec: LabelRecord, na: tuple[float, float]) -> LabelRecord:
    """What the review app sends: the rims moved, the angles re-measured."""
    return rec.with_keypoints(hips(*na))


# --- every format ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_relabel_rewrites_every_copy_of_the_labels_and_keeps_the_rest(tmp_path: Path, fmt: str):
    root = tmp_path / fmt
    stored = write_set(root, fmt)
    before, _ = read_set(root)
    old_manifest = read_manifest(root)
    fix = {
        stored[0].file_name: corrected(stored[0], (95.0, 108.0)),
        stored[2].file_name: corrected(stored[2], (118.0, 115.0)),
    }

    m = relabel_dataset(root, fix, sidecars={SIDECAR: b'{"file_name": "000000"}\n'})

    assert verify_manifest(root).ok, verify_manifest(root).problems
    assert m.to_dict() == read_manifest(root).to_dict()
    after, problems = read_set(root)
    assert problems == []  # class folders: nothing filed under the wrong class
    for i, stem in enumerate(("000000", "000001", "000002")):
        rec, px = after[stem]
        np.testing.assert_array_equal(px, before[stem][1])  # pixels to the bit
        if i == 1:
            assert rec == before[stem][0]
            continue
        want = fix[stored[i].file_name]
        assert replace(rec, file_name="") == replace(want, file_name="")
    moved = after["000000"][0].file_name
    if fmt == "classfolders":
        assert stored[0].file_name == "Big/000000.png" and moved == "Small/000000.png"
        assert class_folder(after["000000"][0]) == "Small"
        assert not (root / "Big/000000.png").exists()
    else:
        assert moved == stored[0].file_name
    # the manifest: new records and hashes, every other entry, the provenance and the sidecars kept
    assert m.provenance == old_manifest.provenance and m.preprocessing == old_manifest.preprocessing
    assert m.created_at == old_manifest.created_at and m.format == fmt
    entries = {e.path: e for e in m.files}
    old_entries = {e.path: e for e in old_manifest.files}
    assert entries["generation.jsonl"] == old_entries["generation.jsonl"]
    assert entries[SIDECAR].sha256 == sha256_file(root / SIDECAR)[0] and entries[SIDECAR].record is None
    listed = [r for e in m.files for r in (*e.samples, *([e.record] if e.record else []))]
    assert sorted(r.file_name for r in listed) == sorted(r.file_name for r, _ in after.values())
    assert {r.file_name: r for r in listed} == {r.file_name: r for r, _ in after.values()}
    assert all(e.split == "train" for e in m.files if e.record or e.samples)
    if fmt != "webdataset":  # the untouched image's file is untouched
        assert entries[stored[1].file_name] == old_entries[stored[1].file_name]
    assert not (root / JOURNAL_NAME).exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".relabel-")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_crash_after_the_journal_is_finished_by_recover(tmp_path: Path, fmt: str, monkeypatch):
    root = tmp_path / fmt
    stored = write_set(root, fmt)
    fix = {stored[0].file_name: corrected(stored[0], (95.0, 108.0))}
    real, calls = os.replace, []

    def crashing_replace(src, dst):
        calls.append(dst)
        if len(calls) > 2:  # the journal and one rename happen, then the "power cut"
            raise OSError("simulated crash")
        real(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        relabel_dataset(root, fix)
    monkeypatch.setattr(os, "replace", real)
    assert (root / JOURNAL_NAME).is_file()

    assert recover_relabel(root) is True
    assert verify_manifest(root).ok, verify_manifest(root).problems
    after, problems = read_set(root)
    assert problems == []
    assert replace(after["000000"][0], file_name="") == replace(fix[stored[0].file_name], file_name="")
    assert recover_relabel(root) is False  # nothing left to do


def test_the_next_relabel_finishes_an_interrupted_one_first(tmp_path: Path, monkeypatch):
    root = tmp_path / "d"
    stored = write_set(root, "imagefolder")
    fix = {stored[1].file_name: corrected(stored[1], (96.0, 110.5))}
    monkeypatch.setattr(relabel_mod, "_apply", lambda root, journal: None)  # killed right after the journal
    relabel_dataset(root, fix)
    monkeypatch.undo()
    assert (root / JOURNAL_NAME).is_file()
    relabel_dataset(root, {}, sidecars={SIDECAR: b"x\n"})
    assert verify_manifest(root).ok
    assert read_set(root)[0]["000001"][0] == fix[stored[1].file_name]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("where", ["staging", "journal"])
def test_a_failure_before_the_journal_leaves_the_dataset_as_it_was(
    tmp_path: Path, fmt: str, where: str, monkeypatch
):
    root = tmp_path / fmt
    stored = write_set(root, fmt)
    before = snapshot(root)
    fix = {stored[0].file_name: corrected(stored[0], (95.0, 108.0))}
    if where == "staging":
        real, calls = relabel_mod._write_new, []

        def failing_write(path: Path, data: bytes) -> None:
            calls.append(path)
            if len(calls) == 2:
                path.write_bytes(data[:3])  # half a file, then the disk is full
                raise OSError("no space left on device")
            real(path, data)

        monkeypatch.setattr(relabel_mod, "_write_new", failing_write)
    else:

        def failing_journal(path: Path, data: bytes) -> None:
            raise OSError("no space left on device")

        monkeypatch.setattr(relabel_mod, "write_atomic", failing_journal)
    with pytest.raises(OSError, match="no space"):
        relabel_dataset(root, fix, sidecars={SIDECAR: b"x\n"})
    assert snapshot(root) == before  # byte-identical, and no temp file left
    assert verify_manifest(root).ok


def test_refusals_name_the_problem_and_change_nothing(tmp_path: Path):
    root = tmp_path / "d"
    stored = write_set(root, "classfolders")
    before = snapshot(root)
    key = stored[0].file_name
    good = corrected(stored[0], (100.0, 108.0))
    with pytest.raises(ValueError, match="Big/nope.png: no image"):
        relabel_dataset(root, {"Big/nope.png": good})
    with pytest.raises(ValueError, match="na_left .* not the angle its keypoints measure"):
        relabel_dataset(root, {key: replace(good, na_left=good.na_left + 0.01)})
    with pytest.raises(ValueError, match="cannot change seed"):
        relabel_dataset(root, {key: replace(good, seed=99)})
    for name in ("metadata.csv", MANIFEST_NAME, "../outside.txt", "Small/x.png", key):
        with pytest.raises(ValueError):
            relabel_dataset(root, {key: good}, sidecars={name: b"x"})
    (root / "Small" / "000000.png").write_bytes(b"in the way")  # the move's target exists
    with pytest.raises(ValueError, match="cannot move to Small/000000.png"):
        relabel_dataset(root, {key: good})
    (root / "Small" / "000000.png").unlink()
    assert snapshot(root) == before


def test_a_sidecar_already_listed_is_replaced_and_no_change_is_a_no_op(tmp_path: Path):
    root = tmp_path / "d"
    stored = write_set(root, "dicom")
    relabel_dataset(root, {}, sidecars={SIDECAR: b"one\n"})
    m = relabel_dataset(root, {}, sidecars={SIDECAR: b"one\ntwo\n"})
    assert [e.path for e in m.files].count(SIDECAR) == 1
    assert (root / SIDECAR).read_bytes() == b"one\ntwo\n" and verify_manifest(root).ok
    before = snapshot(root)
    relabel_dataset(root, {stored[0].file_name: stored[0]})  # the stored labels again: nothing to do
    with pytest.raises(ValueError, match="belongs to the dataset"):
        relabel_dataset(root, {}, sidecars={"metadata.csv": b"file_name\n"})
    assert snapshot(root) == before


def test_stale_temp_files_of_a_killed_stage_are_swept(tmp_path: Path):
    root = tmp_path / "d"
    write_set(root, "webdataset")
    (root / ".relabel-0123456789ab-0000.tmp").write_bytes(b"half")
    assert recover_relabel(root) is False
    assert verify_manifest(root).ok


@pytest.mark.parametrize("bits", [8, 16])
def test_retext_png_keeps_pixels_and_bit_depth(bits: int):
    px = np.random.default_rng(bits).random((32, 48))
    data = encode_png(px, bits=bits)
    out = retext_png(data, {"hipgen:synthetic": "true"})
    a, b = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(out))
    assert b.mode == a.mode and b.text == {"hipgen:synthetic": "true"}
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
    assert retext_png(out, {"hipgen:synthetic": "true"}) is out  # already so: the same bytes


# --- export -------------------------------------------------------------------------------------------
def test_convert_dataset_exports_the_corrected_set_minus_rejected(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    stored = write_set(src, "imagefolder")
    fix = corrected(stored[0], (95.0, 108.0))
    ticks: list[int] = []
    res = convert_dataset(
        src,
        dst,
        "classfolders",
        include=lambda r: r.file_name != stored[1].file_name,
        replace_records={stored[0].file_name: fix},
        provenance={"review": "r-1"},
        progress=ticks.append,
    )
    assert (res.count, res.excluded, res.source_format, ticks) == (2, 1, "imagefolder", [1, 2])
    assert res.manifest.provenance == {"converted_from": "imagefolder", "review": "r-1"}
    after, problems = read_set(dst)
    assert problems == [] and sorted(after) == ["000000", "000002"]
    assert after["000000"][0] == replace(fix, file_name="Small/000000.png")
    assert after["000002"][0] == replace(stored[2], file_name="Big/000002.png")
    assert verify_manifest(dst).ok


def test_convert_dataset_refuses_a_replacement_for_an_unknown_image(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    stored = write_set(src, "webdataset")
    with pytest.raises(ValueError, match="nope.png"):
        convert_dataset(src, dst, "imagefolder", replace_records={"nope.png": stored[0]})
    assert not (dst / MANIFEST_NAME).exists()  # an incomplete dataset has no manifest
    bad = replace(stored[0], na_right=1.0)
    with pytest.raises(ValueError, match="na_right"):
        convert_dataset(src, tmp_path / "dst2", "imagefolder", replace_records={stored[0].file_name: bad})
