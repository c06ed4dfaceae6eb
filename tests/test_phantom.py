"""The phantom renderer: exact labels, determinism, orientation, proportions of real radiographs."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from hipgen.phantom import PhantomSpec, render_phantom, sample_spec
from hipgen.phantom.spec import DISTRIBUTIONS

SMALL = dict(width=192, height=192, burned_text=0)


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
def test_measured_na_equals_requested(distribution):
    rng = np.random.default_rng(11)
    for i in range(12):
        spec = sample_spec(distribution, rng, image_size=160)
        s = render_phantom(spec, seed=i)
        assert s.pixels.shape == (spec.height, spec.width)
        assert abs(s.keypoints.na_left - spec.na_left) < 0.01
        assert abs(s.keypoints.na_right - spec.na_right) < 0.01
        rec = s.record(f"{i}.png")
        assert abs(rec.na_left - spec.na_left) < 0.01 and rec.synthetic is True and rec.seed == i


@pytest.mark.parametrize("na", [70.0, 85.0, 105.0, 130.0])
def test_extreme_angles_hold_and_classes_follow(na):
    s = render_phantom(PhantomSpec(na_left=na, na_right=200.0 - na, **SMALL), seed=0)
    assert s.keypoints.na_left == pytest.approx(na, abs=1e-6)
    assert s.keypoints.na_right == pytest.approx(200.0 - na, abs=1e-6)
    rec = s.record()
    assert rec.class_left == ("big" if na >= 105 else "small")


def test_deterministic_for_spec_and_seed():
    spec = PhantomSpec(na_left=93.0, na_right=117.0, width=160, height=200, bowel_gas=0.8, overlay=True)
    a, b = render_phantom(spec, seed=5), render_phantom(spec, seed=5)
    assert np.array_equal(a.pixels, b.pixels) and a.keypoints == b.keypoints
    c = render_phantom(spec, seed=6)
    assert not np.array_equal(a.pixels, c.pixels)
    assert c.keypoints == a.keypoints  # the seed changes detail, never the label


def test_pixels_are_unit_float_and_integer_views_match():
    s = render_phantom(PhantomSpec(**SMALL), seed=1)
    assert s.pixels.dtype == np.float32 and s.pixels.min() >= 0.0 and s.pixels.max() <= 1.0
    assert s.pixels16.dtype == np.uint16 and s.pixels8.dtype == np.uint8
    assert np.abs(s.pixels16 / 65535.0 - s.pixels).max() <= 0.5 / 65535 + 1e-7


def test_left_angle_changes_only_the_left_hip():
    """The rim the label names is the rim that is drawn: changing the left NA changes pixels round the
    left head only."""
    base = PhantomSpec(
        na_left=85.0,
        na_right=105.0,
        width=256,
        height=256,
        inter_head_fraction=0.45,
        marker="",
        burned_text=0,
    )
    a = render_phantom(base, seed=2)
    b = render_phantom(replace(base, na_left=125.0), seed=2)
    diff = np.abs(a.pixels - b.pixels)
    ys, xs = np.nonzero(diff > 0.02)
    assert xs.size > 50
    lh, r = a.keypoints.left_head, a.keypoints.left_radius
    dist = np.hypot(xs - lh[0], ys - lh[1])
    assert np.percentile(dist, 95) < 2.5 * r
    rh = a.keypoints.right_head
    assert np.hypot(xs - rh[0], ys - rh[1]).min() > 2 * r


def test_bone_is_brighter_at_heads_than_in_soft_tissue():
    s = render_phantom(
        PhantomSpec(width=256, height=256, inter_head_fraction=0.45, marker="", burned_text=0), 3
    )
    mid = np.add(s.keypoints.left_head, s.keypoints.right_head) / 2
    for head in (s.keypoints.left_head, s.keypoints.right_head):
        x, y = np.round(head).astype(int)
        sx, sy = np.round(mid + 0.4 * (np.asarray(head) - mid)).astype(int)  # soft tissue of the pelvic inlet
        head_val = s.pixels[y - 2 : y + 3, x - 2 : x + 3].mean()
        soft_val = s.pixels[sy - 2 : sy + 3, sx - 2 : sx + 3].mean()
        assert head_val > soft_val + 0.05


@pytest.mark.parametrize("orientation", [90, 180, 270])
def test_orientation_rotates_pixels_and_keypoints_together(orientation):
    up = PhantomSpec(width=160, height=224, burned_text=0)
    turned = replace(
        up,
        orientation=orientation,
        width=up.height if orientation != 180 else up.width,
        height=up.width if orientation != 180 else up.height,
    )
    a, b = render_phantom(up, seed=4), render_phantom(turned, seed=4)
    k = orientation // 90
    assert np.array_equal(np.rot90(a.pixels, -k), b.pixels)
    # a bright dot at a keypoint moves where the transformed keypoint says
    H, W = a.pixels.shape
    probe = np.zeros((H, W))
    x, y = a.keypoints.left_rim
    probe[int(round(y)), int(round(x))] = 1.0
    yy, xx = np.unravel_index(np.argmax(np.rot90(probe, -k)), b.pixels.shape)
    assert math.hypot(xx - b.keypoints.left_rim[0], yy - b.keypoints.left_rim[1]) < 1.0
    assert b.keypoints.na_left == pytest.approx(a.keypoints.na_left, abs=1e-9)


def test_mirror_keeps_patient_sides():
    up = PhantomSpec(width=160, height=160, burned_text=0, marker="L")
    a, b = render_phantom(up, seed=4), render_phantom(replace(up, mirror=True), seed=4)
    assert np.array_equal(a.pixels[:, ::-1], b.pixels)
    assert a.keypoints.left_head[0] > a.keypoints.right_head[0]  # radiological convention
    assert b.keypoints.left_head[0] < b.keypoints.right_head[0]  # flipped study
    assert b.keypoints.na_left == pytest.approx(up.na_left)


def test_population_proportions_match_real_radiographs():
    """vd-hip-anatomy.md: r ≈ 0.11 × inter-head distance, rim ≈ 1.11 r, inter-head ≈ 0.33 × width,
    NA mean ≈ 103° sd ≈ 12°."""
    rng = np.random.default_rng(0)
    specs = [sample_spec("population", rng) for _ in range(600)]
    kps = [
        render_phantom(replace(s, width=96, height=96, orientation=0, mirror=False), 0).keypoints
        for s in specs[:60]
    ]
    d = np.array([math.dist(k.left_head, k.right_head) for k in kps])
    r = np.array([k.left_radius for k in kps])
    rim = np.array([math.dist(k.left_head, k.left_rim) for k in kps])
    assert np.mean(r / d) == pytest.approx(0.11, abs=0.006)
    assert np.mean(rim / r) == pytest.approx(1.11, abs=0.03)
    assert np.mean(d / 96) == pytest.approx(0.33, abs=0.03)
    na = np.array([[s.na_left, s.na_right] for s in specs])
    assert na.mean() == pytest.approx(103, abs=2.0) and na.std() == pytest.approx(12, abs=2.5)
    assert na.min() >= 70 and na.max() <= 130
    gaps = np.abs(na[:, 0] - na[:, 1])
    assert 0.25 < np.mean((gaps >= 5) & (gaps <= 15)) < 0.75  # left–right differences of 5–15° common
    assert any(s.orientation in (90, 270) for s in specs) and any(s.mirror for s in specs)


def test_whole_pelvis_and_large_images():
    s = render_phantom(
        PhantomSpec(
            width=2048, height=2560, burned_text=2, collimation=(0.05, 0.0, 0.08, 0.0), grid_lines=0.04
        ),
        seed=9,
    )
    assert s.pixels.shape == (2560, 2048)
    assert s.pixels[:50, :].mean() > 0.9  # collimated border renders white
    assert abs(s.keypoints.na_left - 105.0) < 0.01


def test_spec_validation_and_round_trip():
    spec = sample_spec("uniform", np.random.default_rng(3))
    assert PhantomSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="na_left"):
        PhantomSpec(na_left=20.0)
    with pytest.raises(ValueError, match="orientation"):
        PhantomSpec(orientation=45)
    with pytest.raises(ValueError, match="unknown PhantomSpec fields"):
        PhantomSpec.from_dict({"colour": 1})
    with pytest.raises(ValueError, match="unknown distribution"):
        sample_spec("gaussian", np.random.default_rng(0))
    s = sample_spec("uniform", np.random.default_rng(1), na_range=(80, 90))
    assert 80 <= s.na_left <= 90 and 80 <= s.na_right <= 90
