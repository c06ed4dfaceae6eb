"""Angle fidelity of a generator (the headline metric of the generators): how well the Norberg angles
*measured* on generated images follow the angles that were *requested*. Pure numpy.

Per side (left, right) and pooled: Pearson r (does the measured angle follow the request at all — the
published generators reach ≤ 0.27), R² of measured against the identity (1 − SS(measured − requested) /
SS(requested − mean): 1 only when they agree, negative when worse than always answering the mean), MAE
and bias (mean measured − requested), in degrees.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product

import numpy as np

DEFAULT_GRID = (75.0, 87.5, 100.0, 112.5, 125.0)  # degrees per side; left and right independent


@dataclass(frozen=True)
class FidelityReport:
    n: int
    pearson_r: float
    r2: float
    mae: float  # degrees
    rmse: float  # degrees
    bias: float  # degrees, measured − requested
    within_5: float  # fraction of |measured − requested| ≤ 5°

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def fidelity_grid(values: tuple[float, ...] = DEFAULT_GRID) -> np.ndarray:
    """Every (left, right) pair of ``values``: (len², 2) degrees, left and right varied independently."""
    return np.array(list(product(values, values)), np.float64)


def _report(requested: np.ndarray, measured: np.ndarray) -> FidelityReport:
    req, mea = np.asarray(requested, np.float64).ravel(), np.asarray(measured, np.float64).ravel()
    ok = np.isfinite(mea) & np.isfinite(req)  # an image without a request or a measurement has no error
    req, mea = req[ok], mea[ok]
    err = mea - req
    ss_tot = float(((req - req.mean()) ** 2).sum()) if len(req) else 0.0
    r = (
        float(np.corrcoef(req, mea)[0, 1])
        if len(req) > 1 and req.std() > 0 and mea.std() > 0
        else float("nan")
    )
    return FidelityReport(
        n=int(len(req)),
        pearson_r=r,
        r2=1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else float("nan"),
        mae=float(np.abs(err).mean()) if len(err) else float("nan"),
        rmse=float(np.sqrt((err**2).mean())) if len(err) else float("nan"),
        bias=float(err.mean()) if len(err) else float("nan"),
        within_5=float((np.abs(err) <= 5.0).mean()) if len(err) else float("nan"),
    )


def angle_fidelity(requested: np.ndarray, measured: np.ndarray) -> dict[str, FidelityReport]:
    """``requested``, ``measured``: (N, 2) [left, right] degrees (NaN where nothing could be measured)
    → reports for ``left``, ``right`` and ``both`` (the two sides pooled)."""
    req, mea = np.asarray(requested, np.float64), np.asarray(measured, np.float64)
    if req.shape != mea.shape or req.ndim != 2 or req.shape[1] != 2:
        raise ValueError(f"requested and measured must both be (N, 2), got {req.shape} and {mea.shape}")
    return {
        "left": _report(req[:, 0], mea[:, 0]),
        "right": _report(req[:, 1], mea[:, 1]),
        "both": _report(req, mea),
    }


__all__ = ["DEFAULT_GRID", "FidelityReport", "angle_fidelity", "fidelity_grid"]
