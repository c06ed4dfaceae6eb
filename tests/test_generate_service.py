"""GenerateService end to end on tiny exported generators (a real server on 127.0.0.1): streaming
progress, labelled and synthetic-marked images, determinism, cancellation within one step, and
INVALID_ARGUMENT naming the field for every kind of bad request."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import serving_channel
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image

from hipgen.api.v1 import common_pb2, generate_pb2, generate_pb2_grpc
from hipgen.inference.backend import OrtBackend
from hipgen.settings import Settings
from services.generate import GenerateServicer

pytestmark = pytest.mark.usefixtures("tiny_generator_repo")


def _settings(repo: Path, **kw) -> Settings:  # noqa: ANN003
    return Settings(host="127.0.0.1", port=0, metrics_port=0, model_repository=repo, **kw)


def _request(*pairs: tuple[float, float], **kw) -> generate_pb2.GenerateRequest:  # noqa: ANN003
    conditions = [common_pb2.NaCondition(na_left_deg=a, na_right_deg=b) for a, b in pairs]
    return generate_pb2.GenerateRequest(conditions=conditions, **kw)


def _violations(err: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None
    out = {}
    for detail in status.details:
        br = error_details_pb2.BadRequest()
        assert detail.Unpack(br)
        out.update({v.field: v.description for v in br.field_violations})
    return out


def test_streams_progress_then_labelled_synthetic_images(tiny_generator_repo: Path) -> None:
    settings = _settings(tiny_generator_repo, generate_batch_size=2)
    with serving_channel(settings) as ch:
        stub = generate_pb2_grpc.GenerateServiceStub(ch)
        req = _request((90, 110), (120, 75), images_per_condition=2, seed=7, sampler=2, steps=3)
        events = list(stub.Generate(req, timeout=60))
    progress = [e.progress for e in events if e.HasField("progress")]
    images = [e.image for e in events if e.HasField("image")]
    # two batches of two images, three DDIM steps each, progress before each batch's images
    assert [(p.image_index, p.step, p.total_steps) for p in progress] == [(0, 1, 3), (0, 2, 3), (0, 3, 3)] + [
        (2, 1, 3),
        (2, 2, 3),
        (2, 3, 3),
    ]
    assert progress[-1].images_done == 2 and progress[-1].images_total == 4
    assert [i.index for i in images] == [0, 1, 2, 3]
    assert [i.seed for i in images] == [7, 8, 9, 10]
    assert [(i.requested.na_left_deg, i.requested.na_right_deg) for i in images] == [(90, 110)] * 2 + [
        (120, 75)
    ] * 2
    for img in images:
        assert img.sampler == generate_pb2.SAMPLER_DDIM and img.steps == 3 and img.guidance_scale == 2.0
        pil = Image.open(io.BytesIO(img.image.data))
        assert pil.size == (32, 32) and pil.mode == "L"
        assert pil.text["hipgen:synthetic"] == "true" and pil.text["hipgen:seed"] == str(img.seed)
        assert pil.text["hipgen:generator"] == "generator_ddpm" and pil.text["hipgen:model_version"] == "tiny"
        lab = img.label
        assert lab.provenance.synthetic and lab.provenance.seed == img.seed
        # the label is measured, so it is whatever the angle model saw — finite, never the request echoed
        assert np.isfinite([lab.na_left, lab.na_right]).all()
        assert (lab.na_left, lab.na_right) != (img.requested.na_left_deg, img.requested.na_right_deg)
        assert img.angle_model_version


def test_same_seed_same_bytes_and_lcm_picks_the_student(tiny_generator_repo: Path) -> None:
    with serving_channel(_settings(tiny_generator_repo)) as ch:
        stub = generate_pb2_grpc.GenerateServiceStub(ch)

        def pngs(req: generate_pb2.GenerateRequest) -> list[bytes]:
            return [e.image.image.data for e in stub.Generate(req, timeout=60) if e.HasField("image")]

        a = pngs(_request((100, 100), (80, 125), seed=3, steps=2))
        assert a == pngs(_request((100, 100), (80, 125), seed=3, steps=2))
        assert a != pngs(_request((100, 100), (80, 125), seed=4, steps=2))
        lcm = [
            e.image
            for e in stub.Generate(_request((100, 100), sampler=4, seed=1), timeout=60)
            if e.HasField("image")
        ]
        assert (
            lcm[0].sampler == generate_pb2.SAMPLER_LCM and lcm[0].steps == 4 and lcm[0].guidance_scale == 1.0
        )
        assert lcm[0].label.provenance.generator == "generator_lcm"
        unseeded = [
            e.image for e in stub.Generate(_request((100, 100), steps=1), timeout=60) if e.HasField("image")
        ]
        assert unseeded[0].label.provenance.seed == unseeded[0].seed  # drawn by the server and reported


def test_dicom_output_is_marked_synthetic(tiny_generator_repo: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    with serving_channel(_settings(tiny_generator_repo)) as ch:
        stub = generate_pb2_grpc.GenerateServiceStub(ch)
        req = _request(
            (95, 105), seed=5, steps=2, output_encoding=common_pb2.IMAGE_ENCODING_DICOM, image_size=64
        )
        (img,) = [e.image for e in stub.Generate(req, timeout=60) if e.HasField("image")]
    ds = pydicom.dcmread(io.BytesIO(img.image.data))
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"] and ds.ConversionType == "SYN"
    assert (ds.Rows, ds.Columns) == (64, 64) and img.image.file_name.endswith(".dcm")


@pytest.mark.parametrize(
    ("request_kw", "pairs", "field"),
    [
        ({}, [(69.0, 100.0)], "conditions[0].na_left_deg"),
        ({}, [(100.0, 100.0), (100.0, float("nan"))], "conditions[1].na_right_deg"),
        ({}, [], "conditions"),
        ({"images_per_condition": 5}, [(100.0, 100.0)], "images_per_condition"),
        ({"sampler": 3}, [(100.0, 100.0)], "sampler"),
        ({"sampler": 9}, [(100.0, 100.0)], "sampler"),
        ({"model_name": "generator_ddpm", "sampler": 4}, [(100.0, 100.0)], "sampler"),
        ({"steps": 1001}, [(100.0, 100.0)], "steps"),
        ({"sampler": 4, "steps": 51}, [(100.0, 100.0)], "steps"),
        ({"guidance_scale": -1.0}, [(100.0, 100.0)], "guidance_scale"),
        ({"guidance_scale": float("inf")}, [(100.0, 100.0)], "guidance_scale"),
        ({"sampler": 4, "guidance_scale": 2.0}, [(100.0, 100.0)], "guidance_scale"),
        ({"model_name": "nope", "image_size": 8}, [(100.0, 100.0)], "image_size"),  # reported together
        ({"model_name": "../etc"}, [(100.0, 100.0)], "model_name"),
        ({"model_name": "nope"}, [(100.0, 100.0)], "model_name"),
        ({"model_name": "angle_keypoints"}, [(100.0, 100.0)], "model_name"),
        ({"image_size": 8}, [(100.0, 100.0)], "image_size"),
        ({"output_encoding": common_pb2.IMAGE_ENCODING_JPEG}, [(100.0, 100.0)], "output_encoding"),
    ],
)
def test_bad_requests_name_the_field(tiny_generator_repo: Path, request_kw, pairs, field) -> None:  # noqa: ANN001
    with serving_channel(_settings(tiny_generator_repo, generate_max_images=4)) as ch:
        stub = generate_pb2_grpc.GenerateServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Generate(_request(*pairs, **request_kw), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in _violations(err.value), _violations(err.value)


def test_every_bad_side_is_named_but_the_status_stays_small(tiny_generator_repo: Path) -> None:
    with serving_channel(_settings(tiny_generator_repo)) as ch:
        stub = generate_pb2_grpc.GenerateServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Generate(_request((60.0, 140.0)), timeout=30))
        assert set(_violations(err.value)) == {"conditions[0].na_left_deg", "conditions[0].na_right_deg"}
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Generate(_request(*[(10.0, 200.0)] * 40), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(_violations(err.value)) == 10 and "71 more" in err.value.details()


def test_missing_default_generator_is_a_deployment_fault(tmp_path: Path, angle_repo: Path) -> None:
    for name in ("angle_keypoints", "angle_locator"):  # angle models only
        (tmp_path / name).symlink_to((angle_repo / name).resolve())
    with serving_channel(_settings(tmp_path)) as ch:
        stub = generate_pb2_grpc.GenerateServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Generate(_request((100, 100)), timeout=30))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "generator_ddpm" in err.value.details()


class _CountingBackend(OrtBackend):
    """Counts UNet calls, so a test can see when compute stops."""

    def __init__(self, repo: Path) -> None:
        super().__init__(repo)
        self.unet_calls = 0
        self.first_step = threading.Event()

    def infer(self, model, inputs):  # noqa: ANN001, ANN201
        if model.startswith("generator"):
            self.unet_calls += 1
            self.first_step.set()
        return super().infer(model, inputs)


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_cancel_or_deadline_stops_within_one_step(tiny_generator_repo: Path, how: str) -> None:
    from concurrent import futures

    backend = _CountingBackend(tiny_generator_repo)
    servicer = GenerateServicer(backend, _settings(tiny_generator_repo))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    generate_pb2_grpc.add_GenerateServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = generate_pb2_grpc.GenerateServiceStub(ch)
            req = _request((100, 100), sampler=1, steps=1000, seed=0)  # DDPM-1000: far longer than the test
            if how == "cancel":
                call = stub.Generate(req, timeout=60)
                next(call)  # the first progress event
                call.cancel()
            else:
                with pytest.raises(grpc.RpcError) as err:
                    list(stub.Generate(req, timeout=0.5))
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert backend.first_step.wait(10)
            calls = _settle(backend)
            assert calls < 1000
            assert _settle(backend) == calls  # nothing more runs once the RPC is over
    finally:
        server.stop(None).wait()


def _settle(backend: _CountingBackend) -> int:
    """UNet calls once they stop changing (one step finishes at most after the cancel)."""
    import time

    last = -1
    for _ in range(50):
        time.sleep(0.1)
        if backend.unet_calls == last:
            return last
        last = backend.unet_calls
    return backend.unet_calls


class _TritonGoneBackend(OrtBackend):
    """The models loaded, then the Triton server behind them went away (killed, restarting)."""

    def infer(self, model, inputs):  # noqa: ANN001, ANN201
        from hipgen.inference.backend import BackendUnavailableError

        if model.startswith("generator"):
            raise BackendUnavailableError("Triton at 127.0.0.1:8001 did not answer")
        return super().infer(model, inputs)


def test_an_unreachable_backend_answers_unavailable_so_that_shards_retry(tiny_generator_repo: Path) -> None:
    from concurrent import futures

    servicer = GenerateServicer(_TritonGoneBackend(tiny_generator_repo), _settings(tiny_generator_repo))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    generate_pb2_grpc.add_GenerateServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as err:
            list(generate_pb2_grpc.GenerateServiceStub(ch).Generate(_request((100, 100)), timeout=60))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "127.0.0.1:8001" in err.value.details()
    finally:
        server.stop(None).wait()
