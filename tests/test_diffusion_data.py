"""Pelvis views for the generators: upright, heads where the frame puts them, labels following the
pixels (angles unchanged), intensities in [-1, 1], condition order [left, right]."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from hipgen.angle.geometry import PELVIS_SPAN, pelvis_frame  # noqa: E402
from training.angle.data import render_set  # noqa: E402
from training.diffusion.data import pelvis_views  # noqa: E402


def test_pelvis_views_keep_the_angles_and_put_the_heads_in_place() -> None:
    hips = render_set(6, 21, sizes=(384, 512), workers=1, progress=False)  # some stored turned by 90°
    assert any(abs(p[1][1] - p[0][1]) > abs(p[1][0] - p[0][0]) for p in hips.points)  # a turned one
    dset, views = pelvis_views(hips, size=64)
    assert dset.images.shape == (6, 1, 64, 64) and dset.images.dtype == np.float32
    assert dset.images.min() >= -1.0 and dset.images.max() <= 1.0
    np.testing.assert_allclose(views.angles(), hips.angles(), atol=1e-6)  # rotation + scale only
    np.testing.assert_allclose(dset.na, hips.angles()[:, ::-1])  # [left, right]
    half = 64 / (2 * PELVIS_SPAN)
    for p in views.points:
        np.testing.assert_allclose(p[0], [31.5 - half, 31.5], atol=1e-6)  # patient's right on image left
        np.testing.assert_allclose(p[1], [31.5 + half, 31.5], atol=1e-6)
        assert p[2][1] < 31.5 and p[3][1] < 31.5  # rims cranial of the head line, in every view
    assert all(r > 0 for r in views.radii.ravel())


def test_pelvis_frame_refuses_coincident_heads() -> None:
    with pytest.raises(ValueError, match="pelvis frame undefined"):
        pelvis_frame((5.0, 5.0), (5.0, 5.0), size=64)
