"""One scoring run: two image sets → every metric, each with its noise baseline, on a named backbone.
ScoreService and ``hipgen report`` both call :func:`score_sets`; neither computes a metric itself.

Stages report progress (``on_progress(stage, done, total)``) and check ``cancelled()`` between batches,
so a service can stream progress and stop work for a cancelled call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from hipgen.anatomy import DEFAULT_THRESHOLD_DEG
from hipgen.errors import FieldError
from hipgen.generate.label import measure_each, measured_angles
from hipgen.metrics.baseline import improvement_factor, noise_images
from hipgen.metrics.distribution import frechet_distance, kid, mmd_rbf, precision_recall
from hipgen.metrics.fidelity import FidelityReport, angle_fidelity
from hipgen.metrics.memorisation import DEFAULT_THRESHOLD, Memorisation, memorisation
from hipgen.metrics.structural import diversity, ms_ssim_min_side, paired_similarity
from hipgen.metrics.transfer import TransferScores, gan_train_test
from hipgen.score.features import FeatureBackbone
from hipgen.score.sets import ImageSet

FEATURE_METRICS = ("fid", "kid", "mmd", "precision", "recall")
STRUCTURAL_METRICS = ("ssim", "ms_ssim", "ssim_diversity", "ms_ssim_diversity")
OTHER_METRICS = ("memorisation", "gan_train", "gan_test", "angle_fidelity")
METRICS = FEATURE_METRICS + STRUCTURAL_METRICS + OTHER_METRICS
STRUCTURAL_SIZE = 256  # MS-SSIM needs ≥ 161 px; the published study also scored upsampled GAN output

Progress = Callable[[str, int, int], None]


class ScoreOptionError(FieldError):
    """A scoring option the request got wrong; ``field`` names the request field."""


class Cancelled(Exception):
    """The caller cancelled the run between two batches."""


@dataclass(frozen=True)
class ScoreOptions:
    metrics: tuple[str, ...] = ()  # empty: all that apply
    image_size: int = 0  # structural metrics' side; 0: STRUCTURAL_SIZE
    seed: int = 0
    noise_baseline: bool = True
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pr_k: int = 3
    diversity_pairs: int = 200
    memorisation_threshold: float = DEFAULT_THRESHOLD
    threshold_deg: float = DEFAULT_THRESHOLD_DEG
    batch: int = 32

    def chosen(self) -> tuple[str, ...]:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ScoreOptionError("metrics", f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
        return tuple(dict.fromkeys(self.metrics)) or METRICS

    def structural_size(self) -> int:
        size = self.image_size or STRUCTURAL_SIZE
        if not 11 <= size <= 2048:
            raise ScoreOptionError("image_size", f"must be 0 (default) or 11–2048 px, got {size}")
        return size


@dataclass(frozen=True)
class MetricValue:
    name: str
    value: float
    standard_error: float = 0.0
    noise_baseline: float | None = None
    sample_count: int = 0

    @property
    def improvement(self) -> float | None:
        """× better than noise (> 1 = better); None without a baseline, and for diversity, where noise is
        simply the most varied set possible (its baseline is shown as the floor, not a target)."""
        if self.noise_baseline is None or self.name.endswith("_diversity"):
            return None
        return improvement_factor(self.name, self.value, self.noise_baseline)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "standard_error": self.standard_error,
            "noise_baseline": self.noise_baseline,
            "improvement_over_noise": self.improvement,
            "sample_count": self.sample_count,
        }


@dataclass
class ScoreReport:
    backbone: str
    metrics: list[MetricValue]
    reference_count: int
    candidate_count: int
    fidelity: dict[str, FidelityReport] | None = None
    requested: np.ndarray | None = None  # (N, 2) [left, right] of the candidate
    measured: np.ndarray | None = None  # (N, 2) measured on the candidate
    memorisation: Memorisation | None = None
    transfer: TransferScores | None = None
    notes: list[str] = field(default_factory=list)

    def metric(self, name: str) -> MetricValue | None:
        return next((m for m in self.metrics if m.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_backbone": self.backbone,
            "reference_count": self.reference_count,
            "candidate_count": self.candidate_count,
            "metrics": [m.to_dict() for m in self.metrics],
            "angle_fidelity": {k: v.to_dict() for k, v in self.fidelity.items()} if self.fidelity else None,
            "memorisation": self.memorisation.to_dict() if self.memorisation else None,
            "gan_train_test": self.transfer.to_dict() if self.transfer else None,
            "notes": self.notes,
        }


def resized(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """(N, size, size) float64: each image resized (area when shrinking, linear when enlarging)."""
    out = np.empty((len(images), size, size))
    for i, im in enumerate(images):
        im = np.asarray(im, np.float32)
        interp = cv2.INTER_AREA if min(im.shape) > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(im, (size, size), interpolation=interp)
    return out


def image_classes(
    angles: np.ndarray, records: Sequence[Any] | None = None, threshold: float = DEFAULT_THRESHOLD_DEG
) -> np.ndarray:
    """Big (1) / Small (0) per image — Big only when both hips are, as the published classifier reads
    an image; from the label records where every image has one, else from ``angles`` (N, 2); −1 where
    neither is known."""
    if records is not None and len(records) and all(r is not None for r in records):
        return np.array([int(r.class_left == "big" and r.class_right == "big") for r in records])
    a = np.asarray(angles, np.float64)
    cls = ((a[:, 0] >= threshold) & (a[:, 1] >= threshold)).astype(int)
    return np.where(np.isfinite(a).all(1), cls, -1)


class _Run:
    def __init__(self, on_progress: Progress | None, cancelled: Callable[[], bool] | None) -> None:
        self.on_progress, self.cancelled = on_progress, cancelled

    def step(self, stage: str, done: int, total: int) -> None:
        if self.cancelled and self.cancelled():
            raise Cancelled(stage)
        if self.on_progress:
            self.on_progress(stage, done, total)

    def batched(
        self, stage: str, fn: Callable[[Sequence[np.ndarray]], Any], images: Sequence[np.ndarray], batch: int
    ) -> np.ndarray:
        out = []
        self.step(stage, 0, len(images))
        for i in range(0, len(images), batch):
            out.append(np.asarray(fn(images[i : i + batch]), np.float64))
            self.step(stage, min(i + batch, len(images)), len(images))
        return np.concatenate(out)


def _feature_metrics(
    chosen: tuple[str, ...], ref: np.ndarray, cand: np.ndarray, noise: np.ndarray | None, opt: ScoreOptions
) -> list[MetricValue]:
    out: list[MetricValue] = []
    n = len(cand)
    if "fid" in chosen:
        base = frechet_distance(ref, noise) if noise is not None else None
        out.append(MetricValue("fid", frechet_distance(ref, cand), 0.0, base, n))
    if "kid" in chosen:
        args = {"subsets": opt.kid_subsets, "subset_size": opt.kid_subset_size, "seed": opt.seed}
        k = kid(ref, cand, **args)
        base = kid(ref, noise, **args).value if noise is not None else None
        out.append(MetricValue("kid", k.value, k.standard_error, base, k.subset_size))
    if "mmd" in chosen:
        m = mmd_rbf(ref, cand)
        base = mmd_rbf(ref, noise, sigma=m.sigma).value if noise is not None else None
        out.append(MetricValue("mmd", m.value, 0.0, base, n))
    if "precision" in chosen or "recall" in chosen:
        pr = precision_recall(ref, cand, k=opt.pr_k)
        npr = precision_recall(ref, noise, k=opt.pr_k) if noise is not None else None
        if "precision" in chosen:
            out.append(MetricValue("precision", pr.precision, 0.0, npr.precision if npr else None, n))
        if "recall" in chosen:
            out.append(MetricValue("recall", pr.recall, 0.0, npr.recall if npr else None, len(ref)))
    return out


def _structural_metrics(
    chosen: tuple[str, ...], ref: ImageSet, cand: ImageSet, opt: ScoreOptions, run: _Run
) -> list[MetricValue]:
    size = opt.structural_size()
    out: list[MetricValue] = []
    want = [m for m in STRUCTURAL_METRICS if m in chosen]
    if not want:
        return out
    if size < ms_ssim_min_side() and any(m.startswith("ms_ssim") for m in want):
        raise ScoreOptionError("image_size", f"MS-SSIM needs ≥ {ms_ssim_min_side()} px, got {size}")
    run.step("structural", 0, len(want))
    n = min(len(ref), len(cand))
    r = resized(ref.images[:n], size)
    c = resized(cand.images[:n], size)
    noise = noise_images(n, (size, size), opt.seed).astype(np.float64) if opt.noise_baseline else None
    for k, name in enumerate(want):
        ms = name.startswith("ms_ssim")
        if name.endswith("diversity"):
            d = diversity(c, pairs=opt.diversity_pairs, seed=opt.seed, multiscale=ms) if n >= 2 else None
            if d is None:
                continue
            base = (
                diversity(noise, pairs=opt.diversity_pairs, seed=opt.seed, multiscale=ms)
                if noise is not None
                else None
            )
            # lower is more diverse: the noise baseline is the most diverse possible set
            out.append(
                MetricValue(name, d.mean, d.std / math.sqrt(d.pairs), base.mean if base else None, d.pairs)
            )
        else:
            p = paired_similarity(r, c, multiscale=ms)
            base = paired_similarity(r, noise, multiscale=ms).mean if noise is not None else None
            out.append(MetricValue(name, p.mean, p.std / math.sqrt(p.pairs), base, p.pairs))
        run.step("structural", k + 1, len(want))
    return out


def score_sets(
    reference: ImageSet,
    candidate: ImageSet,
    options: ScoreOptions,
    *,
    backbone: FeatureBackbone,
    measurer: Any = None,
    on_progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> ScoreReport:
    """Score ``candidate`` against ``reference``. ``measurer`` (an AngleMeasurer) is needed for angle
    fidelity and for the classes of unlabelled images (GAN-train/test)."""
    chosen = options.chosen()
    options.structural_size()
    run = _Run(on_progress, cancelled)
    report = ScoreReport(backbone.name, [], len(reference), len(candidate))
    feat_needed = any(m in chosen for m in (*FEATURE_METRICS, "memorisation", "gan_train", "gan_test"))
    ref_f = cand_f = noise_f = None
    if feat_needed:
        if min(len(reference), len(candidate)) < options.pr_k + 1:
            raise ScoreOptionError(
                "candidate" if len(candidate) <= len(reference) else "reference",
                f"feature metrics need at least {options.pr_k + 1} images per set",
            )
        ref_f = run.batched("features: reference", backbone, reference.images, options.batch)
        cand_f = run.batched("features: candidate", backbone, candidate.images, options.batch)
        if options.noise_baseline and any(m in chosen for m in FEATURE_METRICS):
            shape = tuple(int(v) for v in np.median([im.shape for im in candidate.images], axis=0))
            noise = list(noise_images(len(candidate), shape, options.seed))  # type: ignore[arg-type]
            noise_f = run.batched("features: noise baseline", backbone, noise, options.batch)
        report.metrics += _feature_metrics(chosen, ref_f, cand_f, noise_f, options)
    report.metrics += _structural_metrics(chosen, reference, candidate, options, run)
    measured = None
    if measurer is not None and ("angle_fidelity" in chosen or "gan_train" in chosen or "gan_test" in chosen):
        measured = run.batched(
            "measure: candidate",
            lambda ims: measured_angles(measure_each(measurer, list(ims))),
            candidate.images,
            options.batch,
        )
        report.measured = measured
    if "angle_fidelity" in chosen:
        if candidate.requested is None or not np.isfinite(candidate.requested).any():
            report.notes.append("angle fidelity: the candidate set carries no requested angles")
        elif measured is None:
            report.notes.append("angle fidelity: no angle model to measure with")
        else:
            report.requested = candidate.requested
            report.fidelity = angle_fidelity(candidate.requested, measured)
    if "memorisation" in chosen and ref_f is not None and cand_f is not None:
        report.memorisation = memorisation(ref_f, cand_f, threshold=options.memorisation_threshold)
    if ("gan_train" in chosen or "gan_test" in chosen) and ref_f is not None and cand_f is not None:
        _transfer(report, reference, candidate, ref_f, cand_f, measured, measurer, options, run, chosen)
    return report


def _transfer(
    report: ScoreReport,
    reference: ImageSet,
    candidate: ImageSet,
    ref_f: np.ndarray,
    cand_f: np.ndarray,
    measured: np.ndarray | None,
    measurer: Any,
    options: ScoreOptions,
    run: _Run,
    chosen: tuple[str, ...],
) -> None:
    """GAN-train / GAN-test on Big/Small. Reference classes from its labels, or measured; candidate
    classes always measured (auto-labels, never the request)."""
    ref_angles = np.full((len(reference), 2), np.nan)
    if any(r is None for r in reference.records):
        if measurer is None:
            report.notes.append("GAN-train/test: the reference set is unlabelled and there is no angle model")
            return
        ref_angles = run.batched(
            "measure: reference",
            lambda ims: measured_angles(measure_each(measurer, list(ims))),
            reference.images,
            options.batch,
        )
    if measured is None:
        report.notes.append("GAN-train/test: no angle model to label the candidate set")
        return
    ry = image_classes(ref_angles, reference.records, options.threshold_deg)
    cy = image_classes(measured, None, options.threshold_deg)
    rk, ck = ry >= 0, cy >= 0
    for name, y in (("reference", ry[rk]), ("candidate", cy[ck])):
        if len(np.unique(y)) < 2:
            only = "none" if not len(y) else ("Big" if y[0] else "Small")
            report.notes.append(
                f"GAN-train/test not computed: every {name} image is {only} (needs both classes)"
            )
            return
    try:
        t = gan_train_test(ref_f[rk], ry[rk], cand_f[ck], cy[ck], seed=options.seed)
    except ValueError as e:
        report.notes.append(f"GAN-train/test not computed: {e}")
        return
    report.transfer = t
    if "gan_train" in chosen:
        report.metrics.append(MetricValue("gan_train", t.gan_train, 0.0, None, t.real))
    if "gan_test" in chosen:
        report.metrics.append(MetricValue("gan_test", t.gan_test, 0.0, None, t.synthetic))


__all__ = [
    "METRICS",
    "Cancelled",
    "MetricValue",
    "ScoreOptionError",
    "ScoreOptions",
    "ScoreReport",
    "image_classes",
    "resized",
    "score_sets",
]
