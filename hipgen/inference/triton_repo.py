"""Triton model repositories built from a hipgen model repository (DESIGN §4).

The committed ``model_repository/<name>/config.pbtxt`` files are the production configs for the
official Triton images: ``backend: "onnxruntime"`` (the same backend as the older
``platform: "onnxruntime_onnx"``), dynamic batching, CPU instance groups. Three things they cannot do
alone, which this module does by writing a *served* repository from them:

* reach the client's ``model_info(...).manifest``: Triton's model metadata has no room for a manifest, so
  every served config carries ``MANIFEST.json`` as the string parameter :data:`MANIFEST_PARAMETER`,
  which :class:`hipgen.inference.triton.TritonBackend` reads back from the model config;
* run where only the ``nvidia-pytriton`` wheel's ``tritonserver`` exists (CPU hosts, the integration
  tests): that build has the python backend only — no onnxruntime backend — so target ``python``
  serves each ONNX file through :mod:`hipgen.inference.triton_python_model` (ONNX Runtime inside the
  python stub, the dynamic batcher's requests merged into one run);
* run on a GPU: target ``gpu`` puts the instances on ``KIND_GPU``, turns on ONNX Runtime's TensorRT
  accelerator and warms each model up at load (so TensorRT builds its engines before the first request,
  for batch 1 and the largest batch).

Tensors always come from the ONNX graph (the source of truth; batch-only inputs such as the generator's
timestep go out as ``dims: [1]`` with ``reshape: []``); ``max_batch_size`` and ``dynamic_batching``
come from the committed config when there is one.

Command line: ``python -m hipgen.inference.triton_repo --repository model_repository --out DIR
[--target python|onnxruntime|gpu]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from google.protobuf import text_format

from hipgen.inference.backend import MANIFEST, ModelNotFoundError, latest_version, read_manifest

#: Config parameter that carries the model's MANIFEST.json text to Triton clients.
MANIFEST_PARAMETER = "hipgen_manifest"
#: The python-backend model copied to ``<name>/<version>/model.py`` for target ``python``.
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")
Target = Literal["python", "onnxruntime", "gpu"]
TARGETS: tuple[Target, ...] = ("python", "onnxruntime", "gpu")
DEFAULT_MAX_BATCH_SIZE = 16  # for a model with a batch axis but no committed config

# ONNX Runtime's type strings → Triton config data types.
_ORT_TO_TRITON = {
    "tensor(float)": "TYPE_FP32",
    "tensor(float16)": "TYPE_FP16",
    "tensor(bfloat16)": "TYPE_BF16",
    "tensor(double)": "TYPE_FP64",
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int8)": "TYPE_INT8",
    "tensor(uint64)": "TYPE_UINT64",
    "tensor(uint32)": "TYPE_UINT32",
    "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(bool)": "TYPE_BOOL",
    "tensor(string)": "TYPE_STRING",
}


@dataclass(frozen=True)
class GraphTensor:
    """An input or output of an ONNX graph: Triton data type, shape (str for a symbolic dimension)."""

    name: str
    data_type: str
    shape: tuple[int | str, ...]


Signature = tuple[tuple[GraphTensor, ...], tuple[GraphTensor, ...]]  # (inputs, outputs)


def onnx_signature(path: str | os.PathLike[str]) -> Signature:
    """The graph inputs and outputs of an ONNX file, in graph order. Read with ONNX Runtime (graph
    optimisations off), which serving images have, rather than the ``onnx`` package, which they lack."""
    p = Path(path)
    st = p.stat()
    return _signature(str(p.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=32)
def _signature(path: str, mtime_ns: int, size: int) -> Signature:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])

    def spec(v: Any) -> GraphTensor:
        dims = tuple(d if isinstance(d, int) else (d or "?") for d in v.shape)
        return GraphTensor(v.name, _ORT_TO_TRITON.get(v.type, "TYPE_INVALID"), dims)

    return tuple(spec(v) for v in sess.get_inputs()), tuple(spec(v) for v in sess.get_outputs())


def committed_config(repository: str | os.PathLike[str], name: str) -> Any | None:
    """``<repository>/<name>/config.pbtxt`` as a ``ModelConfig``, or None when there is none."""
    from tritonclient.grpc import model_config_pb2

    path = Path(repository) / name / "config.pbtxt"
    if not path.is_file():
        return None
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def model_names(repository: str | os.PathLike[str]) -> list[str]:
    """The models of a hipgen repository: folders with a ``<version>/model.onnx``."""
    root = Path(repository)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*/model.onnx")))


def _set_tensors(config: Any, tensors: Sequence[GraphTensor], field: str, batched: bool) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    for t in tensors:
        entry = getattr(config, field).add(name=t.name, data_type=mc.DataType.Value(t.data_type))
        dims = [d if isinstance(d, int) and d > 0 else -1 for d in (t.shape[1:] if batched else t.shape)]
        if dims:
            entry.dims.extend(dims)
        else:  # a batch-only tensor (N,): Triton wants a dim, the model sees (N,)
            entry.dims.append(1)
            entry.reshape.SetInParent()


def serving_config(
    repository: str | os.PathLike[str],
    name: str,
    target: Target = "python",
    *,
    trt_precision: Literal["FP32", "FP16"] = "FP32",
    instance_count: int = 1,
) -> Any:
    """The ``ModelConfig`` Triton serves model ``name`` of ``repository`` with, for ``target``.

    ``trt_precision`` (target ``gpu``): FP32 keeps TensorRT's numbers close to the CPU's; FP16 is
    faster, for models validated at that precision. Raises :class:`ModelNotFoundError`.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    version_dir = latest_version(Path(repository), name)
    onnx_path = version_dir / "model.onnx"
    if not onnx_path.is_file():
        raise ModelNotFoundError(f"{onnx_path} is missing")
    inputs, outputs = onnx_signature(onnx_path)
    committed = committed_config(repository, name)
    has_batch_axis = all(t.shape and not isinstance(t.shape[0], int) for t in inputs + outputs)

    config = mc.ModelConfig(name=name)
    if committed is not None:
        config.max_batch_size = committed.max_batch_size
        if committed.HasField("dynamic_batching"):
            config.dynamic_batching.CopyFrom(committed.dynamic_batching)
    elif has_batch_axis:
        config.max_batch_size = DEFAULT_MAX_BATCH_SIZE
        config.dynamic_batching.max_queue_delay_microseconds = 1000
    batched = config.max_batch_size > 0
    if batched and not has_batch_axis:
        raise ValueError(f"{name}: max_batch_size > 0 but {onnx_path} has a fixed first dimension")
    _set_tensors(config, inputs, "input", batched)
    _set_tensors(config, outputs, "output", batched)

    config.backend = "python" if target == "python" else "onnxruntime"
    if target == "onnxruntime" and committed is not None and committed.instance_group:
        config.instance_group.extend(committed.instance_group)
    else:
        kind = mc.ModelInstanceGroup.Kind.KIND_GPU if target == "gpu" else mc.ModelInstanceGroup.Kind.KIND_CPU
        config.instance_group.add(count=instance_count, kind=kind)
    if target == "gpu":
        accel = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accel.parameters["precision_mode"] = trt_precision
        accel.parameters["max_workspace_size_bytes"] = str(1 << 30)
        accel.parameters["trt_engine_cache_enable"] = "1"
        accel.parameters["trt_engine_cache_path"] = f"/tmp/hipgen_trt_cache/{name}"
        for batch in sorted({1, max(config.max_batch_size, 1)}):
            warm = config.model_warmup.add(name=f"{name}_batch{batch}", batch_size=batch if batched else 0)
            for t in config.input:
                warm.inputs[t.name].data_type = t.data_type
                warm.inputs[t.name].dims.extend(d if d > 0 else 1 for d in t.dims)
                warm.inputs[t.name].zero_data = True
    manifest = read_manifest(Path(repository), name)
    config.parameters[MANIFEST_PARAMETER].string_value = json.dumps(manifest)
    return config


