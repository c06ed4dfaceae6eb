"""A labelled sample grid of phantoms: the picture that says more than a table (README, reports)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hipgen.anatomy import HipKeypoints
from hipgen.phantom.render import render_phantom
from hipgen.phantom.spec import image_seed, spec_for_seed


def draw_labels(img8: np.ndarray, kp: HipKeypoints) -> np.ndarray:
    """BGR copy of a grey image with the head circles, the head–head line, the rim rays and both NA."""
    out = cv2.cvtColor(img8, cv2.COLOR_GRAY2BGR)
    t = max(1, int(round(img8.shape[1] / 400)))
    for side, colour in (("left", (60, 200, 255)), ("right", (255, 160, 60))):
        h = getattr(kp, f"{side}_head")
        rim = getattr(kp, f"{side}_rim")
        hp = (int(round(h[0])), int(round(h[1])))
        cv2.circle(out, hp, int(round(getattr(kp, f"{side}_radius"))), colour, t, cv2.LINE_AA)
        cv2.line(out, hp, (int(round(rim[0])), int(round(rim[1]))), colour, t, cv2.LINE_AA)
        cv2.circle(out, (int(round(rim[0])), int(round(rim[1]))), 2 * t, (0, 0, 255), -1, cv2.LINE_AA)
    lh, rh = kp.left_head, kp.right_head
    cv2.line(out, (int(lh[0]), int(lh[1])), (int(rh[0]), int(rh[1])), (80, 255, 80), t, cv2.LINE_AA)
    scale = img8.shape[1] / 700
    cv2.putText(
        out,
        f"R {kp.na_right:.1f}  L {kp.na_left:.1f}",
        (6, int(24 * scale) + 4),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (0, 255, 255),
        max(1, t),
        cv2.LINE_AA,
    )
    return out


def sample_grid(
    count: int = 12,
    *,
    distribution: str = "uniform",
    seed: int = 0,
    cols: int = 4,
    tile: int = 320,
    labels: bool = True,
    image_size: int = 512,
) -> np.ndarray:
    """BGR mosaic of ``count`` phantoms drawn from ``distribution``; tiles keep their aspect, padded black."""
    tiles = []
    for i in range(count):
        s_i = image_seed(seed, i)  # the same images as `hipgen phantom --seed` renders
        s = render_phantom(spec_for_seed(distribution, s_i, image_size=image_size), seed=s_i)
        img = draw_labels(s.pixels8, s.keypoints) if labels else cv2.cvtColor(s.pixels8, cv2.COLOR_GRAY2BGR)
        h, w = img.shape[:2]
        k = tile / max(h, w)
        img = cv2.resize(img, (max(1, int(w * k)), max(1, int(h * k))), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((tile, tile, 3), np.uint8)
        y0, x0 = (tile - img.shape[0]) // 2, (tile - img.shape[1]) // 2
        canvas[y0 : y0 + img.shape[0], x0 : x0 + img.shape[1]] = img
        tiles.append(canvas)
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[r : r + cols]) for r in range(0, len(tiles), cols)]
    return np.vstack(rows)


def write_sample_grid(path: str | Path, **kwargs) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(p), sample_grid(**kwargs)):
        raise OSError(f"could not write {p}")
    return p
