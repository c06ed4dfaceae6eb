"""Norberg-angle geometry, published layout, grading and Big/Small."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hipgen import anatomy
from hipgen.anatomy import HipKeypoints, norberg_angle
from hipgen.data.record import LabelRecord


@pytest.mark.parametrize(
    ("rim", "expected"),
    [
        ((0.0, -5.0), 90.0),
        ((-5.0, -5.0), 45.0),
        ((5.0, -5.0), 135.0),
        ((-3.0, 0.0), 0.0),
        ((3.0, 0.0), 180.0),
    ],
)
def test_hand_built_angles_are_exact(rim, expected):
    # head at the origin, other head to its left (-x): the angle opens towards the rim
    assert norberg_angle((0.0, 0.0), (-10.0, 0.0), rim) == pytest.approx(expected, abs=1e-12)


def test_known_triangle():
    # 30-60-90 triangle: rim at 60 degrees from the head-head line
    rim = (-math.cos(math.radians(60)) * 4, -math.sin(math.radians(60)) * 4)
    assert norberg_angle((0.0, 0.0), (-7.0, 0.0), rim) == pytest.approx(60.0, abs=1e-12)


def test_degenerate_angle_raises():
    with pytest.raises(ValueError, match="undefined"):
        norberg_angle((1.0, 1.0), (1.0, 1.0), (2.0, 0.0))


coord = st.floats(-500, 500, allow_nan=False)


@st.composite
def keypoints(draw):
    """Plausible hips: heads 50-400 px apart, rims at 0.9-1.5 head radii at 60-140 degrees."""
    cx, cy, d = draw(coord), draw(coord), draw(st.floats(50, 400))
    theta = draw(st.floats(-math.pi, math.pi))
    ex = np.array([math.cos(theta), math.sin(theta)])
    up = np.array([math.sin(theta), -math.cos(theta)])
    c = np.array([cx, cy])
    lh, rh = c + d / 2 * ex, c - d / 2 * ex
    out = {}
    for side, h, m in (("left", lh, -ex), ("right", rh, ex)):
        na = math.radians(draw(st.floats(60, 140)))
        r = d * draw(st.floats(0.08, 0.14))
        rim = h + r * draw(st.floats(0.9, 1.5)) * (math.cos(na) * m + math.sin(na) * up)
        out[f"{side}_head"], out[f"{side}_rim"], out[f"{side}_radius"] = tuple(h), tuple(rim), r
    return HipKeypoints(**out)


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


@settings(max_examples=200, deadline=None)
@given(keypoints(), st.floats(-math.pi, math.pi), st.floats(0.05, 20), coord, coord)
def test_invariant_to_rotation_translation_scale(kp, angle, scale, tx, ty):
    moved = kp.transformed(_similarity(angle, scale, tx, ty))
    assert moved.na_left == pytest.approx(kp.na_left, abs=1e-7)
    assert moved.na_right == pytest.approx(kp.na_right, abs=1e-7)
    assert moved.left_radius == pytest.approx(kp.left_radius * scale, rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(keypoints(), st.integers(64, 4096))
def test_mirror_swaps_left_and_right(kp, width):
    m = kp.mirrored(width)
    # each hip keeps its angle; only its place in the image changes sides
    assert m.na_left == pytest.approx(kp.na_left, abs=1e-7)
    assert m.na_right == pytest.approx(kp.na_right, abs=1e-7)
    assert m.left_head[0] == pytest.approx(width - 1 - kp.left_head[0])
    # read by image position (what a model that ignores markers does), left and right swap
    by_position = HipKeypoints(
        m.right_head, m.left_head, m.right_rim, m.left_rim, m.right_radius, m.left_radius
    )
    assert by_position.na_left == pytest.approx(kp.na_right, abs=1e-7)
    assert by_position.na_right == pytest.approx(kp.na_left, abs=1e-7)


@settings(max_examples=100, deadline=None)
@given(keypoints())
def test_published_layout_round_trip(kp):
    four, angles = anatomy.to_published(kp)
    assert four.shape == (5, 2) and angles.shape == (1, 2)
    assert angles[0, 0] == kp.na_right and angles[0, 1] == kp.na_left  # [right, left]
    assert anatomy.from_published(four) == kp
    assert anatomy.from_published(four.T) == kp  # MATLAB may store it transposed


def test_published_layout_rejects_bad_shapes():
    with pytest.raises(ValueError, match="5x2"):
        anatomy.from_published(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        anatomy.from_published(np.full((5, 2), np.nan))


def test_big_small_threshold_and_worst_side():
    assert anatomy.hip_class(105.0) == "big"
    assert anatomy.hip_class(104.99) == "small"
    assert anatomy.hip_class(100.0, threshold=100.0) == "big"
    assert anatomy.worst_side(98.0, 110.0) == "left"
    assert anatomy.worst_side(111.0, 97.0) == "right"
    assert anatomy.image_class(110.0, 104.0) == "small"
    assert anatomy.image_class(110.0, 106.0) == "big"
    with pytest.raises(ValueError):
        anatomy.hip_class(float("nan"))


@pytest.mark.parametrize(
    ("na", "fci", "bva"),
    [
        (130.0, "A", "0"),
        (105.0, "A", "0"),
        (104.0, "B", "1"),
        (100.0, "C", "1"),
        (96.0, "C", "2"),
        (93.0, "D", "3"),
        (89.9, "E", "4"),
        (82.0, "E", "5"),
        (70.0, "E", "6"),
    ],
)
def test_grading_tables(na, fci, bva):
    assert anatomy.grade(na, "fci") == fci
    assert anatomy.grade(na, "bva") == bva


def test_grading_tables_cover_the_line_without_gaps():
    for scheme in anatomy.GRADING_SCHEMES.values():
        bands = sorted(scheme.bands, key=lambda b: b.na_min)
        assert bands[0].na_min == -math.inf and bands[-1].na_max == math.inf
        for a, b in zip(bands, bands[1:], strict=False):
            assert a.na_max == b.na_min, f"{scheme.name}: gap or overlap at {a.na_max}"
        assert scheme.source
    with pytest.raises(ValueError, match="unknown grading scheme"):
        anatomy.grade(100.0, "ofa")


@settings(max_examples=100, deadline=None)
@given(keypoints())
def test_label_record_round_trips_through_text(kp):
    rec = LabelRecord.from_keypoints("a.png", kp, synthetic=True, generator="phantom", seed=3)
    assert LabelRecord.from_mapping(rec.to_row()) == rec
    assert LabelRecord.from_mapping(rec.to_dict()) == rec
    assert rec.keypoints() == kp
    assert rec.class_left == anatomy.hip_class(kp.na_left)
