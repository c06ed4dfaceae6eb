"""TritonBackend against a REAL tritonserver (the nvidia-pytriton wheel's, on CPU, python backend) serving
the committed models: parity with OrtBackend, model_info and the manifest, readiness, errors, concurrent
requests through the dynamic batcher, AngleService on Triton; and every committed and generated Triton
config parsed and checked against its ONNX graph (DESIGN §4, reference/triton-on-cpu.md).

The server tests skip (saying why) only when the tritonserver binary is not installed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import serving_channel
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from hipgen.api.v1 import angle_pb2, angle_pb2_grpc, common_pb2
from hipgen.data.images import encode_png
from hipgen.inference import make_backend
from hipgen.inference import triton_repo as tr
from hipgen.inference import tritonserver as ts
from hipgen.inference.backend import BackendUnavailableError, ModelNotFoundError, OrtBackend
from hipgen.inference.triton import TritonBackend, TritonError
from hipgen.phantom import PhantomSpec, render_phantom
from hipgen.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "model_repository"
COMMITTED = tr.model_names(MODELS_DIR)
SERVED = ["angle_locator", "angle_keypoints", "generator_ddpm"]  # generator_lcm: the same graph
ATOL = 1e-5
T = 30.0


def _dead_url() -> str:
    """127.0.0.1:<a port nothing listens on>."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


# --- configs: parse and match the ONNX graph (no server needed) ------------------------------------------
def _assert_matches_onnx(config: Any, name: str) -> None:
    """The config's tensors are the ONNX graph's: names in order, data types, dims after the batch axis
    (a batch-only tensor as dims [1] with reshape [])."""
    inputs, outputs = tr.onnx_signature(tr.latest_version(MODELS_DIR, name) / "model.onnx")
    assert config.name == name
    assert config.max_batch_size > 0  # every committed graph has a dynamic batch axis
    for entries, graph in ((config.input, inputs), (config.output, outputs)):
        assert [e.name for e in entries] == [g.name for g in graph]
        for e, g in zip(entries, graph, strict=True):
            assert mc.DataType.Name(e.data_type) == g.data_type, e.name
            assert isinstance(g.shape[0], str), f"{name}.{g.name}: no dynamic batch axis in the graph"
            model_dims = tuple(e.reshape.shape) if e.HasField("reshape") else tuple(e.dims)
            assert model_dims == g.shape[1:], e.name
            if e.HasField("reshape"):
                assert tuple(e.dims) == (1,) and g.shape[1:] == (), e.name


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_config_parses_and_matches_the_onnx_graph(name: str):
    config = text_format.Parse((MODELS_DIR / name / "config.pbtxt").read_text(), mc.ModelConfig())
    _assert_matches_onnx(config, name)
    assert config.backend == "onnxruntime" or config.platform == "onnxruntime_onnx"
    assert config.HasField("dynamic_batching") and config.instance_group


@pytest.mark.parametrize("target", tr.TARGETS)
@pytest.mark.parametrize("name", COMMITTED)
def test_served_config_parses_matches_the_graph_and_carries_the_manifest(name: str, target: tr.Target):
    config = text_format.Parse(tr.config_text(tr.serving_config(MODELS_DIR, name, target)), mc.ModelConfig())
    _assert_matches_onnx(config, name)
    committed = text_format.Parse((MODELS_DIR / name / "config.pbtxt").read_text(), mc.ModelConfig())
    # derived from the graph, the tensors are exactly the committed ones; batching settings are kept
    assert list(config.input) == list(committed.input) and list(config.output) == list(committed.output)
    assert config.max_batch_size == committed.max_batch_size
    assert config.dynamic_batching == committed.dynamic_batching
    manifest = json.loads((MODELS_DIR / name / "MANIFEST.json").read_text())
    assert json.loads(config.parameters[tr.MANIFEST_PARAMETER].string_value) == manifest
    kinds = {g.kind for g in config.instance_group}
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    if target == "gpu":
        assert config.backend == "onnxruntime" and kinds == {mc.ModelInstanceGroup.KIND_GPU}
        assert [a.name for a in accelerators] == ["tensorrt"]
        assert accelerators[0].parameters["precision_mode"] == "FP32"
        warm = {w.batch_size: w for w in config.model_warmup}
        assert set(warm) == {1, config.max_batch_size}
        assert set(warm[1].inputs) == {i.name for i in config.input}
        assert all(tuple(w.dims) == tuple(i.dims) for i in config.input for w in [warm[1].inputs[i.name]])
    else:
        assert kinds == {mc.ModelInstanceGroup.KIND_CPU} and not accelerators and not config.model_warmup
        assert config.backend == ("python" if target == "python" else "onnxruntime")
    if target == "onnxruntime":
        assert list(config.instance_group) == list(committed.instance_group)


def test_gpu_configs_can_ask_for_fp16():
    config = tr.serving_config(MODELS_DIR, "generator_ddpm", "gpu", trt_precision="FP16")
    accel = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accel.parameters["precision_mode"] == "FP16"


