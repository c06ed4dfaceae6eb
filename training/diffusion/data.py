"""Training images for the generators: labelled radiographs (rendered phantoms or a user's labelled
folder) cut to square *pelvis views* (:func:`hipgen.angle.geometry.pelvis_frame`) at the generator's
size, intensities to [-1, 1], and the two angles as the condition."""

from __future__ import annotations

import numpy as np

from hipgen.angle.geometry import PELVIS_SPAN, apply_affine, normalize_intensity, pelvis_frame, warp
from training.angle.data import SMALL_SIZES, HipSet, labelled_set
from training.diffusion.train import DiffusionSet


def pelvis_views(data: HipSet, size: int = 128, span: float = PELVIS_SPAN) -> tuple[DiffusionSet, HipSet]:
    """The generator's training set, and the same views as a labelled :class:`HipSet` (points follow the
    pixels) — what an angle model should measure on them."""
    images, points, radii = [], [], []
    for i in range(len(data)):
        p = data.points[i]
        m = pelvis_frame(tuple(p[0]), tuple(p[1]), size=size, span=span)
        view = normalize_intensity(warp(data.image(i), m, size))
        images.append(view)
        points.append(apply_affine(m, p))
        radii.append(data.radii[i] * size / (span * float(np.linalg.norm(p[1] - p[0]))))
    views = HipSet(images, np.array(points), np.array(radii), list(data.names))
    stacked = np.stack(images)[:, None].astype(np.float32) * 2.0 - 1.0
    return DiffusionSet(stacked, views.angles()[:, ::-1].copy()), views  # condition order [left, right]


def training_views(
    count: int,
    seed: int,
    *,
    size: int = 128,
    data: str | None = None,
    workers: int = 2,
    progress: bool = True,
) -> tuple[DiffusionSet, HipSet]:
    """Pelvis views of ``count`` fresh phantoms (uniform NA 70–130°, rendered 384–640 px wide: enough
    for a 128² view and several × faster than the angle model's sizes), or of a labelled folder."""
    hips = labelled_set(count, seed, data=data, sizes=SMALL_SIZES, workers=workers, progress=progress)
    return pelvis_views(hips, size)


__all__ = ["pelvis_views", "training_views"]
