"""Training images for the generators: labelled radiographs (rendered phantoms or a user's labelled
folder) cut to square *pelvis views* (:func:`hipgen.angle.geometry.pelvis_frame`) at the generator's
size, intensities to [-1, 1], and the two angles as the condition."""

from __future__ import annotations

import numpy as np

from hipgen.angle.geometry import PELVIS_SPAN
from hipgen.data.views import pelvis_view
from training.angle.data import SMALL_SIZES, HipSet, labelled_set
from training.diffusion.train import DiffusionSet


def pelvis_views(data: HipSet, size: int = 128, span: float = PELVIS_SPAN) -> tuple[DiffusionSet, HipSet]:
    """The generator's training set, and the same views as a labelled :class:`HipSet` (points follow the
    pixels) — what an angle model should measure on them."""
    images, kps = [], []
    for i in range(len(data)):
        view, kp = pelvis_view(data.image(i), data.keypoints(i), size=size, span=span)
        images.append(view)
        kps.append(kp)
    views = HipSet.from_keypoints(images, kps, list(data.names))
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