def config_text(config: Any) -> str:
    """A ``ModelConfig`` as config.pbtxt text."""
    return text_format.MessageToString(config)


def _place(src: Path, dst: Path, copy: bool) -> None:
    """``dst`` becomes ``src``'s content: a hard link (no copy of 17 MB ONNX files) or, across
    filesystems or when asked, a copy. Never a symlink, which would dangle in a mounted container."""
    dst.unlink(missing_ok=True)
    if not copy:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def build_repository(
    repository: str | os.PathLike[str],
    out: str | os.PathLike[str],
    target: Target = "python",
    *,
    models: Sequence[str] | None = None,
    copy: bool = False,
    trt_precision: Literal["FP32", "FP16"] = "FP32",
) -> list[str]:
    """Write the served repository for ``target`` under ``out`` (one ``<name>/config.pbtxt`` and
    ``<name>/<version>/model.onnx`` per model, plus ``model.py`` for target ``python``); returns the
    model names. Existing files of those models are replaced; nothing else under ``out`` is touched."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; one of {', '.join(TARGETS)}")
    src_root, out_root = Path(repository), Path(out)
    names = list(models) if models else model_names(src_root)
    for name in names:
        config = serving_config(src_root, name, target, trt_precision=trt_precision)
        version_dir = latest_version(src_root, name)
        dst = out_root / name / version_dir.name
        dst.mkdir(parents=True, exist_ok=True)
        (out_root / name / "config.pbtxt").write_text(config_text(config))
        _place(version_dir / "model.onnx", dst / "model.onnx", copy)
        if (src_root / name / MANIFEST).is_file():
            _place(src_root / name / MANIFEST, out_root / name / MANIFEST, copy=True)
        if target == "python":
            _place(PYTHON_MODEL, dst / "model.py", copy=True)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hipgen.inference.triton_repo",
        description="Write a Triton model repository (configs carrying the manifest) from a hipgen one.",
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="hipgen repository")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the served repository to")
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="python",
        help="python: CPU, for the pytriton wheel's tritonserver (tests); onnxruntime: official images, CPU; "
        "gpu: official images, KIND_GPU with the TensorRT accelerator",
    )
    parser.add_argument("--models", nargs="*", help="only these models (default: every model)")
    parser.add_argument("--copy", action="store_true", help="copy model.onnx instead of hard-linking it")
    parser.add_argument("--trt-precision", choices=("FP32", "FP16"), default="FP32", help="target gpu only")
    args = parser.parse_args(argv)
    try:
        names = build_repository(
            args.repository,
            args.out,
            args.target,
            models=args.models,
            copy=args.copy,
            trt_precision=args.trt_precision,
        )
    except (ModelNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(names)} models ({', '.join(names)}) for target {args.target} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
