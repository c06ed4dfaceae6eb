"""Pelvis views: the square frame the generators draw (both hips, acetabula and proximal femurs; side =
``PELVIS_SPAN`` × the inter-head distance, centred between the heads, upright), cut from a whole study.
Synthetic pelvis views compare with real radiographs only when the real ones are framed the same way,
so scoring real studies against generated views starts here; the generator's training set is cut by the
same function."""

from __future__ import annotations

import numpy as np

from hipgen.anatomy import HipKeypoints
from hipgen.angle.geometry import PELVIS_SPAN, normalize_intensity, pelvis_frame, warp

DEFAULT_VIEW_SIZE = 128


def pelvis_view(
    pixels: np.ndarray, keypoints: HipKeypoints, *, size: int = DEFAULT_VIEW_SIZE, span: float = PELVIS_SPAN
) -> tuple[np.ndarray, HipKeypoints]:
    """The (size, size) view in [0, 1] (intensity windowed as the generators' training views are) and
    the keypoints in the view's pixels."""
    m = pelvis_frame(keypoints.right_head, keypoints.left_head, size=size, span=span)
    view = normalize_intensity(warp(np.asarray(pixels, np.float32), m, size))
    return view, keypoints.transformed(m)


__all__ = ["DEFAULT_VIEW_SIZE", "pelvis_view"]
