"""What a generator is conditioned on, and how a requested angle pair becomes model input.

One place so that training, the exported ONNX graph and GenerateService agree exactly: the NA pair is
scaled to [-1, 1] over the range the generator was trained on, and anything outside that range is
refused with the field named (a diffusion model extrapolates badly — it would return a plausible image
with an angle nobody asked for).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hipgen.errors import FieldError

TRAINED_NA_RANGE = (70.0, 130.0)  # degrees; the phantom training sets' uniform NA range


class ConditionError(FieldError):
    """A requested condition the generator cannot honour; ``field`` names the offending request field."""


@dataclass(frozen=True)
class NaRequest:
    """A requested Norberg-angle pair in degrees (patient sides)."""

    na_left: float
    na_right: float

    def problems(self, na_range: tuple[float, float] = TRAINED_NA_RANGE) -> list[ConditionError]:
        """Every side the generator cannot honour (both are checked, so a caller reports both at once)."""
        lo, hi = na_range
        out = []
        for name in ("na_left", "na_right"):
            v = getattr(self, name)
            if not np.isfinite(v):
                out.append(ConditionError(name, f"must be a finite angle in degrees, got {v!r}"))
            elif not lo <= v <= hi:
                out.append(
                    ConditionError(name, f"{v:g}° is outside the generator's trained range {lo:g}–{hi:g}°")
                )
        return out

    def validated(self, na_range: tuple[float, float] = TRAINED_NA_RANGE) -> NaRequest:
        """This request, or the first :class:`ConditionError`."""
        problems = self.problems(na_range)
        if problems:
            raise problems[0]
        return self


def condition_vector(
    requests: list[NaRequest] | np.ndarray, na_range: tuple[float, float] = TRAINED_NA_RANGE
) -> np.ndarray:
    """(N, 2) float32 [left, right] scaled to [-1, 1] over ``na_range`` — the generator's ``na`` input."""
    if isinstance(requests, np.ndarray):
        na = np.asarray(requests, np.float64).reshape(-1, 2)
    else:
        na = np.array([[r.na_left, r.na_right] for r in requests], np.float64).reshape(-1, 2)
    lo, hi = na_range
    return ((na - lo) / (hi - lo) * 2.0 - 1.0).astype(np.float32)


__all__ = ["TRAINED_NA_RANGE", "ConditionError", "NaRequest", "condition_vector"]
