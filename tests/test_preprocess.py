"""hipgen.data.preprocess: keypoints follow the pixels through every geometric step, similarity
transforms keep the angles, intensity steps keep the geometry, and the description rebuilds the pipeline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hipgen import anatomy
from hipgen.data.preprocess import Clahe, Normalize, Preprocessing, Resize, ToSquare
from hipgen.data.record import LabelRecord
from hipgen.errors import LabelError

POINTS = ("left_head", "right_head", "left_rim", "right_rim")


def record(w: int, h: int, na: tuple[float, float] = (110.0, 96.0)) -> LabelRecord:
    """Hips centred in a w×h image, heads w/3 apart, rims at 1.1× radius."""
    cx, cy, sep = (w - 1) / 2, (h - 1) / 2 + 4, w / 3
    r = 0.22 * sep
    a, b = (math.radians(v) for v in na)
    lh, rh = (cx + sep / 2, cy), (cx - sep / 2, cy)
    kp = anatomy.HipKeypoints(
        lh,
        rh,
        (lh[0] - 1.1 * r * math.cos(a), lh[1] - 1.1 * r * math.sin(a)),
        (rh[0] + 1.1 * r * math.cos(b), rh[1] - 1.1 * r * math.sin(b)),
        r,
        r,
    )
    return LabelRecord.from_keypoints("x.png", kp, synthetic=True, generator="g", seed=3)


def dot(h: int, w: int, p: tuple[float, float], sigma: float = 1.5) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def centroid(a: np.ndarray) -> tuple[float, float]:
    a = np.clip(a - 0.05 * a.max(), 0, None).astype(np.float64)  # ignore interpolation ripple
    yy, xx = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    return float((xx * a).sum() / a.sum()), float((yy * a).sum() / a.sum())


PIPELINES = {
    "crop+down": Preprocessing([ToSquare("crop"), Resize(32)]),
    "pad+up": Preprocessing([ToSquare("pad"), Resize(128)]),
    "pad+pow2": Preprocessing([ToSquare("pad"), Resize()]),
    "stretch": Preprocessing([Resize(48)]),
    "standard": Preprocessing.standard(square="crop", size=40, clahe=False, normalize="minmax"),
}


@pytest.mark.parametrize("name", PIPELINES)
@pytest.mark.parametrize("shape", [(60, 80), (70, 52)])
def test_keypoints_follow_the_pixels(name: str, shape: tuple[int, int]) -> None:
    h, w = shape
    rec = record(w, h)
    pipe = PIPELINES[name]
    for point in POINTS:
        p = getattr(rec.keypoints(), point)
        out, moved = pipe(dot(h, w, p), rec)
        assert moved is not None
        found, want = centroid(out), getattr(moved.keypoints(), point)
        assert math.dist(found, want) < 0.3, (point, found, want)


@pytest.mark.parametrize("name", ["crop+down", "pad+up", "pad+pow2", "standard"])
def test_similarity_transforms_keep_angles_and_scale_radii(name: str) -> None:
    rec = record(80, 60)
    out, moved = PIPELINES[name](np.zeros((60, 80), np.float32), rec)
    assert moved is not None and out.shape[0] == out.shape[1]
    assert moved.na_left == pytest.approx(rec.na_left, abs=1e-9)
    assert moved.na_right == pytest.approx(rec.na_right, abs=1e-9)
    scale = math.dist(moved.keypoints().left_head, moved.keypoints().right_head) / math.dist(
        rec.keypoints().left_head, rec.keypoints().right_head
    )
    assert moved.left_radius == pytest.approx(rec.left_radius * scale)
    assert (moved.text, moved.synthetic, moved.generator, moved.seed) == (rec.text, True, "g", 3)


def test_stretch_changes_angles_and_the_record_is_remeasured() -> None:
    rec = record(80, 60)
    _, moved = Resize(64)(np.zeros((60, 80), np.float32), rec)
    assert moved is not None and moved.na_left != pytest.approx(rec.na_left, abs=0.1)
    assert moved.na_left == pytest.approx(moved.keypoints().na_left)


def test_crop_that_cuts_off_a_hip_is_an_error() -> None:
    rec = record(200, 40)
    with pytest.raises(LabelError, match="x.png: .* falls outside the 40x40 image"):
        ToSquare("crop")(np.zeros((40, 200), np.float32), rec)


def test_without_a_record_only_pixels_change() -> None:
    out, rec = Preprocessing.standard(size=16)(np.random.default_rng(0).random((20, 30)))
    assert rec is None and out.shape == (16, 16) and out.dtype == np.float32


def test_resize_power_of_two_and_interpolation() -> None:
    assert Resize().target(300, 1000) == 512 and Resize().target(64, 64) == 64
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)
    down, _ = Resize(32)(checker)
    assert np.allclose(down, 0.5)  # INTER_AREA averages; linear would alias
    up, _ = Resize(8)(np.eye(4, dtype=np.float32))
    assert up.shape == (8, 8) and ((up > 0) & (up < 1)).any()  # bilinear blends; nearest would not


def test_clahe_on_16_bit_keeps_geometry_and_precision() -> None:
    rng = np.random.default_rng(1)
    img = np.clip(0.4 + 0.002 * rng.standard_normal((64, 64)), 0, 1).astype(np.float32)  # low contrast
    rec = record(64, 64)
    out, same = Clahe(clip_limit=2.0, tile_grid=(4, 4))(img, rec)
    assert same is rec and out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 and out.std() > img.std()
    assert len(np.unique(out)) > 256  # more levels than an 8-bit CLAHE could give
    np.testing.assert_array_equal(out, Clahe(clip_limit=2.0, tile_grid=(4, 4))(img)[0])


def test_normalize_methods() -> None:
    a = np.linspace(0.2, 0.6, 101, dtype=np.float32).reshape(1, 101)
    mm, _ = Normalize("minmax")(a)
    assert mm.min() == 0 and mm.max() == pytest.approx(1)
    pc, _ = Normalize("percentile", lower=10, upper=90)(a)
    assert pc.min() == 0 and pc.max() == 1 and (pc == 0).sum() == 11
    z, _ = Normalize("zscore")(a)
    assert z.mean() == pytest.approx(0, abs=1e-6) and z.std() == pytest.approx(1, abs=1e-5)
    flat = np.full((4, 4), 0.3, np.float32)
    assert all(not Normalize(m)(flat)[0].any() for m in ("minmax", "percentile", "zscore"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        Normalize("l2")  # type: ignore[arg-type]


def test_description_is_json_and_rebuilds_the_pipeline() -> None:
    pipe = Preprocessing(
        [ToSquare("pad", 0.1), Resize(32), Clahe(3.0, (2, 4)), Normalize("percentile", 2, 98)]
    )
    desc = json.loads(json.dumps(pipe.describe()))
    assert [s["step"] for s in desc["steps"]] == ["ToSquare", "Resize", "Clahe", "Normalize"]
    again = Preprocessing.from_description(desc)
    assert again.steps == pipe.steps
    img = np.random.default_rng(2).random((30, 40)).astype(np.float32)
    np.testing.assert_array_equal(again(img)[0], pipe(img)[0])
    with pytest.raises(ValueError, match="unknown preprocessing step"):
        Preprocessing.from_description({"steps": [{"step": "Rotate"}]})
