"""The pure logic of a blind reader study: plan which images a reader sees, score what they answered.

A study shows ``per_class`` real and ``per_class`` synthetic radiographs in a seeded random order, each
under an opaque id that carries neither its truth nor its file name. Readers answer "real" or
"synthetic" with a confidence from 1 to 5. A reader who cannot tell the classes apart is right half the
time, so each reader's accuracy is tested against p = 0.5 (two-sided exact binomial test) and given a
95 % Clopper–Pearson interval; the published reference is 53 % (readers could not tell).
"""

from __future__ import annotations

import csv
import io
import math
import numbers
import secrets
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import binomtest

Label = Literal["real", "synthetic"]
LABELS: tuple[Label, Label] = ("real", "synthetic")
CHANCE = 0.5
PUBLISHED_ACCURACY = 0.53  # readers in the published study: indistinguishable from chance
CI_LEVEL = 0.95
CI_METHOD = "exact"  # Clopper–Pearson: conservative, the usual choice for small reader studies
ID_BYTES = 8

Confusion = tuple[tuple[int, int], tuple[int, int]]  # rows truth real/synthetic, columns said real/synthetic


# --- planning --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyItem:
    """One image of a study: ``item_id`` is all a reader's browser ever sees of it."""

    item_id: str
    source: str
    truth: Label
    position: int  # 0-based place in the order readers see


def _checked_set(name: str, paths: Sequence[str], per_class: int) -> list[str]:
    unique = sorted({str(p) for p in paths})
    if len(unique) != len(paths):
        raise ValueError(f"the {name} set lists {len(paths) - len(unique)} image(s) more than once")
    if len(unique) < per_class:
        raise ValueError(
            f"the {name} set has {len(unique)} images, fewer than the {per_class} the study needs"
        )
    return unique


