"""Labelled hip sets in memory: freshly rendered phantoms (training, held-out and *shifted* test sets)
or a user's own labelled folder in any supported format.

Sides follow the radiological convention the models learn (image left is the patient's right in an
upright view). A phantom stored mirrored says so only with its lead marker, which the models do not
read, so rendered sets are drawn unmirrored; a user's mirrored study must be flipped back first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hipgen.anatomy import HipKeypoints
from hipgen.angle.geometry import affine_scale, apply_affine, shrink
from hipgen.data.datasets import iter_dataset
from hipgen.phantom.render import render_phantom
from hipgen.phantom.spec import PhantomSpec, image_seed, labels_visible, spec_for_seed

# Upright widths of renders. Real studies are 1.6k–4.3k px, so crops are always *down*sampled from them;
# training and the in-distribution test set span 640–1536 px (several effective resolutions, rendering
# cost bounded), low-resolution exports get their own test set, and the shifted set goes beyond both.
TRAIN_SIZES = (640, 1024, 1536)
SMALL_SIZES = (384, 512, 640)
SHIFT_SIZES = (448, 2048)


@dataclass
class HipSet:
    """Images (uint8 or float32, any size) with points (N, 4, 2) [right head, left head, right rim, left
    rim] and radii (N, 2) [right, left], in each image's pixels."""

    images: list[np.ndarray]
    points: np.ndarray
    radii: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> np.ndarray:
        im = self.images[i]
        return im.astype(np.float32) / 255.0 if im.dtype == np.uint8 else im.astype(np.float32)

    def keypoints(self, i: int) -> HipKeypoints:
        p, r = self.points[i], self.radii[i]
        return HipKeypoints(
            left_head=tuple(p[1]),
            right_head=tuple(p[0]),
            left_rim=tuple(p[3]),
            right_rim=tuple(p[2]),
            left_radius=float(r[1]),
            right_radius=float(r[0]),
        )

    def angles(self) -> np.ndarray:
        """(N, 2) true Norberg angles [right, left]."""
        return np.array([[k.na_right, k.na_left] for k in map(self.keypoints, range(len(self)))])

    def shrunk(self, scales: np.ndarray) -> HipSet:
        """The set area-averaged by ``scales[i]`` per image (where < 0.8; labels follow), so training does
        not pay for a 1,536-px render on every crop it draws — inference shrinks the same way."""
        images, points, radii = [], self.points.copy(), self.radii.copy()
        for i, s in enumerate(np.asarray(scales, np.float64)):
            if s >= 0.8:
                images.append(self.images[i])
                continue
            small, m = shrink(self.image(i), float(s))
            images.append(small)
            points[i] = apply_affine(m, points[i])
            radii[i] = radii[i] * affine_scale(m)
        return HipSet(images, points, radii, list(self.names))

    def subset(self, idx: Iterable[int]) -> HipSet:
        idx = list(idx)
        return HipSet(
            [self.images[i] for i in idx], self.points[idx], self.radii[idx], [self.names[i] for i in idx]
        )

    @classmethod
    def from_keypoints(cls, images: list[np.ndarray], kps: list[HipKeypoints], names: list[str]) -> HipSet:
        pts = np.array([[k.right_head, k.left_head, k.right_rim, k.left_rim] for k in kps], np.float64)
        radii = np.array([[k.right_radius, k.left_radius] for k in kps], np.float64)
        return cls(images, pts.reshape(-1, 4, 2), radii.reshape(-1, 2), names)


