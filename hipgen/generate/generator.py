"""A deployed generator: the UNet in ``model_repository/`` (any :class:`~hipgen.inference.backend.Backend`),
its MANIFEST's ``generator`` section (size, trained NA range, noise schedule, samplers it supports and
their defaults), the numpy sampling loop, and the auto-label measured by the angle model.

No torch: this is what GenerateService and ``hipgen generate`` run. Every request builds its own
:class:`~hipgen.generate.sampling.SamplingPlan` (the scheduler state is the plan plus local variables),
so concurrent requests never share a scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hipgen.generate.conditions import ConditionError, NaRequest, condition_vector
from hipgen.generate.sampling import ModelFn, SamplingPlan, sample, to_uint8
from hipgen.generate.schedulers import NoiseSchedule

DEFAULT_GENERATOR = "generator_ddpm"  # the teacher: DDPM and DDIM sampling
DEFAULT_LCM_GENERATOR = "generator_lcm"  # the consistency-distilled student: LCM sampling
SAMPLERS = ("ddpm", "ddim", "lcm")
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "lcm": 4}
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 2048  # output side, pixels; outputs are resampled from the native size
MAX_GUIDANCE = 20.0  # beyond this CFG only saturates; a larger value is a client bug
GENERATOR_INPUTS = frozenset({"sample", "timestep", "na", "keep"})


def generator_for(
    sampler: str | None, teacher: str = DEFAULT_GENERATOR, student: str = DEFAULT_LCM_GENERATOR
) -> str:
    """The model a request without a model name uses: the distilled student for LCM, else the teacher."""
    return student if (sampler or "").lower() == "lcm" else teacher


class NotAGeneratorError(ValueError):
    """The model is not a hipgen generator (wrong inputs or no ``generator`` section in its MANIFEST)."""


@dataclass(frozen=True)
class GeneratorSpec:
    """The MANIFEST's ``generator`` section: what the UNet was trained for and how to sample it."""

    size: int
    na_range: tuple[float, float]
    schedule: NoiseSchedule
    samplers: tuple[str, ...]
    default_sampler: str
    default_steps: dict[str, int]
    default_guidance: float
    max_steps: int = 1000
    # latent path: {"channels": C, "size": s, "decoder": "<model>"}: the UNet denoises (C, s, s) latents
    # that the decoder model turns into the (1, size, size) image
    latent: dict[str, Any] | None = None

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], model: str = "") -> GeneratorSpec:
        g = manifest.get("generator")
        if not isinstance(g, dict):
            raise NotAGeneratorError(f"model {model!r} has no 'generator' section in its MANIFEST.json")
        try:
            samplers = tuple(g["samplers"])
            return cls(
                size=int(g["size"]),
                na_range=(float(g["na_range"][0]), float(g["na_range"][1])),
                schedule=NoiseSchedule.from_config(g["schedule"]),
                samplers=samplers,
                default_sampler=str(g.get("default_sampler", samplers[0])),
                default_steps={k: int(v) for k, v in g.get("default_steps", DEFAULT_STEPS).items()},
                default_guidance=float(g.get("default_guidance", 1.0)),
                max_steps=int(g["schedule"].get("num_train_timesteps", 1000)),
                latent=_latent(g.get("latent")),
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise NotAGeneratorError(f"model {model!r}: malformed 'generator' section ({e})") from None

    def manifest_section(self) -> dict[str, Any]:
        """The inverse of :meth:`from_manifest` (what an export writes)."""
        return {
            "size": self.size,
            "na_range": list(self.na_range),
            "schedule": self.schedule.config(),
            "samplers": list(self.samplers),
            "default_sampler": self.default_sampler,
            "default_steps": dict(self.default_steps),
            "default_guidance": self.default_guidance,
            **({"latent": dict(self.latent)} if self.latent else {}),
        }


def _latent(section: Any) -> dict[str, Any] | None:
    if section is None:
        return None
    return {
        "channels": int(section["channels"]),
        "size": int(section["size"]),
        "decoder": str(section["decoder"]),
    }


@dataclass(frozen=True)
class SamplerChoice:
    """A request's sampler, steps and guidance with the generator's defaults filled in."""

    sampler: str
    steps: int
    guidance_scale: float


def choose_sampler(
    spec: GeneratorSpec, sampler: str | None, steps: int | None, guidance_scale: float | None
) -> SamplerChoice:
    """Fill defaults and check the request; raises :class:`ConditionError` naming ``sampler``, ``steps``
    or ``guidance_scale``."""
    name = (sampler or spec.default_sampler).lower()
    if name not in SAMPLERS:
        raise ConditionError("sampler", f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")
    if name not in spec.samplers:
        hint = " (LCM needs the distilled generator, generator_lcm)" if name == "lcm" else ""
        raise ConditionError(
            "sampler", f"this generator samples with {list(spec.samplers)}, not {name!r}{hint}"
        )
    n = steps or spec.default_steps.get(name, DEFAULT_STEPS[name])
    top = spec.max_steps if name != "lcm" else spec.schedule.original_inference_steps
    if not 1 <= n <= top:
        raise ConditionError("steps", f"{name} takes 1–{top} steps, got {n}")
    g = spec.default_guidance if guidance_scale is None else float(guidance_scale)
    if not (math.isfinite(g) and 0.0 <= g <= MAX_GUIDANCE):
        raise ConditionError("guidance_scale", f"must be a finite number in [0, {MAX_GUIDANCE:g}], got {g}")
    if name == "lcm" and g != 1.0:  # the student never learnt an unconditional branch to guide with
        raise ConditionError(
            "guidance_scale", f"the LCM student has its guidance distilled in; leave it unset or 1, got {g:g}"
        )
    return SamplerChoice(name, int(n), g)


def backend_model_fn(backend: Any, model: str) -> ModelFn:
    """The UNet on a backend as the sampler's ``model(sample, timestep, na, keep) -> noise``."""

    def call(x: np.ndarray, t: np.ndarray, na: np.ndarray, keep: np.ndarray) -> np.ndarray:
        out = backend.infer(model, {"sample": x, "timestep": t, "na": na, "keep": keep})
        return np.asarray(out["noise"], np.float32)

    return call


@dataclass
class Generator:
    """One deployed generator on a backend. :meth:`generate` is safe to call from several threads."""

    backend: Any
    model: str
    spec: GeneratorSpec = field(init=False)
    version: str = field(init=False)

    def __post_init__(self) -> None:
        info = self.backend.model_info(self.model)
        names = {i.name for i in info.inputs}
        if not names >= GENERATOR_INPUTS:
            raise NotAGeneratorError(
                f"model {self.model!r} is not a generator "
                f"(inputs {sorted(names)}, need {sorted(GENERATOR_INPUTS)})"
            )
        self.spec = GeneratorSpec.from_manifest(info.manifest, self.model)
        self.version = info.version

    def plan(
        self, requests: Sequence[NaRequest], seeds: Sequence[int], choice: SamplerChoice
    ) -> SamplingPlan:
        """Raises :class:`ConditionError` naming ``na_left``/``na_right`` when outside the trained range."""
        for r in requests:
            r.validated(self.spec.na_range)
        na = condition_vector(list(requests), self.spec.na_range)
        return SamplingPlan(na, list(seeds), choice.sampler, choice.steps, choice.guidance_scale)  # type: ignore[arg-type]

    def model_fn(self) -> ModelFn:
        return backend_model_fn(self.backend, self.model)

    def generate(
        self,
        plan: SamplingPlan,
        *,
        on_step: Callable[[int, int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Denoise one batch → (B, S, S) float32 images in [0, 1]."""
        channels, size = self.sample_shape()
        fn = self.model_fn()
        x = sample(
            fn, self.spec.schedule, plan, size, channels=channels, on_step=on_step, cancelled=cancelled
        )
        return to_unit(self.decode(x))

    def generate_angles(
        self,
        angles: np.ndarray,
        choice: SamplerChoice,
        *,
        seed: int = 0,
        batch: int = 8,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """One image per requested (left, right) pair of ``angles`` (N, 2), image k with seed
        ``seed + k``, ``batch`` at a time (``on_batch(images done)`` after each) → (N, S, S) in [0, 1]."""
        out = []
        for i in range(0, len(angles), batch):
            reqs = [NaRequest(float(a), float(b)) for a, b in angles[i : i + batch]]
            out.append(self.generate(self.plan(reqs, [seed + i + j for j in range(len(reqs))], choice)))
            if on_batch:
                on_batch(len(reqs))
        return np.concatenate(out) if out else np.zeros((0, self.spec.size, self.spec.size), np.float32)

    def sample_shape(self) -> tuple[int, int]:
        """(channels, side) of what the UNet denoises: (1, image side), or the latents'."""
        if self.spec.latent:
            return self.spec.latent["channels"], self.spec.latent["size"]
        return 1, self.spec.size

    def decode(self, x: np.ndarray) -> np.ndarray:
        """Denoised samples → (B, 1, S, S) images in [-1, 1]: latents through the decoder model."""
        if not self.spec.latent:
            return x
        return np.asarray(self.backend.infer(self.spec.latent["decoder"], {"latent": x})["image"], np.float32)


def to_unit(x: np.ndarray) -> np.ndarray:
    """Model range [-1, 1] (B, 1, S, S) → (B, S, S) float32 in [0, 1], quantised to 8 bits so that the
    label measured here is the label of the PNG a client receives."""
    return to_uint8(x).astype(np.float32) / 255.0


__all__ = [
    "DEFAULT_GENERATOR",
    "DEFAULT_LCM_GENERATOR",
    "DEFAULT_STEPS",
    "MAX_GUIDANCE",
    "SAMPLERS",
    "Generator",
    "GeneratorSpec",
    "NotAGeneratorError",
    "SamplerChoice",
    "backend_model_fn",
    "choose_sampler",
    "generator_for",
    "to_unit",
]
