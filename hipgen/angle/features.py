"""Image features from the angle model's trunk, for a Fréchet distance between image sets until the
Scoring issue brings FID proper: the locator's last trunk activation (letterboxed input, as it measures),
averaged over space.

The exported locator has no feature output, so the graph is edited in memory to expose the trunk's last
tensor — the committed model file stays as deployed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hipgen.angle.geometry import letterbox
from hipgen.inference.backend import latest_version, read_manifest

LOCATOR = "angle_locator"
TRUNK_PREFIX = "/net/trunk/"  # torch.onnx names nodes by module path; the trunk is ``net.trunk``


class AngleFeatures:
    """``features(images) -> (N, C)`` on the locator of a model repository (ONNX Runtime)."""

    def __init__(self, repository: str | Path, model: str = LOCATOR, batch: int = 16) -> None:
        import onnx
        import onnxruntime as ort

        path = latest_version(Path(repository), model) / "model.onnx"
        graph_model = onnx.load(str(path))
        trunk = [n for n in graph_model.graph.node if n.name.startswith(TRUNK_PREFIX)]
        if not trunk:
            raise ValueError(f"{path}: no {TRUNK_PREFIX}* nodes; not a hipgen angle model")
        self.tensor = trunk[-1].output[0]
        graph_model.graph.output.append(onnx.helper.make_empty_tensor_value_info(self.tensor))
        self._session: Any = ort.InferenceSession(
            graph_model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        arch = read_manifest(Path(repository), model).get("architecture", {})
        self.size = int(arch.get("input_size") or self._session.get_inputs()[0].shape[-1])
        self.batch = batch

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch):
            x = np.stack(
                [letterbox(np.asarray(im, np.float32), self.size)[0] for im in images[i : i + self.batch]]
            )
            (f,) = self._session.run([self.tensor], {self._session.get_inputs()[0].name: x[:, None]})
            out.append(f.reshape(len(x), f.shape[1], -1).mean(-1))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


__all__ = ["LOCATOR", "AngleFeatures"]
