"""hipgen.data.split (exact, stratified, seeded) and hipgen.data.manifest (hashes that catch changes)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hipgen import anatomy
from hipgen.data.datasets import open_writer
from hipgen.data.manifest import MANIFEST_NAME, read_manifest, verify_manifest
from hipgen.data.record import LabelRecord
from hipgen.data.split import PUBLISHED_RATIO, SPLITS, apportion, split_records, stratum
from hipgen.errors import CorruptFileError, InputError


def rec(i: int, na_left: float, na_right: float) -> LabelRecord:
    lh, rh = (60.0, 50.0), (10.0, 50.0)
    a, b = math.radians(na_left), math.radians(na_right)
    kp = anatomy.HipKeypoints(
        lh,
        rh,
        (lh[0] - 12 * math.cos(a), lh[1] - 12 * math.sin(a)),
        (rh[0] + 12 * math.cos(b), rh[1] - 12 * math.sin(b)),
        11.0,
        11.0,
    )
    return LabelRecord.from_keypoints(f"img_{i:04d}.png", kp)


def population(n: int, seed: int = 0) -> list[LabelRecord]:
    rng = np.random.default_rng(seed)
    return [rec(i, *rng.uniform(80, 125, 2)) for i in range(n)]


def test_published_set_gets_exactly_219_31_84() -> None:
    recs = population(334)
    s = split_records(recs, seed=7)
    assert s.counts == {"train": 219, "val": 31, "test": 84}
    assert sorted(s.indices("train") + s.indices("val") + s.indices("test")) == list(range(334))


def test_deterministic_order_independent_and_seed_dependent() -> None:
    recs = population(100)
    a = split_records(recs, seed=1)
    assert a == split_records(recs, seed=1)
    perm = np.random.default_rng(0).permutation(100)
    b = split_records([recs[i] for i in perm], seed=1)
    assert [b.assignment[j] for j in np.argsort(perm)] == list(a.assignment)
    assert a != split_records(recs, seed=2)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 120),
    seed=st.integers(0, 2**32),
    data_seed=st.integers(0, 1000),
    ratio=st.sampled_from([PUBLISHED_RATIO, (8, 1, 1), (1, 1, 1), (1, 0, 1), (3, 1, 0)]),
    bins=st.sampled_from([None, (90.0, 100.0, 110.0)]),
)
def test_exact_totals_and_strata_within_one(
    n: int, seed: int, data_seed: int, ratio: tuple[int, ...], bins: tuple[float, ...] | None
) -> None:
    recs = population(n, data_seed)
    s = split_records(recs, ratio=ratio, seed=seed, na_bins=bins)
    totals = s.counts
    assert sum(totals.values()) == n
    nonzero = [k for k, r in zip(SPLITS, ratio, strict=True) if r > 0]
    assert all(totals[k] == 0 for k in SPLITS if k not in nonzero)
    if n >= len(nonzero):
        assert all(totals[k] >= 1 for k in nonzero)
    groups = Counter(stratum(r, bins) for r in recs)
    cells = Counter((stratum(r, bins), a) for r, a in zip(recs, s.assignment, strict=True))
    for g, size in groups.items():
        for k in SPLITS:
            assert abs(cells[(g, k)] - size * totals[k] / n) < 1.0 + 1e-9


def test_stratified_by_class() -> None:
    recs = [rec(i, 95.0, 110.0) for i in range(100)] + [rec(100 + i, 112.0, 110.0) for i in range(234)]
    s = split_records(recs, seed=0)
    small = Counter(a for r, a in zip(recs, s.assignment, strict=True) if r.class_left == "small")
    assert small == {"train": 66, "val": 9, "test": 25}  # 100 × 219/334 = 65.6, 9.3, 25.1


def test_tiny_sets() -> None:
    assert split_records([]).counts == {"train": 0, "val": 0, "test": 0}
    assert split_records(population(1)).counts == {"train": 1, "val": 0, "test": 0}
    assert split_records(population(2)).counts == {"train": 1, "val": 0, "test": 1}
    assert split_records(population(3)).counts == {"train": 1, "val": 1, "test": 1}
    assert apportion(10, (1, 1, 1)) == [4, 3, 3]
    with pytest.raises(ValueError, match="3 parts"):
        split_records(population(3), ratio=(1, 1))
    with pytest.raises(ValueError):
        apportion(3, (0, 0, 0))


# --- manifest ---------------------------------------------------------------------------------------
def _dataset(root: Path) -> list[LabelRecord]:
    recs = population(4)
    s = split_records(recs, ratio=(2, 1, 1), seed=0)
    with open_writer(
        "imagefolder", root, provenance={"generator": "phantom", "seed": 5}, preprocessing={"steps": []}
    ) as w:
        for r, split in zip(recs, s.assignment, strict=True):
            w.add(r, np.full((8, 8), 0.5, np.float32), split=split)
    return recs


def test_manifest_lists_every_file_with_hash_split_and_record(tmp_path: Path) -> None:
    recs = _dataset(tmp_path)
    raw = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert raw["format"] == "imagefolder" and raw["hipgen_version"] and raw["created_at"]
    assert raw["provenance"] == {"generator": "phantom", "seed": 5} and raw["preprocessing"] == {"steps": []}
    assert raw["split_counts"] == {"test": 1, "train": 2, "val": 1}
    m = read_manifest(tmp_path)
    assert [e.path for e in m.files] == [r.file_name for r in recs] + ["metadata.csv"]
    assert [e.record for e in m.files[:4]] == recs and m.files[4].record is None
    assert all(e.bytes == (tmp_path / e.path).stat().st_size for e in m.files)
    assert verify_manifest(tmp_path).ok and verify_manifest(tmp_path).checked == 5


def test_verify_reports_changed_missing_and_escaping_files(tmp_path: Path) -> None:
    _dataset(tmp_path)
    (tmp_path / "img_0000.png").unlink()
    data = bytearray((tmp_path / "img_0001.png").read_bytes())
    data[-20] ^= 0xFF
    (tmp_path / "img_0001.png").write_bytes(bytes(data))
    (tmp_path / "img_0002.png").write_bytes(b"x")
    raw = json.loads((tmp_path / MANIFEST_NAME).read_text())
    raw["files"][3]["path"] = "../outside.png"
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(raw))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "extra.png").write_bytes(b"x")
    problems = dict(verify_manifest(tmp_path).problems)
    assert problems["img_0000.png"] == "missing"
    assert "sha256" in problems["img_0001.png"] and "size 1 bytes" in problems["img_0002.png"]
    assert "relative path" in problems["../outside.png"]
    assert problems["img_0003.png"] == problems["sub/extra.png"] == "not in the manifest"
    assert len(problems) == 6


def test_bad_manifest_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no manifest"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(CorruptFileError, match=MANIFEST_NAME):
        verify_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"schema": "hipgen.manifest/1", "format": "x"}))
    with pytest.raises(CorruptFileError, match="does not parse"):
        read_manifest(tmp_path)
