"""What a dataset job makes: :class:`JobSpec` (checked, JSON-serialisable) and how its requested angles
and seeds are drawn per shard.

A job of ``count`` images is cut into shards of ``images_per_shard``. Everything a shard does is drawn
from ``(job seed, shard index)`` alone — its requested angles, its image seeds, its train/test split —
so a shard can run on any worker, be re-run after a crash, and give the same images. This module is
pure (numpy only): the gateway stores the spec as JSON and a Kubernetes shard worker reads it back.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np

from hipgen import anatomy
from hipgen.data.datasets import FORMATS
from hipgen.errors import FieldError
from hipgen.generate.conditions import TRAINED_NA_RANGE
from hipgen.generate.generator import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, SAMPLERS
from hipgen.inference.backend import MODEL_NAME

AngleKind = Literal["uniform", "list", "balanced", "histogram"]
LabelSource = Literal["measured", "requested"]
Executor = Literal["local", "kubernetes"]
DEFAULT_IMAGES_PER_SHARD = 32
MAX_IMAGES_PER_SHARD = 1024
SEED_SPACE = 1 << 62  # shard seeds stay far below uint64's top, so seed + k never wraps
MAX_LIST = 10_000  # angle pairs in a list distribution (the spec travels in every job row and pod env)
MAX_STEPS = 1000  # denoising steps (DDPM's full chain)


class SpecError(FieldError):
    """A bad field of a dataset job spec (``field`` is its path, e.g. ``spec.angles.uniform.low_deg``)."""


@dataclass(frozen=True)
class AngleSpec:
    """A distribution of requested angle pairs (degrees); which fields matter depends on ``kind``."""

    kind: AngleKind
    low: float = 0.0
    high: float = 0.0
    conditions: tuple[tuple[float, float], ...] = ()  # (left, right) pairs, for "list"
    threshold: float = anatomy.DEFAULT_THRESHOLD_DEG  # for "balanced"
    edges: tuple[float, ...] = ()  # for "histogram"
    weights: tuple[float, ...] = ()
    symmetric: bool = False

    def problems(self, prefix: str = "spec.angles") -> list[SpecError]:
        lo_ok, hi_ok = TRAINED_NA_RANGE
        bad: list[SpecError] = []

        def in_range(name: str, v: float) -> None:
            if not (math.isfinite(v) and lo_ok <= v <= hi_ok):
                bad.append(
                    SpecError(f"{prefix}.{name}", f"{v} is outside the trained range {lo_ok}–{hi_ok}°")
                )

        if self.kind in ("uniform", "balanced"):
            in_range(f"{self.kind}.low_deg", self.low)
            in_range(f"{self.kind}.high_deg", self.high)
            if not bad and self.low > self.high:
                bad.append(
                    SpecError(f"{prefix}.{self.kind}", f"low_deg {self.low} is above high_deg {self.high}")
                )
            if self.kind == "balanced" and not bad and not (self.low < self.threshold <= self.high):
                bad.append(
                    SpecError(
                        f"{prefix}.balanced.threshold_deg",
                        f"{self.threshold} must lie in ({self.low}, {self.high}] to draw both classes",
                    )
                )
        elif self.kind == "list":
            if not 1 <= len(self.conditions) <= MAX_LIST:
                bad.append(SpecError(f"{prefix}.list.conditions", f"give 1 to {MAX_LIST} angle pairs"))
            else:
                for i, (left, right) in enumerate(self.conditions):
                    in_range(f"list.conditions[{i}].na_left_deg", left)
                    in_range(f"list.conditions[{i}].na_right_deg", right)
        elif self.kind == "histogram":
            e, w = np.asarray(self.edges, float), np.asarray(self.weights, float)
            if len(e) < 2 or len(w) != len(e) - 1:
                bad.append(SpecError(f"{prefix}.histogram", "give n+1 edges_deg for n weights (n ≥ 1)"))
            elif not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
                bad.append(SpecError(f"{prefix}.histogram.edges_deg", "edges must be finite and increasing"))
            elif e[0] < lo_ok or e[-1] > hi_ok:
                bad.append(
                    SpecError(
                        f"{prefix}.histogram.edges_deg",
                        f"edges must lie in the trained range {lo_ok}–{hi_ok}°",
                    )
                )
            elif not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                bad.append(SpecError(f"{prefix}.histogram.weights", "weights must be ≥ 0 and not all zero"))
        else:
            bad.append(SpecError(prefix, "choose a distribution: uniform, list, balanced or histogram"))
        return bad

    def draw(self, rng: np.random.Generator, indices: range) -> np.ndarray:
        """Requested (left, right) angles for the global image ``indices``, shape (n, 2)."""
        n = len(indices)
        idx = np.asarray(indices, dtype=np.int64)
        if self.kind == "list":
            return np.asarray(self.conditions, float)[idx % len(self.conditions)]
        if self.kind == "uniform":
            out = rng.uniform(self.low, self.high, size=(n, 2))
        elif self.kind == "balanced":
            big = (idx % 2 == 0)[:, None]  # alternating: every prefix of the data set is balanced
            lo = np.where(big, self.threshold, self.low)
            hi = np.where(big, self.high, np.nextafter(self.threshold, -np.inf))
            out = lo + rng.random((n, 2)) * (hi - lo)
        else:
            e, w = np.asarray(self.edges, float), np.asarray(self.weights, float)
            bins = rng.choice(len(w), size=(n, 2), p=w / w.sum())
            out = e[bins] + rng.random((n, 2)) * (e[bins + 1] - e[bins])
        if self.symmetric:
            out[:, 1] = out[:, 0]
        return out


@dataclass(frozen=True)
class JobSpec:
    """A checked dataset job. ``sampler`` None means the generator's default; ``steps`` 0 and
    ``guidance_scale`` None likewise; ``model_name`` "" means the server's default generator."""

    output_uri: str
    format: str
    count: int
    angles: AngleSpec
    seed: int = 0
    sampler: str | None = None
    steps: int = 0
    guidance_scale: float | None = None
    model_name: str = ""
    image_size: int = 0
    test_fraction: float = 0.0
    display_name: str = ""
    labels: LabelSource = "measured"
    tolerance_deg: float | None = None
    max_regenerations: int = 0
    reference_uri: str = ""
    images_per_shard: int = DEFAULT_IMAGES_PER_SHARD
    executor: Executor = "local"
    extra: dict[str, Any] = field(default_factory=dict)  # room for forward-compatible keys

    def problems(self, *, max_images: int, max_regenerations: int) -> list[SpecError]:
        """Every bad field at once (the gateway answers INVALID_ARGUMENT naming them)."""
        bad: list[SpecError] = []
        uri = urlparse(self.output_uri)
        if not self.output_uri or uri.scheme not in ("file", "s3") or not (uri.path.strip("/") or uri.netloc):
            bad.append(SpecError("spec.output_uri", "give a file:// or s3:// folder URI"))
        elif uri.scheme == "s3" and not uri.netloc:
            bad.append(SpecError("spec.output_uri", "an s3:// URI needs a bucket"))
        elif uri.query or uri.fragment or "#" in self.output_uri:
            bad.append(
                SpecError("spec.output_uri", "a folder URI takes no query or fragment (percent-encode '#')")
            )
        elif uri.scheme == "file" and uri.netloc not in ("", "localhost"):
            bad.append(
                SpecError("spec.output_uri", "a file:// URI names a local folder: file:///absolute/path")
            )
        if self.executor == "kubernetes" and uri.scheme == "file":
            bad.append(
                SpecError(
                    "spec.executor", "Kubernetes workers cannot see the gateway's disk: give an s3:// output"
                )
            )
        if self.format not in FORMATS:
            bad.append(SpecError("spec.format", f"choose one of {', '.join(FORMATS)}"))
        if not 1 <= self.count <= max_images:
            bad.append(SpecError("spec.count", f"{self.count} images: give 1 to {max_images}"))
        bad += self.angles.problems()
        if self.sampler is not None and self.sampler not in SAMPLERS:
            bad.append(SpecError("spec.sampler", f"{self.sampler!r}: choose one of {', '.join(SAMPLERS)}"))
        if self.guidance_scale is not None and not (
            math.isfinite(self.guidance_scale) and self.guidance_scale >= 0
        ):
            bad.append(SpecError("spec.guidance_scale", "must be a finite number ≥ 0"))
        if not (math.isfinite(self.test_fraction) and 0 <= self.test_fraction < 1):
            bad.append(SpecError("spec.test_fraction", "must lie in [0, 1)"))
        if self.tolerance_deg is not None and not (
            math.isfinite(self.tolerance_deg) and self.tolerance_deg > 0
        ):
            bad.append(SpecError("spec.tolerance_deg", "must be a finite number of degrees > 0"))
        if self.max_regenerations > max_regenerations:
            bad.append(SpecError("spec.max_regenerations", f"at most {max_regenerations} per image"))
        if not 1 <= self.images_per_shard <= MAX_IMAGES_PER_SHARD:
            bad.append(SpecError("spec.images_per_shard", f"give 1 to {MAX_IMAGES_PER_SHARD}"))
        if self.reference_uri:
            ref = urlparse(self.reference_uri)
            if ref.scheme not in ("file", "s3"):
                bad.append(SpecError("spec.reference_uri", "give a file:// or s3:// folder URI"))
            elif self.format == "webdataset":
                bad.append(
                    SpecError("spec.reference_uri", "scoring reads image files; webdataset tars are not")
                )
        if not 0 <= self.steps <= MAX_STEPS:
            bad.append(SpecError("spec.steps", f"give 0 (the sampler's default) to {MAX_STEPS}"))
        if self.image_size and not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            bad.append(
                SpecError(
                    "spec.image_size", f"give 0 (native) or {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels"
                )
            )
        if self.model_name and not MODEL_NAME.fullmatch(self.model_name):
            bad.append(SpecError("spec.model_name", "a model name (letters, digits, _ . -), never a path"))
        if len(self.display_name) > 200:
            bad.append(SpecError("spec.display_name", "at most 200 characters"))
        return bad

    # -- shards ----------------------------------------------------------------------------------------
    @property
    def shard_count(self) -> int:
        return -(-self.count // self.images_per_shard)

    def shard_range(self, shard: int) -> range:
        """Global image indices of ``shard``."""
        if not 0 <= shard < self.shard_count:
            raise IndexError(f"shard {shard} outside 0..{self.shard_count - 1}")
        start = shard * self.images_per_shard
        return range(start, min(start + self.images_per_shard, self.count))

    def shard_plan(self, shard: int) -> ShardPlan:
        """The shard's images: requested angles, first-attempt seed base and split, from (seed, shard)."""
        indices = self.shard_range(shard)
        ss = np.random.SeedSequence([self.seed, shard])
        angle_ss, split_ss, seed_ss = ss.spawn(3)
        angles = self.angles.draw(np.random.default_rng(angle_ss), indices)
        test = np.random.default_rng(split_ss).random(len(indices)) < self.test_fraction
        base = int(seed_ss.generate_state(1, np.uint64)[0]) % SEED_SPACE
        splits = tuple(("test" if t else "train") if self.test_fraction > 0 else None for t in test)
        return ShardPlan(shard, indices, angles, base, splits)

    # -- JSON ------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        d = json.loads(text)
        a = d.pop("angles")
        angles = AngleSpec(
            **{
                **a,
                "conditions": tuple(tuple(c) for c in a.get("conditions", ())),
                "edges": tuple(a.get("edges", ())),
                "weights": tuple(a.get("weights", ())),
            }
        )
        return cls(**d, angles=angles)


@dataclass(frozen=True)
class ShardPlan:
    """One shard's work: image ``indices[j]`` is requested at ``angles[j]`` (left, right degrees) and
    first generated with seed ``seed_base + j``."""

    shard: int
    indices: range
    angles: np.ndarray
    seed_base: int
    splits: tuple[str | None, ...]


def file_stem(index: int) -> str:
    """The stored name of global image ``index`` (zero-padded, so listings sort in image order)."""
    return f"{index:06d}"


__all__ = [
    "DEFAULT_IMAGES_PER_SHARD",
    "SAMPLERS",
    "AngleSpec",
    "JobSpec",
    "ShardPlan",
    "SpecError",
    "file_stem",
]
