"""ScoreService over a real gRPC server on 127.0.0.1: sets by file:// reference and inline, streamed
progress, every metric with the backbone named, and INVALID_ARGUMENT naming the bad field."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import serving_channel
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image

from hipgen.api.v1 import common_pb2, score_pb2, score_pb2_grpc
from hipgen.score.features import DEFAULT_BACKBONE
from hipgen.settings import Settings


def _settings(repo: Path, root: Path, **kw: Any) -> Settings:
    return Settings(
        host="127.0.0.1", port=0, metrics_port=0, model_repository=repo, score_data_root=root, **kw
    )


def _violations(err: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None
    out = {}
    for d in status.details:
        br = error_details_pb2.BadRequest()
        if d.Unpack(br):
            out.update({v.field: v.description for v in br.field_violations})
    return out


def _retry_delay_s(err: grpc.RpcError) -> float | None:
    status = rpc_status.from_call(err)
    for d in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        if d.Unpack(info):
            return info.retry_delay.ToNanoseconds() / 1e9
    return None


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def channel(angle_repo: Path, score_folders: dict[str, Path]):
    with serving_channel(_settings(angle_repo, score_folders["real"].parent)) as ch:
        yield ch


def _request(score_folders: dict[str, Path], **kw: Any) -> score_pb2.ScoreSetsRequest:
    return score_pb2.ScoreSetsRequest(
        reference=score_pb2.ImageSet(uri=f"file://{score_folders['real']}"),
        candidate=score_pb2.ImageSet(uri="synthetic"),  # relative to the data root
        **kw,
    )


def test_score_sets_by_reference_reports_every_metric(channel: Any, score_folders: dict[str, Path]) -> None:
    stub = score_pb2_grpc.ScoreServiceStub(channel)
    res = stub.ScoreSets(_request(score_folders, seed=1), timeout=300)
    assert res.feature_backbone == DEFAULT_BACKBONE
    assert (res.reference_count, res.candidate_count) == (16, 12)
    got = {m.name: m for m in res.metrics}
    for name in (
        "fid",
        "kid",
        "mmd",
        "precision",
        "recall",
        "ssim",
        "ms_ssim",
        "ssim_diversity",
        "memorisation",
    ):
        assert name in got, name
    assert got["fid"].value > 0 and got["fid"].HasField("noise_baseline")
    assert got["fid"].value < got["fid"].noise_baseline  # generated views are closer to real than noise
    assert got["ssim"].value > got["ssim"].noise_baseline
    assert got["kid"].standard_error > 0
    assert 0 <= got["memorisation"].value <= 1
    assert res.angle_fidelity_left.count + len([n for n in res.notes if "angle" in n]) > 0
    assert res.angle_fidelity_left.count <= 12 and res.angle_fidelity_left.mean_absolute_error_deg > 0
    # the same seed gives the same report
    again = stub.ScoreSets(_request(score_folders, seed=1), timeout=300)
    assert [m.value for m in again.metrics] == [m.value for m in res.metrics]


def test_stream_score_sets_sends_progress_then_the_result(
    channel: Any, score_folders: dict[str, Path]
) -> None:
    stub = score_pb2_grpc.ScoreServiceStub(channel)
    req = score_pb2.StreamScoreSetsRequest(request=_request(score_folders, metrics=["fid", "ssim"]))
    events = list(stub.StreamScoreSets(req, timeout=300))
    stages = [e.progress.stage for e in events if e.WhichOneof("event") == "progress"]
    assert "features: candidate" in stages and "structural: paired" in stages
    assert events[-1].WhichOneof("event") == "result"
    assert [m.name for m in events[-1].result.metrics] == ["fid", "ssim"]
    assert all(e.WhichOneof("event") == "progress" for e in events[:-1])


def test_inline_sets_with_conditions_give_angle_fidelity(
    channel: Any, score_folders: dict[str, Path]
) -> None:
    from hipgen.score.sets import read_folder

    real = read_folder(score_folders["real"], limit=100)
    synth = read_folder(score_folders["synthetic"], limit=100)
    assert synth.requested is not None
    req = score_pb2.ScoreSetsRequest(
        reference=score_pb2.ImageSet(
            inline_images=score_pb2.InlineImageSet(
                images=[
                    common_pb2.Image(data=_png(p), encoding=common_pb2.IMAGE_ENCODING_PNG)
                    for p in real.images
                ]
            )
        ),
        candidate=score_pb2.ImageSet(
            inline_images=score_pb2.InlineImageSet(
                images=[
                    common_pb2.Image(data=_png(p), encoding=common_pb2.IMAGE_ENCODING_PNG)
                    for p in synth.images
                ],
                conditions=[
                    common_pb2.NaCondition(na_left_deg=a, na_right_deg=b) for a, b in synth.requested
                ],
            )
        ),
        metrics=["angle_fidelity", "fid"],
    )
    res = score_pb2_grpc.ScoreServiceStub(channel).ScoreSets(req, timeout=300)
    assert res.candidate_count == len(synth.images)
    assert res.angle_fidelity_left.count == len(synth.images)
    assert res.angle_fidelity_right.rmse_deg >= res.angle_fidelity_right.mean_absolute_error_deg > 0
    assert [m.name for m in res.metrics] == ["fid"]


def test_bad_requests_name_every_bad_field(
    channel: Any, score_folders: dict[str, Path], tmp_path: Path
) -> None:
    stub = score_pb2_grpc.ScoreServiceStub(channel)
    bad = score_pb2.ScoreSetsRequest(
        reference=score_pb2.ImageSet(uri=f"file://{tmp_path}"),  # outside the data root
        candidate=score_pb2.ImageSet(
            inline_images=score_pb2.InlineImageSet(
                images=[common_pb2.Image(data=b"not an image", encoding=common_pb2.IMAGE_ENCODING_PNG)],
                conditions=[],
            )
        ),
        metrics=["fid", "sharpness"],
        feature_backbone="inception_v9",
        image_size=5,
    )
    with pytest.raises(grpc.RpcError) as e:
        stub.ScoreSets(bad, timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    v = _violations(e.value)
    assert "data root" in v["reference.uri"]
    assert "sharpness" in v["metrics"]
    assert "inception_v9" in v["feature_backbone"]
    assert "image_size" in v
    # the corrupt inline image is named by its index once the request's shape is right
    shaped = score_pb2.ScoreSetsRequest(reference=_request(score_folders).reference, candidate=bad.candidate)
    with pytest.raises(grpc.RpcError) as e:
        stub.ScoreSets(shaped, timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "candidate.inline_images.images[0].data" in _violations(e.value)
    missing = score_pb2.ScoreSetsRequest(candidate=score_pb2.ImageSet(uri="no/such/folder"))
    with pytest.raises(grpc.RpcError) as e:
        stub.ScoreSets(missing, timeout=60)
    v = _violations(e.value)
    assert "required" in v["reference"] and "no such folder" in v["candidate.uri"]


def test_a_full_server_refuses_and_a_cancelled_run_stops(
    angle_repo: Path, score_folders: dict[str, Path]
) -> None:
    """One slot, held by a streamed run whose backbone waits on a gate: a second call is refused with
    RESOURCE_EXHAUSTED; cancelling the stream stops the run at its next batch (counted) and frees the
    slot."""
    from hipgen.inference.backend import OrtBackend
    from services.score import ScoreServicer
    from services.score.servicer import BUSY_RETRY_S, SCORE_CANCELLED
    from services.server import build_server

    gate, entered = threading.Event(), threading.Event()

    class GatedServicer(ScoreServicer):
        def _models(self, backbone: str | None) -> tuple[Any, Any]:
            features, measurer = super()._models(backbone)

            class Gated:
                name = features.name

                def __call__(self, images: Any) -> Any:
                    entered.set()
                    gate.wait(timeout=60)
                    return features(images)

            return Gated(), measurer

    settings = _settings(angle_repo, score_folders["real"].parent, score_max_concurrent=1)
    name = "hipgen.v1.ScoreService"
    servicer = GatedServicer(OrtBackend(angle_repo), settings)
    server, port = build_server(settings, services=[name], servicers={name: servicer})
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = score_pb2_grpc.ScoreServiceStub(ch)
            stream = stub.StreamScoreSets(
                score_pb2.StreamScoreSetsRequest(request=_request(score_folders)), timeout=120
            )
            assert entered.wait(timeout=60)  # the run holds the slot, inside its first feature batch
            with pytest.raises(grpc.RpcError) as e:
                stub.ScoreSets(_request(score_folders, metrics=["fid"]), timeout=60)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert _retry_delay_s(e.value) == BUSY_RETRY_S  # clients back off instead of retrying at once
            before = SCORE_CANCELLED._value.get()
            stream.cancel()
            threading.Event().wait(0.5)  # the server notices the cancel …
            gate.set()  # … and the worker, released, stops at its next check
            for _ in range(100):
                if SCORE_CANCELLED._value.get() > before:
                    break
                threading.Event().wait(0.1)
            assert SCORE_CANCELLED._value.get() == before + 1
            res = stub.ScoreSets(_request(score_folders, metrics=["ssim"]), timeout=60)  # the slot is free
            assert [m.name for m in res.metrics] == ["ssim"]
    finally:
        gate.set()
        server.stop(None).wait()


def test_paths_that_leave_the_data_root_are_refused(
    channel: Any, score_folders: dict[str, Path], tmp_path: Path
) -> None:
    root = score_folders["real"].parent
    trap = root / "escape"
    trap.mkdir(exist_ok=True)
    secret = tmp_path / "outside.png"
    secret.write_bytes(b"\x89PNG not really")
    link = trap / "linked.png"
    if not link.exists():
        link.symlink_to(secret)
    stub = score_pb2_grpc.ScoreServiceStub(channel)
    for uri, why in (
        ("escape", "links outside"),
        ("../", "outside the server's data root"),
        ("real/../..", "outside"),
    ):
        req = _request(score_folders, metrics=["fid"])
        req.candidate.uri = uri
        with pytest.raises(grpc.RpcError) as e:
            stub.ScoreSets(req, timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert why in _violations(e.value)["candidate.uri"], uri


def test_huge_and_nul_values_are_refused_naming_the_field(
    channel: Any, score_folders: dict[str, Path]
) -> None:
    """Descriptions that echo the request are cut, so the status fits gRPC's 8 KiB of trailing metadata (a
    70 kB backbone name used to reach the client as RESOURCE_EXHAUSTED from its own transport); a URI with
    a NUL byte, or a name too long for the file system, is INVALID_ARGUMENT (it was INTERNAL)."""
    stub = score_pb2_grpc.ScoreServiceStub(channel)
    huge = _request(score_folders, metrics=["m" * 70_000] * 3, feature_backbone="b" * 70_000)
    huge.candidate.uri = "u" * 70_000
    nul = _request(score_folders, metrics=["ssim"])
    nul.candidate.uri = "real\x00/../synthetic"
    for req, fields in ((huge, {"metrics", "feature_backbone", "candidate.uri"}), (nul, {"candidate.uri"})):
        with pytest.raises(grpc.RpcError) as e:
            stub.ScoreSets(req, timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        v = _violations(e.value)
        assert fields <= set(v), v
        assert all(len(d.encode()) <= 200 for d in v.values()), v


def test_any_uint64_seed_is_accepted(channel: Any, score_folders: dict[str, Path]) -> None:
    res = score_pb2_grpc.ScoreServiceStub(channel).ScoreSets(
        _request(score_folders, metrics=["kid"], seed=2**64 - 1), timeout=120
    )
    assert res.metrics[0].name == "kid" and res.metrics[0].value == res.metrics[0].value  # not NaN


def test_sets_by_s3_uri_from_a_local_s3_server(
    channel: Any, score_folders: dict[str, Path], s3_fs: Any
) -> None:
    """moto's S3 server on 127.0.0.1 holds the synthetic set; the service reads it by s3:// URI, and a
    missing prefix is INVALID_ARGUMENT naming candidate.uri."""
    fs = s3_fs
    fs.mkdir("hipgen-test")
    fs.put(str(score_folders["synthetic"]), "hipgen-test/sets/synthetic", recursive=True)
    stub = score_pb2_grpc.ScoreServiceStub(channel)
    req = _request(score_folders, metrics=["fid", "angle_fidelity"])
    req.candidate.uri = "s3://hipgen-test/sets/synthetic"
    res = stub.ScoreSets(req, timeout=300)
    assert res.candidate_count == 12 and res.angle_fidelity_left.count > 0
    req.candidate.uri = "s3://hipgen-test/sets/nothing-here"
    with pytest.raises(grpc.RpcError) as e:
        stub.ScoreSets(req, timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "candidate.uri" in _violations(e.value)


def test_missing_models_answer_failed_precondition(score_folders: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "empty_repo").mkdir()
    settings = _settings(tmp_path / "empty_repo", score_folders["real"].parent)
    with serving_channel(settings) as ch, pytest.raises(grpc.RpcError) as e:
        score_pb2_grpc.ScoreServiceStub(ch).ScoreSets(_request(score_folders, metrics=["ssim"]), timeout=60)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "not deployed" in e.value.details()
