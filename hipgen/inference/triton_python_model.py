"""Triton python-backend model that serves one ONNX file with ONNX Runtime on CPU.

Why it exists: the ``nvidia-pytriton`` wheel's ``tritonserver`` (the real server the integration tests
and CPU-only hosts run) ships the python backend only — no onnxruntime, no TensorRT backend — so
:mod:`hipgen.inference.triton_repo` copies this file to ``<name>/1/model.py`` beside the ONNX file.
Production images serve the same ONNX files with ``backend: "onnxruntime"`` configs instead.

``execute`` gets every request the dynamic batcher merged: it concatenates their inputs along the batch
axis, runs the session once and splits the outputs back per request (unbatched models run per request).
It runs inside the Triton python stub, not in hipgen: it imports only numpy, onnxruntime and
``triton_python_backend_utils``, which the stub provides.

Tensors cross the stub by DLPack, never ``Tensor.as_numpy()`` / ``pb_utils.Tensor(name, array)``: the
wheel's stub (Triton 2.51) was built against NumPy 1, and with NumPy 2 those read the dtype's item size
from the old descriptor layout — inputs come back with wrong values and outputs with zero bytes.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

# The stub renames a DLPack capsule it consumed "used_dlpack", not the standard "used_dltensor", so
# NumPy's capsule destructor would report an error for every output (the stub itself frees the tensor).
_USED_CAPSULE = b"used_dltensor"
_set_capsule_name = ctypes.pythonapi.PyCapsule_SetName
_set_capsule_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_set_capsule_name.restype = ctypes.c_int


def _output(name: str, x: np.ndarray) -> Any:
    capsule = np.ascontiguousarray(x).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_capsule_name(capsule, _USED_CAPSULE)
    return tensor


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.batched = int(config.get("max_batch_size", 0)) > 0
        # The shape each input has inside the model (a config reshape, e.g. dims [1] → reshape [] for the
        # generator's per-sample timestep), without the batch axis; None when the wire shape is kept.
        self.inputs = [(i["name"], _reshape(i)) for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        # An output with a config reshape leaves the model in its reshape shape and goes out in ``dims``.
        self.out_dims = [
            tuple(int(d) for d in o["dims"]) if _reshape(o) is not None else None for o in config["output"]
        ]

    def _feed(self, request: Any) -> dict[str, np.ndarray]:
        feed = {}
        for name, reshape in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                continue  # a missing required input: ONNX Runtime names it
            x = np.from_dlpack(tensor)
            if reshape is not None:
                x = x.reshape(self._lead(x) + reshape)
            feed[name] = x
        return feed

    def _lead(self, x: np.ndarray) -> tuple[int, ...]:
        return (x.shape[0],) if self.batched else ()

    def _response(self, outs: list[np.ndarray]) -> Any:
        tensors = []
        for name, dims, x in zip(self.outputs, self.out_dims, outs, strict=True):
            if dims is not None:
                x = x.reshape(self._lead(x) + dims)
            tensors.append(_output(name, x))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _run_one(self, request: Any) -> Any:
        try:
            return self._response(self.session.run(self.outputs, self._feed(request)))
        except Exception as e:  # this request fails alone; the server keeps serving
            error = pb_utils.TritonError(f"{type(e).__name__}: {e}")
            return pb_utils.InferenceResponse(output_tensors=[], error=error)

    def execute(self, requests: list[Any]) -> list[Any]:
        if not self.batched or len(requests) == 1:
            return [self._run_one(r) for r in requests]
        try:
            feeds = [self._feed(r) for r in requests]
            sizes = [len(next(iter(f.values()))) for f in feeds]
            merged = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
            outs = self.session.run(self.outputs, merged)
        except Exception:  # a request that does not fit the others: run each alone, so only it fails
            return [self._run_one(r) for r in requests]
        cuts = np.cumsum(sizes)[:-1]
        split = [np.split(o, cuts) for o in outs]
        return [self._response([s[i] for s in split]) for i in range(len(requests))]


def _reshape(tensor: dict[str, Any]) -> tuple[int, ...] | None:
    """The config ``reshape`` of an input or output (``()`` for ``reshape: { shape: [ ] }``), else None."""
    if "reshape" not in tensor:
        return None
    return tuple(int(d) for d in (tensor["reshape"] or {}).get("shape", []))