def shifted_spec(spec: PhantomSpec, rng: np.random.Generator) -> PhantomSpec:
    """The *shifted* test distribution: what training never saw — noisier, harsher exposure, extreme
    body sizes and soft tissue, stronger in-plane rotation and more 90° studies; rendered at sizes
    outside the training range (``SHIFT_SIZES``)."""
    gamma = float(rng.choice([rng.uniform(0.5, 0.7), rng.uniform(1.4, 1.8)]))
    size = float(rng.choice([rng.uniform(25, 35), rng.uniform(130, 160)]))
    s = replace(
        spec,
        dose=float(np.exp(rng.uniform(np.log(60), np.log(150)))),
        electronic_noise=float(rng.uniform(6, 12)),
        gamma=gamma,
        body_size_mm=size,
        soft_tissue=float(rng.uniform(1.4, 1.8)),
        blur_px=float(rng.uniform(1.5, 2.5)),
        rotation_deg=float(np.clip(rng.normal(0, 8), -20, 20)),
        orientation=int(rng.choice([90, 270])) if rng.random() < 0.5 else 0,
    )
    if (s.orientation in (90, 270)) != (spec.orientation in (90, 270)):
        s = replace(s, width=spec.height, height=spec.width)
    if not labels_visible(s):
        s = replace(s, rotation_deg=0.0, collimation=(0.0,) * 4, center_x=0.5)
    return s


def _spec(args: tuple[str, int, int, tuple[float, float], bool]) -> PhantomSpec:
    distribution, seed, size, na_range, shifted = args
    spec = replace(spec_for_seed(distribution, seed, image_size=size, na_range=na_range), mirror=False)
    if shifted:
        spec = shifted_spec(spec, np.random.default_rng(seed ^ 0x5EED))
    return spec


def _render(args: tuple[str, int, int, tuple[float, float], bool]) -> tuple[np.ndarray, HipKeypoints]:
    s = render_phantom(_spec(args), args[1])
    return s.pixels8, s.keypoints


def render_set(
    count: int,
    seed: int,
    *,
    distribution: str = "uniform",
    sizes: tuple[int, ...] = TRAIN_SIZES,
    na_range: tuple[float, float] = (70.0, 130.0),
    shifted: bool = False,
    workers: int = 2,
    progress: bool = True,
) -> HipSet:
    """Render ``count`` phantoms (8-bit, like common JPEG exports) from ``seed``; the same arguments give
    the same set. Image ``i`` has seed ``image_seed(seed, i)`` and upright width ``sizes[i % len]``."""
    jobs = [
        (distribution, image_seed(seed, i), sizes[i % len(sizes)], na_range, shifted) for i in range(count)
    ]
    desc = f"render {'shifted ' if shifted else ''}phantoms"
    if workers > 1 and count > 8:
        with get_context("spawn").Pool(workers) as pool:
            out = list(
                tqdm(pool.imap(_render, jobs, chunksize=4), total=count, desc=desc, disable=not progress)
            )
    else:
        out = [_render(j) for j in tqdm(jobs, desc=desc, disable=not progress)]
    images, kps = zip(*out, strict=True) if out else ((), ())
    names = [f"phantom_{j[1]}" for j in jobs]
    return HipSet.from_keypoints(list(images), list(kps), names)


def load_folder(path: str | Path, *, progress: bool = True) -> HipSet:
    """A user's labelled images (imagefolder + metadata.csv, keypoint JSON/CSV/.mat, DICOM, webdataset,
    …): every record must carry all four points and both radii."""
    images, kps, names = [], [], []
    for record, radiograph in tqdm(iter_dataset(path), desc=f"read {path}", disable=not progress):
        kp = record.keypoints()
        if not all(math.isfinite(v) for v in (*kp.left_head, *kp.right_head, *kp.left_rim, *kp.right_rim)):
            raise ValueError(f"{record.file_name}: the record lacks keypoints")
        images.append(radiograph.pixels.astype(np.float32))
        kps.append(kp)
        names.append(record.file_name)
    if not images:
        raise ValueError(f"{path}: no labelled images found")
    return HipSet.from_keypoints(images, kps, names)


def labelled_set(
    count: int,
    seed: int,
    *,
    data: str | None = None,
    sizes: tuple[int, ...] = TRAIN_SIZES,
    workers: int = 2,
    progress: bool = True,
) -> HipSet:
    """A training set: the labelled folder ``data`` when given, else ``count`` fresh phantoms."""
    if data:
        return load_folder(data, progress=progress)
    return render_set(count, seed, sizes=sizes, workers=workers, progress=progress)
