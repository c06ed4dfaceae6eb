"""OrtBackend's bound on concurrent runs of one model (``max_concurrent_runs``, the setting
``ort_max_concurrent_runs``): at most that many ``InferenceSession.run`` calls in flight, the others wait
their turn and still get their own answer."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hipgen.inference import make_backend
from hipgen.inference.backend import OrtBackend
from hipgen.settings import Settings


def _identity_repo(root: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (root / "ident" / "1").mkdir(parents=True)
    onnx.save(model, str(root / "ident" / "1" / "model.onnx"))
    return root


class _CountingSession:
    """Delegates to the real session, holding each run open a moment and counting runs in flight."""

    def __init__(self, real: Any) -> None:
        self.real, self.now, self.most = real, 0, 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.05)
        try:
            return self.real.run(names, feed)
        finally:
            with self._lock:
                self.now -= 1


@pytest.mark.parametrize("limit,expected_most", [(1, 1), (2, 2), (None, 8)])
def test_runs_of_one_model_in_flight_are_bounded(
    tmp_path: Path, limit: int | None, expected_most: int
) -> None:
    backend = OrtBackend(_identity_repo(tmp_path), max_concurrent_runs=limit)
    backend.model_info("ident")  # loads the session
    spy = _CountingSession(backend._sessions["ident"])
    backend._sessions["ident"] = spy
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(8)

    def call(i: int) -> None:
        start.wait()
        results[i] = backend.infer("ident", {"x": np.full((1, 4), i, np.float32)})["y"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert spy.most == expected_most
    assert all(np.array_equal(results[i], np.full((1, 4), i, np.float32)) for i in range(8))


def test_the_setting_reaches_the_backend_and_zero_means_no_limit(tmp_path: Path) -> None:
    assert make_backend(Settings(model_repository=tmp_path)).max_concurrent_runs == 2  # the default
    assert (
        make_backend(Settings(model_repository=tmp_path, ort_max_concurrent_runs=0)).max_concurrent_runs
        is None
    )
    with pytest.raises(ValueError, match="max_concurrent_runs"):
        OrtBackend(tmp_path, max_concurrent_runs=0)
