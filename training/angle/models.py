"""Keypoint networks on torchvision backbones.

Two heads share one interface (``forward(x) -> dict``):

- ``heatmap`` (the default): SimpleBaseline-style deconvolutions to stride 4, a spatial softmax per
  point and its expectation (soft-argmax / DSNT), so coordinates are differentiable and sub-pixel.
- ``regression``: the published baseline — global pooling and a linear layer straight to the
  coordinates, trained with MSE (published-methods §B).

Both add two scalar outputs from pooled features when asked (``extras=True``): the head radius and the
Big/Small logit, which makes the hip keypoint model its own classifier as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

Head = Literal["heatmap", "regression"]

# The screening families (published-methods §B screened 18 ImageNet architectures).
SCREEN_BACKBONES = (
    "resnet18",
    "resnet50",
    "densenet121",
    "efficientnet_b0",
    "mobilenet_v3_large",
    "squeezenet1_1",
    "shufflenet_v2_x1_0",
    "regnet_y_400mf",
    "mnasnet1_0",
    "convnext_tiny",
    "vgg11_bn",
)


def _trunk(model: nn.Module, name: str) -> nn.Module:
    """The convolutional trunk (spatial features) of a torchvision classifier. torchvision has no common
    accessor for it, hence this table by family."""
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        m = model
        return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)
    if name.startswith("densenet"):
        return nn.Sequential(model.features, nn.ReLU(inplace=False))
    if name.startswith("regnet"):
        return nn.Sequential(model.stem, model.trunk_output)
    if name.startswith("shufflenet"):
        m = model
        return nn.Sequential(m.conv1, m.maxpool, m.stage2, m.stage3, m.stage4, m.conv5)
    if name.startswith("mnasnet"):
        return model.layers
    if hasattr(model, "features"):  # vgg, squeezenet, mobilenet, efficientnet, convnext
        return model.features
    raise ValueError(f"no trunk rule for backbone {name!r}")


def check_backbone(name: str) -> str:
    """Fail fast (before minutes of rendering) on a name torchvision does not know or has no trunk
    rule for."""
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"unknown torchvision backbone {name!r}")
    family = name.split("_")[0].rstrip("0123456789")
    known = ("resnet", "resnext", "wide", "densenet", "regnet", "shufflenet", "mnasnet", "vgg", "squeezenet")
    if not (family in known or family.startswith(("mobilenet", "efficientnet", "convnext"))):
        raise ValueError(
            f"backbone {name!r}: no trunk rule for its family; choose e.g. {', '.join(SCREEN_BACKBONES)}"
        )
    return name


def check_head(head: str) -> str:
    if head not in ("heatmap", "regression"):
        raise ValueError(f"head must be 'heatmap' or 'regression', got {head!r}")
    return head


def build_trunk(name: str, weights: str | Path | None = None) -> nn.Module:
    """A torchvision backbone's trunk, random init unless ``weights`` names a local state dict of the
    full torchvision model (e.g. ImageNet weights the user downloaded; nothing is fetched here)."""
    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError as e:
        raise ValueError(f"unknown torchvision backbone {name!r}") from e
    if weights is not None:
        state = torch.load(Path(weights), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model.load_state_dict(state)
    return _trunk(model, name)


class KeypointNet(nn.Module):
    """``image`` (N, 1, S, S) in [0, 1] → ``keypoints`` (N, K, 2) in input pixels [+ ``radius`` (N, 1)
    in input pixels and ``logit`` (N, 1)]."""

    def __init__(
        self,
        backbone: str,
        n_points: int,
        *,
        input_size: int,
        head: Head = "heatmap",
        extras: bool = False,
        width: int = 128,
        weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        if head not in ("heatmap", "regression"):
            raise ValueError(f"head must be 'heatmap' or 'regression', got {head!r}")
        self.backbone_name, self.n_points, self.input_size = backbone, n_points, input_size
        self.head_kind, self.extras = head, extras
        self.trunk = build_trunk(backbone, weights)
        with torch.no_grad():
            was = self.trunk.training
            self.trunk.eval()
            feat = self.trunk(torch.zeros(1, 3, input_size, input_size))
            self.trunk.train(was)
        c, fh = feat.shape[1], feat.shape[2]
        if head == "heatmap":
            layers: list[nn.Module] = [nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            size = fh
            while size < input_size // 4:  # deconvolve to stride 4
                layers += [
                    nn.ConvTranspose2d(width, width, 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                ]
                size *= 2
            layers.append(nn.Conv2d(width, n_points, 1))
            self.heatmap_head = nn.Sequential(*layers)
            self.coord_head = None
        else:
            self.heatmap_head = None
            self.coord_head = nn.Linear(c, 2 * n_points)
        self.extra_head = nn.Linear(c, 2) if extras else None
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image.expand(-1, 3, -1, -1) - self.mean) / self.std
        feat = self.trunk(x)
        pooled = feat.mean(dim=(2, 3))
        out: dict[str, torch.Tensor] = {}
        s = float(self.input_size)
        if self.heatmap_head is not None:
            logits = self.heatmap_head(feat)
            n, k, h, w = logits.shape
            prob = F.softmax(logits.flatten(2), dim=-1).view(n, k, h, w)
            xs = (torch.arange(w, dtype=prob.dtype, device=prob.device) + 0.5) * (s / w) - 0.5
            ys = (torch.arange(h, dtype=prob.dtype, device=prob.device) + 0.5) * (s / h) - 0.5
            px = (prob.sum(2) * xs).sum(-1)
            py = (prob.sum(3) * ys).sum(-1)
            out["keypoints"] = torch.stack([px, py], dim=-1)
            out["heatmaps"] = prob
        else:
            out["keypoints"] = self.coord_head(pooled).view(-1, self.n_points, 2) * s
        if self.extra_head is not None:
            e = self.extra_head(pooled)
            out["radius"] = F.softplus(e[:, :1]) * (0.1 * s)
            out["logit"] = e[:, 1:]
        return out


class ExportWrapper(nn.Module):
    """The ONNX graph: named outputs of the model contract in :mod:`hipgen.angle.measure`."""

    def __init__(self, net: KeypointNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(image)
        if self.net.extras:
            return out["keypoints"], out["radius"], torch.sigmoid(out["logit"])
        return (out["keypoints"],)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
