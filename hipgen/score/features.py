"""Feature backbones for the feature-space metrics (FID, KID, MMD, precision/recall, memorisation,
GAN-train/test). Every report names its backbone: FIDs compare only within one backbone.

- ``angle_locator`` (the default): the domain encoder — the default angle model's locator trunk, trained
  on phantom radiographs, 960 features (:class:`hipgen.angle.features.AngleFeatures`).
- any repository entry whose MANIFEST says ``"task": "features"``: an ImageNet backbone (Inception-v3,
  ResNet-50, …) exported to ONNX from weights the user has on disk (``hipgen export backbone``); no
  weights are ever downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hipgen.angle.features import LOCATOR, AngleFeatures
from hipgen.angle.geometry import letterbox_matrix, warp
from hipgen.inference.backend import MANIFEST, OrtBackend, read_manifest

DEFAULT_BACKBONE = LOCATOR
FEATURES_TASK = "features"


class UnknownBackboneError(ValueError):
    """The requested backbone is not in the repository (the message lists those that are)."""


class FeatureBackbone(Protocol):
    name: str

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


class LocatorFeatures:
    """The domain encoder, under its backbone name."""

    def __init__(self, repository: str | Path) -> None:
        self.name = DEFAULT_BACKBONE
        self._features = AngleFeatures(repository)

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self._features(images)


class OnnxFeatures:
    """An exported ImageNet backbone: images letterboxed (aspect kept, zero padding) to the model's input
    side as [0, 1] grey (N, 1, S, S); grey → RGB and ImageNet normalisation are inside the graph."""

    def __init__(self, backend: Any, name: str, batch: int = 16) -> None:
        self.name, self.backend, self.batch = name, backend, batch
        info = backend.model_info(name)
        self.size = int(info.manifest["features"]["input_size"])

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch):
            x = np.stack(
                [
                    warp(im, letterbox_matrix(*np.shape(im), self.size), self.size)
                    for im in (np.asarray(m, np.float32) for m in images[i : i + self.batch])
                ]
            )[:, None]
            out.append(np.asarray(self.backend.infer(self.name, {"image": x})["features"], np.float64))
        return np.concatenate(out) if out else np.zeros((0, 0))


def available_backbones(repository: str | Path) -> list[str]:
    """The backbone names a repository offers (the default first when its locator is there)."""
    root = Path(repository)
    names = [DEFAULT_BACKBONE] if (root / LOCATOR / MANIFEST).is_file() else []
    for d in sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith(".")):
        try:
            task = read_manifest(root, d.name).get("task")
        except (OSError, ValueError, AttributeError):  # an unreadable MANIFEST.json: not offered
            continue
        if task == FEATURES_TASK:
            names.append(d.name)
    return names


def backbone_for(repository: str | Path, name: str | None = None, backend: Any = None) -> FeatureBackbone:
    """The named backbone (empty/None: the default); raises :class:`UnknownBackboneError`."""
    name = name or DEFAULT_BACKBONE
    offered = available_backbones(repository)
    if name not in offered:
        raise UnknownBackboneError(
            f"unknown feature backbone {name!r}; this repository offers {offered or 'none'}"
            + ("" if name == DEFAULT_BACKBONE else " (export one with `hipgen export backbone`)")
        )
    if name == DEFAULT_BACKBONE:
        return LocatorFeatures(repository)
    return OnnxFeatures(backend or OrtBackend(repository), name)


__all__ = [
    "DEFAULT_BACKBONE",
    "FEATURES_TASK",
    "FeatureBackbone",
    "LocatorFeatures",
    "OnnxFeatures",
    "UnknownBackboneError",
    "available_backbones",
    "backbone_for",
]