def test_build_repository_command_writes_a_servable_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "served"
    assert tr.main(["--repository", str(MODELS_DIR), "--out", str(out), "--models", "angle_locator"]) == 0
    assert "angle_locator" in capsys.readouterr().out
    src = tr.latest_version(MODELS_DIR, "angle_locator")
    dst = out / "angle_locator" / src.name
    assert (dst / "model.onnx").read_bytes() == (src / "model.onnx").read_bytes()
    assert not (dst / "model.onnx").is_symlink()
    assert (dst / "model.py").read_text() == tr.PYTHON_MODEL.read_text()
    config = text_format.Parse((out / "angle_locator" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert config.backend == "python"
    # rebuilding (here for the GPU) replaces the files in place, never the source's
    assert tr.main(["--out", str(out), "--repository", str(MODELS_DIR), "--target", "gpu", "--copy"]) == 0
    assert sorted(p.name for p in out.iterdir()) == COMMITTED
    assert (dst / "model.onnx").stat().st_nlink == 1  # a copy now
    assert (dst / "model.onnx").read_bytes() == (src / "model.onnx").read_bytes()
    assert tr.main(["--out", str(out), "--repository", str(tmp_path / "nowhere"), "--models", "x"]) == 1


# --- choosing the backend -------------------------------------------------------------------------------
def test_make_backend_follows_the_settings(monkeypatch: pytest.MonkeyPatch):
    assert isinstance(make_backend(Settings(model_repository=MODELS_DIR, backend="ort")), OrtBackend)
    monkeypatch.setenv("HIPGEN_BACKEND", "triton")
    monkeypatch.setenv("HIPGEN_TRITON_URL", "127.0.0.1:1")
    backend = make_backend(get_settings())
    assert isinstance(backend, TritonBackend) and backend.url == "127.0.0.1:1"
    backend.close()


def test_the_triton_path_imports_no_torch():
    code = (
        "import sys; import hipgen.inference, hipgen.inference.triton, hipgen.inference.triton_repo, "
        "hipgen.inference.tritonserver; from hipgen.settings import Settings; "
        "hipgen.inference.make_backend(Settings(backend='triton')).close(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_running_tritonserver_says_when_the_binary_is_missing(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ts.importlib.util, "find_spec", lambda name: None)
    with (
        pytest.raises(ts.TritonServerNotInstalledError, match="nvidia-pytriton"),
        ts.running_tritonserver(MODELS_DIR),
    ):
        pass


# --- a real tritonserver ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def triton_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        ts.tritonserver_home()
    except ts.TritonServerNotInstalledError as e:
        pytest.skip(f"no real Triton server to test against: {e}")
    served = tmp_path_factory.mktemp("triton_repo")
    tr.build_repository(MODELS_DIR, served, "python", models=SERVED)
    with ts.running_tritonserver(served, ready_timeout_s=90) as url:
        yield url


@pytest.fixture(scope="module")
def triton(triton_url: str) -> Iterator[TritonBackend]:
    with TritonBackend(triton_url) as backend:
        yield backend


@pytest.fixture(scope="module")
def ort() -> OrtBackend:
    return OrtBackend(MODELS_DIR)


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)  # output names, in model order
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=ATOL, err_msg=k)


def _images(model: str, n: int, seed: int, ort: OrtBackend) -> np.ndarray:
    side = ort.model_info(model).inputs[0].shape[-1]
    return np.random.default_rng(seed).random((n, 1, side, side), dtype=np.float32)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("model", ["angle_locator", "angle_keypoints"])
def test_angle_models_give_the_numbers_ort_gives(
    triton: TritonBackend, ort: OrtBackend, model: str, batch: int
):
    x = _images(model, batch, seed=batch, ort=ort)
    _assert_same(triton.infer(model, {"image": x}), ort.infer(model, {"image": x}))


@pytest.mark.parametrize("batch", [1, 3])
def test_generator_unet_gives_the_numbers_ort_gives(triton: TritonBackend, ort: OrtBackend, batch: int):
    info = ort.model_info("generator_ddpm")
    assert [(i.name, i.dtype) for i in info.inputs] == [
        ("sample", "tensor(float)"),
        ("timestep", "tensor(int64)"),
        ("na", "tensor(float)"),
        ("keep", "tensor(bool)"),
    ]
    rng = np.random.default_rng(batch)
    inputs = {  # dtypes the model does not declare, cast by both backends alike
        "sample": rng.standard_normal((batch, 1, 128, 128)),
        "timestep": rng.integers(0, 1000, batch).astype(np.int32),
        "na": rng.uniform(-1, 1, (batch, 2)),
        "keep": np.arange(batch) % 2 == 0,
    }
    _assert_same(triton.infer("generator_ddpm", inputs), ort.infer("generator_ddpm", inputs))


def test_a_batch_over_max_batch_size_is_split(triton: TritonBackend, ort: OrtBackend):
    x = _images("angle_keypoints", 33, seed=33, ort=ort)  # max_batch_size 32
    _assert_same(triton.infer("angle_keypoints", {"image": x}), ort.infer("angle_keypoints", {"image": x}))


@pytest.mark.parametrize("model", SERVED)
def test_model_info_is_what_ort_reports(triton: TritonBackend, ort: OrtBackend, model: str):
    got, want = triton.model_info(model), ort.model_info(model)
    assert got.name == want.name and got.version == want.version
    assert got.inputs == want.inputs and got.outputs == want.outputs  # names, ONNX dtypes, shapes
    assert got.manifest == want.manifest and got.manifest["name"] == model


def test_ready_for_the_server_a_served_model_a_missing_model_and_a_dead_server(triton: TritonBackend):
    assert triton.ready() and triton.ready("angle_keypoints")
    assert not triton.ready("no_such_model")
    with TritonBackend(_dead_url(), probe_timeout_s=2) as dead:
        assert not dead.ready() and not dead.ready("angle_keypoints")


def test_missing_model_raises_model_not_found(triton: TritonBackend):
    for call in (lambda: triton.model_info("no_such_model"), lambda: triton.infer("no_such_model", {})):
        with pytest.raises(ModelNotFoundError, match="no_such_model"):
            call()


def test_dead_server_raises_backend_unavailable_naming_the_url():
    url = _dead_url()
    with TritonBackend(url, probe_timeout_s=2) as dead:
        for call in (lambda: dead.model_info("angle_keypoints"), lambda: dead.infer("angle_keypoints", {})):
            with pytest.raises(BackendUnavailableError, match=url) as e:
                call()
            assert isinstance(e.value, ConnectionError)


def test_a_bad_input_is_refused_and_the_server_keeps_serving(triton: TritonBackend, ort: OrtBackend):
    with pytest.raises(TritonError):
        triton.infer("angle_keypoints", {"image": np.zeros((1, 1, 64, 64), np.float32)})
    x = _images("angle_keypoints", 2, seed=7, ort=ort)
    _assert_same(triton.infer("angle_keypoints", {"image": x}), ort.infer("angle_keypoints", {"image": x}))


def _stats(url: str, model: str) -> tuple[int, int]:
    """(inferences, executions) the server counted for ``model``."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        s = client.get_inference_statistics(model).model_stats[0]
    return s.inference_count, s.execution_count


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    triton: TritonBackend, ort: OrtBackend, triton_url: str
):
    """Threads sharing one TritonBackend send different images at once: the dynamic batcher merges them
    into fewer executions, and the python model's split hands each request its own rows."""
    model, threads, rounds = "angle_keypoints", 8, 3
    xs = [_images(model, 1 + i % 3, seed=100 + i, ort=ort) for i in range(threads)]
    want = [ort.infer(model, {"image": x}) for x in xs]
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(rounds):
                barrier.wait(timeout=T)
                _assert_same(triton.infer(model, {"image": xs[i]}), want[i])
        except BaseException as e:  # reported by the main thread
            errors.append(e)
            barrier.abort()

    before = _stats(triton_url, model)
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(2 * T)
    assert not errors, errors[0]
    expected = rounds * sum(len(x) for x in xs)
    deadline = time.monotonic() + 5  # the server counts an execution just after it answers
    while True:
        inferences, executions = (a - b for a, b in zip(_stats(triton_url, model), before, strict=True))
        if inferences >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert inferences == expected
    assert executions < threads * rounds, "the dynamic batcher never merged concurrent requests"


# --- AngleService on Triton -------------------------------------------------------------------------------
def _predict(settings: Settings, request: angle_pb2.PredictAngleRequest) -> angle_pb2.PredictAngleResponse:
    with serving_channel(settings, T) as ch:
        return angle_pb2_grpc.AngleServiceStub(ch).PredictAngle(request, timeout=T)


def test_angle_service_on_triton_measures_what_it_measures_on_ort(triton_url: str):
    sample = render_phantom(PhantomSpec(width=256, height=256), seed=3)
    request = angle_pb2.PredictAngleRequest(image=common_pb2.Image(data=encode_png(sample.pixels)))
    common = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "max_workers": 4,
        "model_repository": MODELS_DIR,
    }
    on_ort = _predict(Settings(**common, backend="ort"), request)
    on_triton = _predict(Settings(**common, backend="triton", triton_url=triton_url), request)
    assert (on_triton.model_name, on_triton.model_version) == (on_ort.model_name, on_ort.model_version)
    a, b = on_triton.label, on_ort.label
    for field in ("na_left", "na_right", "left_radius", "right_radius"):
        assert getattr(a, field) == pytest.approx(getattr(b, field), abs=1e-3), field
    for point in ("left_head", "right_head", "left_rim", "right_rim"):
        p, q = getattr(a, point), getattr(b, point)
        assert (p.x, p.y) == pytest.approx((q.x, q.y), abs=1e-3), point
    assert a.text == b.text and on_triton.image_class == on_ort.image_class


def test_angle_service_starts_with_triton_down_and_refuses_to_measure():
    settings = Settings(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        model_repository=MODELS_DIR,
        backend="triton",
        triton_url=_dead_url(),
    )
    sample = render_phantom(PhantomSpec(width=256, height=256), seed=3)
    request = angle_pb2.PredictAngleRequest(image=common_pb2.Image(data=encode_png(sample.pixels)))
    with pytest.raises(grpc.RpcError) as e:
        _predict(settings, request)
    assert e.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE)
