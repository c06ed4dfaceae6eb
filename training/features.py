"""``hipgen export backbone``: an ImageNet classifier from torchvision (Inception-v3, ResNet-50, …) with
weights the user has on disk, exported to ONNX as a *feature backbone* for the scoring metrics — its
pooled penultimate activations (2048 for Inception-v3 and ResNet-50), grey → RGB and ImageNet
normalisation inside the graph, dynamic batch. Served by ONNX Runtime or Triton like every model; nothing
is downloaded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from hipgen import __version__
from hipgen.score.features import FEATURES_TASK
from training.repository import install, partial_dir, sha256

OPSET = 17
# The input side each family was trained at (Inception-v3 needs ≥ 75 px and was trained at 299).
INPUT_SIZE = {"inception_v3": 299}
DEFAULT_INPUT_SIZE = 224


class FeatureWrapper(nn.Module):
    """(N, 1, S, S) grey in [0, 1] → (N, D) pooled features of ``model`` with its classifier removed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model((image.expand(-1, 3, -1, -1) - self.mean) / self.std)


def feature_model(arch: str, weights: str | Path | None) -> nn.Module:
    """torchvision ``arch`` with ``weights`` (a local state dict of the full classifier; None = random,
    for tests only) and its last classification layer replaced by identity."""
    # torchvision's Inception-v3 weights expect transform_input (it re-normalises ImageNet-normalised
    # input to the original [-1, 1] range); get_model turns it on only when it loads weights itself.
    kwargs = (
        {"aux_logits": False, "init_weights": False, "transform_input": weights is not None}
        if arch == "inception_v3"
        else {}
    )
    try:
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
    except ValueError as e:
        raise ValueError(f"unknown torchvision model {arch!r}") from e
    if weights is not None:
        state = torch.load(Path(weights), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
        model.load_state_dict(state)
    if arch.startswith("squeezenet"):  # its classifier is a 1×1 conv + global pooling: keep the pooling
        model.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1))
    elif hasattr(model, "fc"):
        model.fc = nn.Identity()
    elif hasattr(model, "classifier"):
        cls = model.classifier
        if isinstance(cls, nn.Sequential):
            cls[-1] = nn.Identity()
        else:
            model.classifier = nn.Identity()
    else:
        raise ValueError(f"{arch}: no fc or classifier layer to remove")
    return model.eval()


def export_backbone(
    arch: str,
    weights: str | Path | None,
    repo: str | Path,
    *,
    name: str | None = None,
    input_size: int | None = None,
    command: str = "",
) -> Path:
    """Write ``<repo>/<name>/`` (default name ``features_<arch>``); returns the entry folder."""
    name = name or f"features_{arch}"
    size = input_size or INPUT_SIZE.get(arch, DEFAULT_INPUT_SIZE)
    net = FeatureWrapper(feature_model(arch, weights)).eval()
    x = np.random.default_rng(0).random((2, 1, size, size), dtype=np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    model_dir = partial_dir(repo, name)
    onnx_path = model_dir / "1" / "model.onnx"
    onnx_path.parent.mkdir(parents=True)
    torch.onnx.export(
        net,
        (torch.from_numpy(x),),
        str(onnx_path),
        input_names=["image"],
        output_names=["features"],
        dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    import onnxruntime as ort

    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    dim = int(ref.shape[1])
    (model_dir / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 32\n'
        f'input [\n  {{\n    name: "image"\n    data_type: TYPE_FP32\n'
        f"    dims: [ 1, {size}, {size} ]\n  }}\n]\n"
        f'output [\n  {{\n    name: "features"\n    data_type: TYPE_FP32\n    dims: [ {dim} ]\n  }}\n]\n'
        "dynamic_batching {\n  max_queue_delay_microseconds: 2000\n}\n"
        "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n"
    )
    manifest = {
        "name": name,
        "version": datetime.now(UTC).strftime("%Y.%m.%d"),
        "hipgen_version": __version__,
        "exported": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "task": FEATURES_TASK,
        "command": command,
        "features": {"architecture": arch, "input_size": size, "dim": dim, "normalisation": "imagenet"},
        "weights": {"path": str(weights), "sha256": sha256(Path(weights))} if weights else {"random": True},
        "inputs": {
            "image": {
                "dtype": "float32",
                "shape": ["batch", 1, size, size],
                "range": [0, 1],
                "meaning": "grey image letterboxed to the input side (aspect kept, zero padding)",
            }
        },
        "outputs": {"features": {"dtype": "float32", "shape": ["batch", dim], "meaning": "pooled features"}},
        "parity_max_abs": float(np.abs(ref - got).max()),
        "sha256": {"1/model.onnx": sha256(onnx_path)},
    }
    (model_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return install(model_dir, repo, name)


__all__ = ["FeatureWrapper", "export_backbone", "feature_model"]
