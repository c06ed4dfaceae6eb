"""Hip-frame and letterbox geometry (pure numpy) and the keypoint-aware augmentation built on it."""

from __future__ import annotations

import numpy as np
import pytest

from hipgen.anatomy import norberg_angle
from hipgen.angle.geometry import (
    affine_scale,
    apply_affine,
    hip_frame,
    invert_affine,
    letterbox,
    letterbox_matrix,
    warp,
)
from hipgen.phantom.render import render_phantom
from hipgen.phantom.spec import PhantomSpec


def test_hip_frame_puts_head_at_centre_and_other_head_on_x() -> None:
    head, other = (100.0, 200.0), (400.0, 260.0)
    for side in ("right", "left"):
        m = hip_frame(head, other, side, size=128, span=0.6)
        c = apply_affine(m, np.array(head))
        o = apply_affine(m, np.array(other))
        assert c == pytest.approx([63.5, 63.5])
        assert o[1] == pytest.approx(63.5)  # the other head lies on the frame's x axis
        assert o[0] - 63.5 == pytest.approx(128 / 0.6)  # at one inter-head distance
        assert np.sign(np.linalg.det(m[:, :2])) == (1 if side == "right" else -1)


@pytest.mark.parametrize("turn", [0.0, 90.0, 180.0, 33.0])
def test_hip_frames_of_both_sides_agree_whatever_the_rotation(turn: float) -> None:
    """An upright pelvis: the right hip's rim is cranio-lateral. Rotate the whole study: each frame still
    shows it cranio-lateral (x < centre, y < centre), for both sides, and the NA is unchanged."""
    a = np.radians(turn)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    rh, lh = rot @ [100.0, 100.0], rot @ [300.0, 100.0]
    rr, lr = rot @ [88.0, 80.0], rot @ [312.0, 80.0]  # cranial (up) and lateral of each head
    for side, head, other, rim in (("right", rh, lh, rr), ("left", lh, rh, lr)):
        m = hip_frame(tuple(head), tuple(other), side)
        h, o, r = (apply_affine(m, p) for p in (head, other, rim))
        assert r[0] < h[0] and r[1] < h[1]
        assert norberg_angle(h, o, r) == pytest.approx(norberg_angle(head, other, rim), abs=1e-9)


def test_hip_frame_rejects_coincident_heads() -> None:
    with pytest.raises(ValueError, match="coincide"):
        hip_frame((1.0, 1.0), (1.0, 1.0), "right")


def test_letterbox_maps_corners_and_centres() -> None:
    m = letterbox_matrix(400, 200, 100)  # portrait: height fills, width centred
    assert affine_scale(m) == pytest.approx(0.25)
    centre = apply_affine(m, np.array([99.5, 199.5]))
    assert centre == pytest.approx([49.5, 49.5])
    back = apply_affine(invert_affine(m), apply_affine(m, np.array([[10.0, 20.0], [150.0, 390.0]])))
    assert np.allclose(back, [[10.0, 20.0], [150.0, 390.0]])
    img, m2 = letterbox(np.random.default_rng(0).random((400, 200)).astype(np.float32), 100)
    assert img.shape == (100, 100) and img.dtype == np.float32 and 0 <= img.min() <= img.max() <= 1
    assert np.allclose(m2, m)


def test_warp_antialiases_large_shrinks() -> None:
    """A 1-px checkerboard shrunk 8× must come out mid-grey, not aliased stripes."""
    board = (np.indices((800, 800)).sum(0) % 2).astype(np.float32)
    out = warp(board, letterbox_matrix(800, 800, 100), 100)
    assert abs(out[10:90, 10:90].mean() - 0.5) < 0.02 and out[10:90, 10:90].std() < 0.05


def test_letterboxed_phantom_keypoints_stay_on_their_heads() -> None:
    s = render_phantom(PhantomSpec(width=600, height=800, na_left=95.0, na_right=115.0), seed=3)
    img, m = letterbox(s.pixels, 192)
    for head, r in (
        (s.keypoints.left_head, s.keypoints.left_radius),
        (s.keypoints.right_head, s.keypoints.right_radius),
    ):
        x, y = apply_affine(m, np.array(head))
        rr = r * affine_scale(m)
        yy, xx = np.mgrid[:192, :192]
        inside = (xx - x) ** 2 + (yy - y) ** 2 < (0.6 * rr) ** 2
        ring = ((xx - x) ** 2 + (yy - y) ** 2 > (1.6 * rr) ** 2) & (
            (xx - x) ** 2 + (yy - y) ** 2 < (2.2 * rr) ** 2
        )
        assert img[inside].mean() > img[ring].mean()  # the bright head sits where the label says
