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
from hipgen.metrics.baseline import improvement_factor, noise_image, noise_images
from hipgen.metrics.distribution import frechet_distance, kid, mmd_rbf, precision_recall
from hipgen.metrics.fidelity import FidelityReport, angle_fidelity
from hipgen.metrics.memorisation import DEFAULT_THRESHOLD, Memorisation, memorisation
from hipgen.metrics.structural import diversity, ms_ssim, ms_ssim_min_side, ssim
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
        if size < ms_ssim_min_side() and any(m.startswith("ms_ssim") for m in self.chosen()):
            raise ScoreOptionError("image_size", f"MS-SSIM needs ≥ {ms_ssim_min_side()} px, got {size}")
        return size

    def validate(self) -> None:
        """Raise :class:`ScoreOptionError` for the first bad option, before any image is read."""
        self.chosen()
        self.structural_size()


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


class NoiseSet(Sequence[np.ndarray]):
    """The noise baseline as a lazy image sequence: images drawn when a batch asks for them."""

    def __init__(self, count: int, shape: tuple[int, int], seed: int) -> None:
        self.count, self.shape, self.seed = count, shape, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [noise_image(k, self.shape, self.seed) for k in range(*i.indices(self.count))]
        return noise_image(int(i), self.shape, self.seed)


def _median_shape(s: ImageSet) -> tuple[int, int]:
    pixels = getattr(s.images, "pixels", s.images)  # the 8-bit store when there is one: no conversion
    h, w = np.median([np.shape(p) for p in pixels], axis=0)
    return int(h), int(w)


class _Resized(Sequence[np.ndarray]):
    """``images`` resized to ``size``² when indexed, each at most once (diversity touches ≤ 2 × pairs)."""

    def __init__(self, images: Sequence[np.ndarray], size: int) -> None:
        self.images, self.size, self._cache = images, size, {}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, k: Any) -> Any:
        if k not in self._cache:
            self._cache[k] = resized([self.images[k]], self.size)[0].astype(np.float32)
        return self._cache[k]


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

    def measured(self, stage: str, measurer: Any, images: Sequence[np.ndarray], batch: int) -> np.ndarray:
        """(N, 2) [left, right] angles the angle model measures, NaN where it finds no hips."""
        return self.batched(
            stage, lambda ims: measured_angles(measure_each(measurer, list(ims))), images, batch
        )


def _feature_metrics(
    chosen: tuple[str, ...], ref: np.ndarray, cand: np.ndarray, noise: np.ndarray | None, opt: ScoreOptions
) -> list[MetricValue]:
    out: list[MetricValue] = []
    n = len(cand)
    if "fid" in chosen:
        base = frechet_distance(ref, noise) if noise is not None else None
        out.append(MetricValue("fid", frechet_distance(ref, cand), 0.0, base, n))
    if "kid" in chosen:
        # subsets of at most half the smaller set: subsets as large as a whole set would all be that set,
        # and their spread (the standard error) would say nothing. The estimator is unbiased at any size.
        size = min(opt.kid_subset_size, max(2, min(len(ref), len(cand)) // 2))
        args = {"subsets": opt.kid_subsets, "subset_size": size, "seed": opt.seed}
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
    """Paired (M)S-SSIM over the first min(N_ref, N_cand) images and diversity over random candidate
    pairs, images resized a batch at a time (never the whole set at 256² in float64)."""
    size = opt.structural_size()
    paired = [m for m in ("ssim", "ms_ssim") if m in chosen]
    diverse = [m for m in ("ssim_diversity", "ms_ssim_diversity") if m in chosen]
    out: list[MetricValue] = []
    fns = {"ssim": ssim, "ms_ssim": ms_ssim}
    n = min(len(ref), len(cand))
    if paired:
        vals: dict[str, list[np.ndarray]] = {m: [] for m in paired}
        base: dict[str, list[np.ndarray]] = {m: [] for m in paired}
        run.step("structural: paired", 0, n)
        for i in range(0, n, opt.batch):
            end = min(i + opt.batch, n)
            r, c = resized(ref.images[i:end], size), resized(cand.images[i:end], size)
            z = noise_images(len(r), (size, size), opt.seed, start=i) if opt.noise_baseline else None
            for m in paired:
                vals[m].append(fns[m](r, c))
                if z is not None:
                    base[m].append(fns[m](r, z))
            run.step("structural: paired", min(i + opt.batch, n), n)
        for m in paired:
            v = np.concatenate(vals[m])
            b = float(np.concatenate(base[m]).mean()) if base[m] else None
            out.append(MetricValue(m, float(v.mean()), float(v.std() / math.sqrt(len(v))), b, len(v)))
    if diverse and len(cand) >= 2:
        views = _Resized(cand.images, size)
        noise = NoiseSet(len(cand), (size, size), opt.seed)
        for m in diverse:
            kw = {
                "pairs": opt.diversity_pairs,
                "seed": opt.seed,
                "multiscale": m.startswith("ms_"),
                "batch": opt.batch,
            }
            d = diversity(
                views, on_batch=lambda done, total, m=m: run.step(f"structural: {m}", done, total), **kw
            )
            # lower is more diverse; noise is the most diverse set possible: a floor, not a target
            base = diversity(noise, **kw).mean if opt.noise_baseline else None
            out.append(MetricValue(m, d.mean, d.std / math.sqrt(d.pairs), base, d.pairs))
    return out


def score_sets(
    reference: ImageSet,
    candidate: ImageSet,
    options: ScoreOptions,
    *,
    backbone: FeatureBackbone,
    measurer: Any = None,
    training: ImageSet | None = None,
    on_progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> ScoreReport:
    """Score ``candidate`` against ``reference``. ``measurer`` (an AngleMeasurer) is needed for angle
    fidelity and for the classes of unlabelled images (GAN-train/test). Memorisation looks for copies of
    ``training`` (the generator's own training images) when given, else of ``reference``."""
    options.validate()
    chosen = options.chosen()
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
            shape = _median_shape(candidate)
            noise = NoiseSet(len(candidate), shape, options.seed)
            noise_f = run.batched("features: noise baseline", backbone, noise, options.batch)
        report.metrics += _feature_metrics(chosen, ref_f, cand_f, noise_f, options)
    report.metrics += _structural_metrics(chosen, reference, candidate, options, run)
    measured = None
    if measurer is not None and ("angle_fidelity" in chosen or "gan_train" in chosen or "gan_test" in chosen):
        measured = run.measured("measure: candidate", measurer, candidate.images, options.batch)
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
        train_f = (
            ref_f
            if training is None
            else run.batched("features: training", backbone, training.images, options.batch)
        )
        report.memorisation = memorisation(train_f, cand_f, threshold=options.memorisation_threshold)
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
        ref_angles = run.measured("measure: reference", measurer, reference.images, options.batch)
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
