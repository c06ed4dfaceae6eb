"""Reader-study planning and scoring, checked against hand-computed numbers."""

from __future__ import annotations

import csv
import io
from collections import Counter

import pytest
from PIL import Image
from scipy.stats import beta, binomtest

from hipgen.review.study import (
    Answer,
    StudyResults,
    answers_csv,
    plan_study,
    results_csv,
    results_plot_png,
    study_results,
)

REAL = [f"/data/real/real_{i:03d}.png" for i in range(12)]
SYNTH = [f"/data/synth/synthetic_{i:03d}.png" for i in range(9)]
AT = "2024-05-01T10:00:00+00:00"


def test_plan_is_balanced_shuffled_and_uses_each_image_once() -> None:
    plan = plan_study(REAL, SYNTH, per_class=6, seed=3)
    assert Counter(i.truth for i in plan) == {"real": 6, "synthetic": 6}
    assert [i.position for i in plan] == list(range(12))
    assert len({i.source for i in plan}) == 12 and len({i.item_id for i in plan}) == 12
    assert all(i.source in (REAL if i.truth == "real" else SYNTH) for i in plan)
    assert [i.truth for i in plan] != sorted(i.truth for i in plan)  # not grouped by class


def test_plan_is_deterministic_per_seed_and_ignores_listing_order() -> None:
    def order(plan: list) -> list[tuple[str, str, int]]:
        return [(i.source, i.truth, i.position) for i in plan]

    plan = plan_study(REAL, SYNTH, per_class=5, seed=7)
    again = plan_study(list(reversed(REAL)), SYNTH[::-1], per_class=5, seed=7)
    assert order(plan) == order(again)
    other = plan_study(REAL, SYNTH, per_class=5, seed=8)
    assert order(other) != order(plan)
    # ids are never a function of the seed: a reader who sees them cannot rebuild the plan
    assert {i.item_id for i in again}.isdisjoint(i.item_id for i in plan)


def test_ids_reveal_neither_truth_nor_file() -> None:
    for item in plan_study(REAL, SYNTH, per_class=9, seed=0):
        ident = item.item_id.lower()
        stem = item.source.rsplit("/", 1)[-1].removesuffix(".png")
        assert len(ident) == 16 and all(c in "0123456789abcdef" for c in ident)
        assert "real" not in ident and "synthetic" not in ident and "synth" not in ident
        assert stem not in ident


def test_plan_errors_name_the_set() -> None:
    with pytest.raises(ValueError, match="synthetic set has 9 images, fewer than the 10 the study needs"):
        plan_study(REAL, SYNTH, per_class=10, seed=0)
    with pytest.raises(ValueError, match="real set"):
        plan_study(REAL[:2], SYNTH, per_class=3, seed=0)
    with pytest.raises(ValueError, match="both"):
        plan_study(REAL, [*SYNTH, REAL[0]], per_class=2, seed=0)
    with pytest.raises(ValueError, match="more than once"):
        plan_study([*REAL, REAL[1]], SYNTH, per_class=2, seed=0)
    with pytest.raises(ValueError, match="per_class"):
        plan_study(REAL, SYNTH, per_class=0, seed=0)


def _answers() -> list[Answer]:
    """ann: real → 4 real / 1 synthetic, synthetic → 2 real / 3 synthetic (7 of 10 right);
    ben says "real" to everything (5 of 10)."""
    truths = ["real"] * 5 + ["synthetic"] * 5
    ann = ["real", "real", "real", "real", "synthetic", "real", "real", "synthetic", "synthetic", "synthetic"]
    out = [
        Answer("ann", f"id{k}", t, s, confidence=k % 5 + 1, seconds=float(k + 1), at=AT)
        for k, (t, s) in enumerate(zip(truths, ann, strict=True))
    ]
    out += [
        Answer("ben", f"id{k}", t, "real", confidence=2, seconds=4.0, at=AT) for k, t in enumerate(truths)
    ]
    return out


def test_reader_statistics_match_hand_computed_values() -> None:
    ann, ben = study_results(_answers()).readers
    assert (ann.reader, ann.n, ann.correct, ann.accuracy) == ("ann", 10, 7, 0.7)
    # P(X >= 7) + P(X <= 3) for X ~ Bin(10, 1/2) = 2 * (120 + 45 + 10 + 1) / 1024
    assert ann.p_value == pytest.approx(352 / 1024) == binomtest(7, 10).pvalue
    assert ann.ci_low == pytest.approx(beta.ppf(0.025, 7, 4))  # Clopper–Pearson
    assert ann.ci_high == pytest.approx(beta.ppf(0.975, 8, 3))
    assert ann.confusion == ((4, 1), (2, 3))
    assert (ann.sensitivity, ann.specificity) == (0.6, 0.8)
    assert (ann.mean_confidence, ann.median_seconds) == (3.0, 5.5)
    assert (ben.correct, ben.p_value, ben.sensitivity, ben.specificity) == (5, 1.0, 0.0, 1.0)
    assert ben.confusion == ((5, 0), (5, 0))


