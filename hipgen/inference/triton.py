"""``TritonBackend``: the :class:`hipgen.inference.backend.Backend` protocol over a Triton server's gRPC
API (DESIGN §4), so the services run unchanged on a remote Triton (``HIPGEN_BACKEND=triton``).

It answers like :class:`~hipgen.inference.backend.OrtBackend` on the same inputs: inputs are cast to the
dtypes the model declares, batch-only inputs (the generator's ``timestep``/``keep``, shape ``(N,)``)
travel in the config's wire shape ``(N, 1)`` and outputs come back in the model's shapes, in model
order; a batch larger than the model's ``max_batch_size`` is split into several requests.

``model_info(model).manifest`` is the model's MANIFEST.json, read from the config string parameter
``hipgen_manifest`` that :mod:`hipgen.inference.triton_repo` writes into every served config (Triton's
metadata has no room for it); a config without that parameter gives an empty manifest.

Errors: a model the server does not serve → ``ModelNotFoundError``; a server that cannot be reached or
does not answer in time → ``BackendUnavailableError`` naming the URL; anything else the server refuses →
:class:`TritonError`. One gRPC channel is shared by all threads (gRPC calls are thread-safe); model
metadata and config are fetched once per model and cached (a NOT_FOUND drops the entry, so a model
reloaded under the same name is described afresh after it was gone).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hipgen.inference.backend import BackendUnavailableError, ModelInfo, ModelNotFoundError, TensorSpec
from hipgen.inference.triton_repo import MANIFEST_PARAMETER

# Triton wire data types → the ONNX type strings OrtBackend reports, and the numpy dtype to send.
_TRITON_TYPES: dict[str, tuple[str, Any]] = {
    "FP32": ("tensor(float)", np.float32),
    "FP16": ("tensor(float16)", np.float16),
    "FP64": ("tensor(double)", np.float64),
    "INT64": ("tensor(int64)", np.int64),
    "INT32": ("tensor(int32)", np.int32),
    "INT16": ("tensor(int16)", np.int16),
    "INT8": ("tensor(int8)", np.int8),
    "UINT64": ("tensor(uint64)", np.uint64),
    "UINT32": ("tensor(uint32)", np.uint32),
    "UINT16": ("tensor(uint16)", np.uint16),
    "UINT8": ("tensor(uint8)", np.uint8),
    "BOOL": ("tensor(bool)", np.bool_),
    "BYTES": ("tensor(string)", np.object_),
}
# Reconnect quickly after a server restart (gRPC's default backoff grows to 120 s, failing every call
# meanwhile); messages as large as tritonclient allows.
_MAX_MESSAGE = 2**31 - 1
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # with a `dns:///triton:8001` URL and a headless Service: calls spread over every Triton pod
    ("grpc.lb_policy_name", "round_robin"),
]


class TritonError(RuntimeError):
    """The Triton server refused or failed a call (bad input, a model error); ``status`` is its gRPC code."""

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Tensor:
    name: str
    datatype: str  # Triton's, e.g. "FP32"
    dims: tuple[int, ...]  # on the wire, without the batch axis (-1: variable)
    reshape: tuple[int, ...] | None  # inside the model (config reshape), without the batch axis


@dataclass(frozen=True)
class _Served:
    info: ModelInfo
    max_batch_size: int  # 0: no batch axis
    inputs: dict[str, _Tensor]
    outputs: tuple[_Tensor, ...]


class TritonBackend:
    """A Triton server at ``url`` (``host:port`` of its gRPC endpoint).

    ``timeout_s`` bounds each inference call, ``probe_timeout_s`` each ``ready`` probe and metadata call.
    """

    def __init__(self, url: str, *, timeout_s: float = 60.0, probe_timeout_s: float = 5.0) -> None:
        import tritonclient.grpc as grpcclient

        self.url = url
        self.timeout_s = timeout_s
        self.probe_timeout_s = probe_timeout_s
        self._grpcclient = grpcclient
        self._client = grpcclient.InferenceServerClient(url, channel_args=_CHANNEL_ARGS)
        self._served_models: dict[str, _Served] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- errors -----------------------------------------------------------------------------------
    def _error(self, err: Any, model: str, timeout_s: float) -> Exception:
        """The hipgen exception for a tritonclient ``InferenceServerException`` (its status is the gRPC
        code as text, e.g. "StatusCode.NOT_FOUND"; None for errors raised by the client itself)."""
        status = err.status() or ""
        message = err.message() or ""
        if status == "StatusCode.NOT_FOUND" or "unknown model" in message:  # "... has no available versions"
            with self._lock:
                self._served_models.pop(model, None)  # unloaded: fetch its metadata again once it is back
            return ModelNotFoundError(
                f"model {model!r} is not served by the Triton server at {self.url}: {message}"
            )
        if status == "StatusCode.UNAVAILABLE":
            return BackendUnavailableError(f"Triton server at {self.url} is unreachable: {message}")
        if status == "StatusCode.DEADLINE_EXCEEDED":
            return BackendUnavailableError(
                f"Triton server at {self.url} did not answer within {timeout_s:g} s"
            )
        return TritonError(f"Triton server at {self.url}: {message}", status or None)

    # --- metadata ---------------------------------------------------------------------------------
    def _served(self, model: str) -> _Served:
        with self._lock:
            cached = self._served_models.get(model)
        if cached is not None:
            return cached
        from tritonclient.utils import InferenceServerException

        try:
            meta = self._client.get_model_metadata(model, client_timeout=self.probe_timeout_s)
            config = self._client.get_model_config(model, client_timeout=self.probe_timeout_s).config
        except InferenceServerException as e:
            raise self._error(e, model, self.probe_timeout_s) from None
        served = _describe(model, meta, config)
        with self._lock:
            self._served_models[model] = served
        return served

    def model_info(self, model: str) -> ModelInfo:
        return self._served(model).info

    def ready(self, model: str | None = None) -> bool:
        """Server ready (``model`` None) or that model ready; False, never an exception, when the server
        cannot be reached."""
        try:
            if model is None:
                return bool(self._client.is_server_ready(client_timeout=self.probe_timeout_s))
            return bool(self._client.is_model_ready(model, client_timeout=self.probe_timeout_s))
        except Exception:  # InferenceServerException, a closed channel: not ready
            return False

    # --- inference --------------------------------------------------------------------------------
    def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        served = self._served(model)
        arrays = {name: _to_wire(served, name, value) for name, value in inputs.items()}
        limit = served.max_batch_size
        sizes = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
        n = sizes.pop() if len(sizes) == 1 else 0  # inputs that disagree: the server refuses them whole
        if limit <= 0 or n <= limit:
            return self._infer_once(model, served, arrays)
        parts = [
            self._infer_once(model, served, {k: a[i : i + limit] for k, a in arrays.items()})
            for i in range(0, n, limit)
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _infer_once(
        self, model: str, served: _Served, arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        grpcclient = self._grpcclient
        try:
            request = []
            for name, a in arrays.items():
                spec = served.inputs.get(name)
                datatype = spec.datatype if spec else np_to_triton_dtype(a.dtype)  # unknown: the server says
                request.append(grpcclient.InferInput(name, list(a.shape), datatype))
                request[-1].set_data_from_numpy(a)
            wanted = [grpcclient.InferRequestedOutput(o.name) for o in served.outputs]
            result = self._client.infer(model, request, outputs=wanted, client_timeout=self.timeout_s)
        except InferenceServerException as e:
            raise self._error(e, model, self.timeout_s) from None
        out = {}
        for o in served.outputs:
            x = result.as_numpy(o.name)
            if o.reshape is not None:
                x = x.reshape(x.shape[:1] + o.reshape if served.max_batch_size > 0 else o.reshape)
            out[o.name] = x
        return out


def _to_wire(served: _Served, name: str, value: Any) -> np.ndarray:
    """``value`` in the dtype and wire shape Triton expects for input ``name``."""
    spec = served.inputs.get(name)
    if spec is None:
        return np.ascontiguousarray(value)
    x = np.ascontiguousarray(value, _TRITON_TYPES.get(spec.datatype, ("", None))[1])
    if spec.reshape is not None:
        batched = served.max_batch_size > 0
        if (x.shape[1:] if batched else x.shape) == spec.reshape:
            x = x.reshape(x.shape[:1] + spec.dims if batched else spec.dims)
    return x


def _config_tensor(entry: Any) -> _Tensor:
    from tritonclient.grpc import model_config_pb2 as mc

    datatype = mc.DataType.Name(entry.data_type).removeprefix("TYPE_").replace("STRING", "BYTES")
    reshape = tuple(int(d) for d in entry.reshape.shape) if entry.HasField("reshape") else None
    return _Tensor(entry.name, datatype, tuple(int(d) for d in entry.dims), reshape)


def _describe(model: str, meta: Any, config: Any) -> _Served:
    """What the client needs of a served model: wire shapes, output order, and the ModelInfo OrtBackend
    reports for the same ONNX file (dtypes as ONNX type strings, shapes as the model sees them with the
    batch axis named "batch")."""
    batched = config.max_batch_size > 0
    in_config = {t.name: _config_tensor(t) for t in [*config.input, *config.output]}

    def tensor(t: Any) -> _Tensor:  # the config's entry, else the metadata's (without the batch axis)
        return in_config.get(t.name) or _Tensor(t.name, t.datatype, tuple(t.shape)[int(batched) :], None)

    def spec(t: _Tensor) -> TensorSpec:
        dims = t.reshape if t.reshape is not None else t.dims
        shape = (("batch",) if batched else ()) + tuple(d if d >= 0 else "?" for d in dims)
        return TensorSpec(t.name, _TRITON_TYPES.get(t.datatype, (f"triton({t.datatype})", None))[0], shape)

    inputs = [tensor(t) for t in meta.inputs]
    outputs = tuple(tensor(t) for t in meta.outputs)
    params = config.parameters
    raw = params[MANIFEST_PARAMETER].string_value if MANIFEST_PARAMETER in params else ""
    manifest = json.loads(raw) if raw else {}
    versions = sorted(meta.versions, key=lambda v: (len(v), v))  # numeric order of "1", "2", "10"
    info = ModelInfo(
        name=model,
        version=str(manifest.get("version", versions[-1] if versions else "")),
        inputs=tuple(spec(t) for t in inputs),
        outputs=tuple(spec(t) for t in outputs),
        manifest=manifest,
    )
    return _Served(info, int(config.max_batch_size), {t.name: t for t in inputs}, outputs)