def plan_study(
    real: Sequence[str],
    synthetic: Sequence[str],
    *,
    per_class: int | None = None,
    images: int | None = None,
    seed: int,
) -> list[StudyItem]:
    """``per_class`` images drawn without replacement from each set, shuffled together; or ``images`` in
    all, half of each kind (an odd count gives the extra image to a kind the seed picks, so chance stays
    50 % in expectation and a three-image pilot is possible).

    Balanced so that chance is exactly 50 % and a reader who always says one class scores 50 %. The
    inputs are sorted first, so the plan depends on the sets and the seed, not on listing order; the
    selection and order can be rebuilt from the seed, while ids are fresh OS randomness and say nothing
    about their image.
    """
    if (per_class is None) == (images is None):
        raise ValueError("give either per_class or images")
    rng = np.random.default_rng(seed)
    if images is not None:
        if images < 2:
            raise ValueError(f"images must be at least 2 (one of each kind), got {images}")
        extra = int(rng.integers(2)) if images % 2 else 0  # 0: real gets the odd image, 1: synthetic
        counts = {"real": images // 2 + (images % 2 and extra == 0), "synthetic": images // 2 + (extra == 1)}
    else:
        assert per_class is not None
        if per_class < 1:
            raise ValueError(f"per_class must be at least 1, got {per_class}")
        counts = {"real": per_class, "synthetic": per_class}
    sets = {
        "real": _checked_set("real", real, counts["real"]),
        "synthetic": _checked_set("synthetic", synthetic, counts["synthetic"]),
    }
    both = set(sets["real"]) & set(sets["synthetic"])
    if both:
        raise ValueError(f"{len(both)} image(s) are in both the real and the synthetic set, e.g. {min(both)}")
    chosen: list[tuple[str, Label]] = []
    for truth in LABELS:
        picks = rng.choice(len(sets[truth]), size=counts[truth], replace=False)
        chosen += [(sets[truth][i], truth) for i in sorted(picks)]
    order = rng.permutation(len(chosen))
    # ids from the OS's random source, never from the seeded generator: a reader sees every id, and
    # ids drawn from the seed would let them rebuild the plan (and every truth) from a guessed seed
    ids: list[str] = []
    while len(ids) < len(chosen):
        new = secrets.token_hex(ID_BYTES)
        if new not in ids:
            ids.append(new)
    return [
        StudyItem(item_id=ids[pos], source=chosen[i][0], truth=chosen[i][1], position=pos)
        for pos, i in enumerate(order)
    ]


# --- answers ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """One reader's call on one item; ``truth`` is copied from the plan when the answer is stored."""

    reader: str
    item_id: str
    truth: Label
    said: Label
    confidence: int  # 1 (guess) .. 5 (certain)
    seconds: float  # time from showing the image to the answer
    at: str  # ISO 8601 time of the answer

    def __post_init__(self) -> None:
        for name in ("truth", "said"):
            if getattr(self, name) not in LABELS:
                raise ValueError(f"{name} must be 'real' or 'synthetic', got {getattr(self, name)!r}")
        c = self.confidence
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 1 <= c <= 5:
            raise ValueError(f"confidence must be an integer from 1 to 5, got {self.confidence!r}")
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(f"seconds must be finite and not negative, got {self.seconds!r}")

    @property
    def correct(self) -> bool:
        return self.said == self.truth


# --- scoring ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReaderResult:
    """Scores of one reader, or of all answers pooled. Rates are None where their denominator is 0."""

    reader: str
    n: int
    correct: int
    accuracy: float | None
    ci_low: float  # 95 % Clopper–Pearson interval of the accuracy ([0, 1] with no answers)
    ci_high: float
    p_value: float  # two-sided exact binomial test against chance (1.0 with no answers)
    mean_confidence: float | None
    median_seconds: float | None
    sensitivity: float | None  # synthetic images called synthetic
    specificity: float | None  # real images called real
    confusion: Confusion


@dataclass(frozen=True)
class StudyResults:
    """Per-reader results (sorted by reader) and the pooled result over every answer.

    Pooling treats all answers as independent, which ignores that answers of one reader are correlated;
    read the per-reader tests first."""

    readers: tuple[ReaderResult, ...]
    pooled: ReaderResult


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def confusion_matrix(answers: Sequence[Answer]) -> Confusion:
    counts = [[0, 0], [0, 0]]
    for a in answers:
        counts[LABELS.index(a.truth)][LABELS.index(a.said)] += 1
    return (counts[0][0], counts[0][1]), (counts[1][0], counts[1][1])


def reader_result(reader: str, answers: Sequence[Answer]) -> ReaderResult:
    n = len(answers)
    correct = sum(a.correct for a in answers)
    if n:
        test = binomtest(correct, n, CHANCE, alternative="two-sided")
        ci = test.proportion_ci(confidence_level=CI_LEVEL, method=CI_METHOD)
        p_value, ci_low, ci_high = float(test.pvalue), float(ci.low), float(ci.high)
    else:
        p_value, ci_low, ci_high = 1.0, 0.0, 1.0
    (rr, rs), (sr, ss) = conf = confusion_matrix(answers)
    return ReaderResult(
        reader=reader,
        n=n,
        correct=correct,
        accuracy=_rate(correct, n),
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        mean_confidence=statistics.fmean(a.confidence for a in answers) if n else None,
        median_seconds=float(statistics.median(a.seconds for a in answers)) if n else None,
        sensitivity=_rate(ss, sr + ss),
        specificity=_rate(rr, rr + rs),
        confusion=conf,
    )


def study_results(answers: Sequence[Answer]) -> StudyResults:
    """Score a study. Each reader answers each item at most once (a second answer would count twice
    toward the test), so duplicates raise ValueError rather than being silently chosen between."""
    seen: set[tuple[str, str]] = set()
    by_reader: dict[str, list[Answer]] = {}
    for a in answers:
        key = (a.reader, a.item_id)
        if key in seen:
            raise ValueError(f"reader {a.reader!r} answered item {a.item_id} more than once")
        seen.add(key)
        by_reader.setdefault(a.reader, []).append(a)
    readers = tuple(reader_result(r, by_reader[r]) for r in sorted(by_reader))
    return StudyResults(readers=readers, pooled=reader_result("pooled", list(answers)))


# --- figure ----------------------------------------------------------------------------------------
def _accuracy_panel(ax: Any, results: StudyResults, published: float) -> None:
    rows = [*results.readers, results.pooled] if results.readers else []
    for x, r in enumerate(rows):
        pooled = r is results.pooled
        acc = r.accuracy if r.accuracy is not None else math.nan
        ax.errorbar(
            x,
            acc,
            yerr=[[max(0.0, acc - r.ci_low)], [max(0.0, r.ci_high - acc)]],
            fmt="D" if pooled else "o",
            color="#c0392b" if pooled else "#2c6fbb",
            markersize=7,
            capsize=4,
            elinewidth=1.5,
        )
    ax.axhline(CHANCE, color="0.35", linestyle="--", linewidth=1, label="chance 50%")
    ax.axhline(
        published, color="#8e44ad", linestyle=":", linewidth=1.6, label=f"published readers {published:.0%}"
    )
    ax.set_xticks(range(len(rows)), [r.reader if r is not results.pooled else "pooled" for r in rows])
    ax.tick_params(axis="x", labelrotation=30 if len(rows) > 4 else 0)
    ax.set_xlim(-0.6, max(len(rows), 1) - 0.4)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title("Reader accuracy: real vs synthetic")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    if not rows:
        ax.text(0.5, 0.75, "no answers yet", ha="center", transform=ax.transAxes, color="0.4")


def _confusion_panel(ax: Any, conf: Confusion) -> None:
    counts = np.asarray(conf, dtype=float)
    im = ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(counts.max(), 1.0))
    totals = counts.sum(axis=1)
    for (i, j), c in np.ndenumerate(counts):
        share = f"\n({c / totals[i]:.0%})" if totals[i] else ""
        dark = c > 0.6 * max(counts.max(), 1.0)
        ax.text(j, i, f"{int(c)}{share}", ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks([0, 1], LABELS)
    ax.set_yticks([0, 1], LABELS)
    ax.set_xlabel("reader said")
    ax.set_ylabel("truth")
    ax.set_title(f"Pooled confusion matrix (n = {int(counts.sum())})")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def results_plot_png(
    results: StudyResults, *, published: float = PUBLISHED_ACCURACY, dpi: int = 110
) -> bytes:
    """A 900×380 px summary: per-reader accuracy with CIs against chance and the published 53 % (left),
    the pooled confusion matrix (right). Drawn on a private Figure so it is safe in a web server's threads."""
    fig = Figure(figsize=(900 / dpi, 380 / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1.0]})
    _accuracy_panel(left, results, published)
    _confusion_panel(right, results.pooled.confusion)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


