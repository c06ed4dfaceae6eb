"""Seeded, stratified train/val/test split (default ratio of the published set, 219/31/84,
published-methods §B).

Totals are exact (largest-remainder apportionment of the ratio), and each stratum (image-level Big/Small,
optionally × NA bins of the worst side) gets its share to within one image per split. The assignment
depends only on the records' file names, their labels and the seed, not on input order. Small sets: every
split with a non-zero ratio gets at least one image once there are enough images for that.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hipgen import anatomy
from hipgen.data.record import LabelRecord

SPLITS = ("train", "val", "test")
PUBLISHED_RATIO = (219, 31, 84)


@dataclass(frozen=True)
class Split:
    assignment: tuple[str, ...]  # split name per input record, in input order

    def indices(self, name: str) -> list[int]:
        return [i for i, s in enumerate(self.assignment) if s == name]

    @property
    def counts(self) -> dict[str, int]:
        return {s: self.assignment.count(s) for s in SPLITS}


def apportion(n: int, ratio: Sequence[float]) -> list[int]:
    """Largest-remainder counts for ``n`` items; ties go to the earlier split."""
    total = float(sum(ratio))
    if n < 0 or total <= 0 or any(r < 0 for r in ratio):
        raise ValueError(f"need n ≥ 0 and a non-negative ratio with a positive sum, got {n}, {ratio}")
    quota = [n * r / total for r in ratio]
    counts = [int(q) for q in quota]
    for i in sorted(range(len(ratio)), key=lambda i: (-(quota[i] - counts[i]), i))[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _ensure_nonempty(counts: list[int], ratio: Sequence[float]) -> list[int]:
    wanted = [i for i, r in enumerate(ratio) if r > 0]
    if sum(counts) < len(wanted):
        return counts
    for i in wanted:
        if counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            counts[donor] -= 1
            counts[i] += 1
    return counts


def stratum(
    record: LabelRecord,
    na_bins: Sequence[float] | None = None,
    threshold: float = anatomy.DEFAULT_THRESHOLD_DEG,
) -> tuple[str, int]:
    worst = min(record.na_left, record.na_right)
    return (
        anatomy.image_class(record.na_left, record.na_right, threshold),
        bisect.bisect_right(list(na_bins), worst) if na_bins else 0,
    )


def split_records(
    records: Sequence[LabelRecord],
    *,
    ratio: Sequence[float] = PUBLISHED_RATIO,
    seed: int = 0,
    na_bins: Sequence[float] | None = None,
    threshold: float = anatomy.DEFAULT_THRESHOLD_DEG,
) -> Split:
    """Assign each record to train/val/test. ``na_bins``: bin edges (degrees) on the worst side's NA,
    stratified on together with the Big/Small class."""
    if len(ratio) != len(SPLITS):
        raise ValueError(f"ratio needs {len(SPLITS)} parts (train, val, test), got {len(ratio)}")
    n = len(records)
    totals = _ensure_nonempty(apportion(n, ratio), ratio)
    groups: dict[tuple[str, int], list[int]] = {}
    for i in sorted(range(n), key=lambda i: (records[i].file_name, i)):
        groups.setdefault(stratum(records[i], na_bins, threshold), []).append(i)
    keys = sorted(groups)
    rng = np.random.default_rng(seed)
    members = {k: [groups[k][j] for j in rng.permutation(len(groups[k]))] for k in keys}

    # per-stratum counts: floors of the proportional quota, then the leftover (< 1 per cell) handed out so
    # that row sums are the stratum sizes and column sums the exact totals (Gale–Ryser greedy: the stratum
    # with most leftover first, to the split with most leftover)
    quota = {k: [len(groups[k]) * t / n for t in totals] for k in keys}
    cells = {k: [int(q) for q in quota[k]] for k in keys}
    col_left = [t - sum(cells[k][s] for k in keys) for s, t in enumerate(totals)]
    row_left = {k: len(groups[k]) - sum(cells[k]) for k in keys}
    for k in sorted(keys, key=lambda k: -row_left[k]):
        frac = [q - c for q, c in zip(quota[k], cells[k], strict=True)]
        for s in sorted(range(len(SPLITS)), key=lambda s: (-col_left[s], -frac[s], s))[: row_left[k]]:
            cells[k][s] += 1
            col_left[s] -= 1
    if any(col_left):  # cannot happen for feasible margins; a guard against a silent miscount
        raise AssertionError(f"split apportionment failed: {col_left}")

    assignment = [""] * n
    for k in keys:
        it = iter(members[k])
        for s, c in enumerate(cells[k]):
            for _ in range(c):
                assignment[next(it)] = SPLITS[s]
    return Split(tuple(assignment))
