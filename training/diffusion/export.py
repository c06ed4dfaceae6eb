"""Export the angle-conditioned UNet to ONNX for the torch-free sampler (``hipgen.generate.sampling``):
one denoising call per step, the loop and scheduler math outside the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.diffusion.model import NaConditionedUNet

OPSET = 17
INPUTS = ("sample", "timestep", "na", "keep")
OUTPUT = "noise"


def export_unet(model: NaConditionedUNet, path: str | Path) -> Path:
    """ONNX with a dynamic batch: sample (B, C, S, S) f32 (C = 1 pixels, or latent channels), timestep
    (B,) int64, na (B, 2) f32 scaled by :func:`hipgen.generate.conditions.condition_vector`, keep (B,)
    bool → noise (B, C, S, S)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s, c = int(model.config["sample_size"]), int(model.config["in_channels"])
    example = (
        torch.zeros(2, c, s, s),
        torch.tensor([10, 500], dtype=torch.int64),
        torch.zeros(2, 2),
        torch.tensor([True, False]),
    )
    torch.onnx.export(
        model.eval(),
        example,
        str(path),
        input_names=list(INPUTS),
        output_names=[OUTPUT],
        dynamic_axes={n: {0: "batch"} for n in (*INPUTS, OUTPUT)},
        opset_version=OPSET,
        dynamo=False,
    )
    return path


def ort_model(path: str | Path):  # noqa: ANN201 - a hipgen.generate.sampling.ModelFn
    """The exported UNet as the numpy callable the sampler takes."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def model(x: np.ndarray, t: np.ndarray, na: np.ndarray, keep: np.ndarray) -> np.ndarray:
        feeds = {
            "sample": x.astype(np.float32, copy=False),
            "timestep": t.astype(np.int64, copy=False),
            "na": na.astype(np.float32, copy=False),
            "keep": keep.astype(bool, copy=False),
        }
        return sess.run([OUTPUT], feeds)[0]

    return model


__all__ = ["INPUTS", "OPSET", "OUTPUT", "export_unet", "ort_model"]