# --- CSV -------------------------------------------------------------------------------------------
def _cell(v: Any) -> Any:
    """Blank for None; text that a spreadsheet would run as a formula (reader names are typed by users)
    is quoted with a leading apostrophe."""
    if v is None:
        return ""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([[_cell(v) for v in row] for row in rows])
    return buf.getvalue().encode("utf-8")


ANSWER_COLUMNS = (*(f.name for f in fields(Answer)), "correct")
RESULT_COLUMNS = (
    "scope",
    *(f.name for f in fields(ReaderResult) if f.name != "confusion"),
    "real_said_real",
    "real_said_synthetic",
    "synthetic_said_real",
    "synthetic_said_synthetic",
)


def answers_csv(answers: Sequence[Answer]) -> bytes:
    """One row per answer, with whether it was correct."""
    return _csv(ANSWER_COLUMNS, [[*asdict(a).values(), a.correct] for a in answers])


def results_csv(results: StudyResults) -> bytes:
    """One row per reader (scope ``reader``) and a last row for the pooled answers (scope ``pooled``)."""
    rows = []
    for scope, r in [*(("reader", r) for r in results.readers), ("pooled", results.pooled)]:
        values = {k: v for k, v in asdict(r).items() if k != "confusion"}
        rows.append([scope, *values.values(), *r.confusion[0], *r.confusion[1]])
    return _csv(RESULT_COLUMNS, rows)
