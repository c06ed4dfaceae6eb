"""The generator's condition contract (no torch): scaling to model input and refusals naming the field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hipgen.generate.conditions import TRAINED_NA_RANGE, ConditionError, NaRequest, condition_vector


def test_condition_vector_scales_the_trained_range_to_unit_interval() -> None:
    lo, hi = TRAINED_NA_RANGE
    v = condition_vector([NaRequest(lo, hi), NaRequest(0.5 * (lo + hi), lo)])
    np.testing.assert_allclose(v, [[-1.0, 1.0], [0.0, -1.0]], atol=1e-6)
    assert v.dtype == np.float32 and v.shape == (2, 2)
    np.testing.assert_allclose(condition_vector(np.array([lo, hi])), [[-1.0, 1.0]], atol=1e-6)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (NaRequest(69.9, 100.0), "na_left"),
        (NaRequest(100.0, 131.0), "na_right"),
        (NaRequest(math.nan, 100.0), "na_left"),
        (NaRequest(100.0, math.inf), "na_right"),
    ],
)
def test_bad_angles_are_refused_naming_the_field(request_: NaRequest, field: str) -> None:
    with pytest.raises(ConditionError) as err:
        request_.validated()
    assert err.value.field == field and str(err.value).startswith(field)


def test_angles_inside_the_range_pass() -> None:
    assert NaRequest(70.0, 130.0).validated() == NaRequest(70.0, 130.0)