def test_pooled_counts_every_answer() -> None:
    pooled = study_results(_answers()).pooled
    assert (pooled.reader, pooled.n, pooled.correct, pooled.accuracy) == ("pooled", 20, 12, 0.6)
    assert pooled.confusion == ((9, 1), (7, 3))
    assert pooled.p_value == pytest.approx(binomtest(12, 20).pvalue)
    assert pooled.sensitivity == 0.3 and pooled.specificity == 0.9


def test_no_answers_is_not_an_error() -> None:
    results = study_results([])
    assert results.readers == ()
    p = results.pooled
    assert (p.n, p.correct, p.accuracy, p.p_value, p.ci_low, p.ci_high) == (0, 0, None, 1.0, 0.0, 1.0)
    assert p.sensitivity is None and p.mean_confidence is None and p.confusion == ((0, 0), (0, 0))
    rows = list(csv.DictReader(io.StringIO(results_csv(results).decode())))
    assert len(rows) == 1 and rows[0]["scope"] == "pooled" and rows[0]["accuracy"] == ""
    assert results_plot_png(results).startswith(b"\x89PNG")


def test_bad_answers_are_refused() -> None:
    with pytest.raises(ValueError, match="confidence"):
        Answer("a", "x", "real", "real", confidence=6, seconds=1.0, at=AT)
    with pytest.raises(ValueError, match="confidence"):
        Answer("a", "x", "real", "real", confidence=2.5, seconds=1.0, at=AT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="said"):
        Answer("a", "x", "real", "fake", confidence=3, seconds=1.0, at=AT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seconds"):
        Answer("a", "x", "real", "real", confidence=3, seconds=-1.0, at=AT)
    twice = _answers()[:1] * 2
    with pytest.raises(ValueError, match="more than once"):
        study_results(twice)


def test_plot_is_a_png_of_the_requested_size() -> None:
    png = results_plot_png(study_results(_answers()))
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and abs(img.width - 900) <= 2 and abs(img.height - 380) <= 2
    assert 10_000 < len(png) < 500_000


def test_csvs_round_trip_through_dictreader() -> None:
    answers = [*_answers(), Answer("=HYPERLINK()", "id0", "real", "real", 5, 0.5, AT)]
    rows = list(csv.DictReader(io.StringIO(answers_csv(answers).decode())))
    assert len(rows) == len(answers)
    first = rows[0]
    assert first["reader"] == "ann" and first["truth"] == "real" and first["correct"] == "True"
    assert int(first["confidence"]) == 1 and float(first["seconds"]) == 1.0 and first["at"] == AT
    assert rows[-1]["reader"] == "'=HYPERLINK()"  # not run as a formula by a spreadsheet

    results: StudyResults = study_results(_answers())
    rows = list(csv.DictReader(io.StringIO(results_csv(results).decode())))
    assert [(r["scope"], r["reader"]) for r in rows] == [
        ("reader", "ann"),
        ("reader", "ben"),
        ("pooled", "pooled"),
    ]
    ann = rows[0]
    assert float(ann["accuracy"]) == 0.7 and float(ann["p_value"]) == results.readers[0].p_value
    cells = ("real_said_real", "real_said_synthetic", "synthetic_said_real", "synthetic_said_synthetic")
    assert [int(ann[c]) for c in cells] == [4, 1, 2, 3]
    assert [int(rows[2][c]) for c in cells] == [9, 1, 7, 3]


def test_an_odd_study_size_is_as_balanced_as_it_can_be_and_the_seed_picks_the_extra_kind() -> None:
    extras = set()
    for seed in range(12):
        plan = plan_study(REAL, SYNTH, images=3, seed=seed)
        counts = Counter(it.truth for it in plan)
        assert len(plan) == 3 and sorted(counts.values()) == [1, 2]
        extras.add(counts.most_common(1)[0][0])
    assert extras == {"real", "synthetic"}
    assert Counter(it.truth for it in plan_study(REAL, SYNTH, images=8, seed=1)) == {
        "real": 4,
        "synthetic": 4,
    }
    with pytest.raises(ValueError, match="either per_class or images"):
        plan_study(REAL, SYNTH, per_class=2, images=4, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        plan_study(REAL, SYNTH, images=1, seed=0)
