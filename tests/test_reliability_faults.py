"""The fault-injection harness's quick subset (bench/reliability/faults.py) against real processes on
127.0.0.1: the model server SIGKILLed mid-job, a full disk, S3 answering 500, a slow backend with a 1 s
deadline — plus its pieces that need no servers (the manifest check, the S3 fault front)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.reliability import faults

pytestmark = pytest.mark.reliability


def test_quick_fault_injection_passes(tmp_path: Path) -> None:
    section = faults.run(tmp_path, quick=True)
    failures = "\n".join(f"{c.name}: {c.detail}" for c in section.failures())
    assert section.passed, f"{section.table}\n\nfailed checks:\n{failures}"
    keys = {s["key"] for s in section.results["scenarios"]}
    assert {"model", "disk", "s3", "slow"} <= keys
    assert (tmp_path / "faults.md").read_text().startswith("| scenario | injected | client saw |")
    assert json.loads((tmp_path / "faults.json").read_text())["quick"] is True


def test_manifest_check_sees_missing_changed_unlisted_and_temp_files(tmp_path: Path) -> None:
    from hipgen.data.manifest import FileEntry, Manifest, bytes_entry
    from hipgen.data.record import LabelRecord

    def record(name: str) -> LabelRecord:
        return LabelRecord(name, "", 100, 100, *([1.0] * 10), "normal", "normal", "A", "A")

    out = tmp_path / "set"
    out.mkdir()
    entries = []
    for name in ("a.png", "b.png"):
        (out / name).write_bytes(name.encode())
        e = bytes_entry(name, name.encode())
        entries.append(FileEntry(e.path, e.sha256, e.bytes, record=record(name)))
    (out / "manifest.json").write_text(json.dumps(Manifest("imagefolder", entries).to_dict()))
    good = faults.manifest_check(out, 2)
    assert faults.manifest_ok(good) and good["files_checked"] == 2
    assert not faults.manifest_ok(faults.manifest_check(out, 3))  # not the requested count
    (out / ".c.png.x1.tmp").write_bytes(b"partial")
    m = faults.manifest_check(out, 2)
    assert m["temp_files"] == 1 and not m["sha256_ok"] and not faults.manifest_ok(m)  # unlisted too
    (out / ".c.png.x1.tmp").unlink()
    (out / "b.png").write_bytes(b"changed")
    assert not faults.manifest_check(out, 2)["sha256_ok"]
    (out / "manifest.json").unlink()
    gone = faults.manifest_check(out, 2)
    assert gone["manifest_images"] == 0 and gone["problems"] == ["no manifest.json"]


def test_s3_fault_front_answers_s3_errors_and_recovers() -> None:
    pytest.importorskip("moto")
    import botocore.exceptions

    from bench.reliability.s3_faults import FaultyS3

    s3 = FaultyS3().start()
    try:
        s3.create_bucket("fault-front")
        s3.filesystem().pipe_file("fault-front/k", b"v")
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=s3.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),  # no retries
        )
        assert client.get_object(Bucket="fault-front", Key="k")["Body"].read() == b"v"
        s3.faults.outage = True
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client.get_object(Bucket="fault-front", Key="k")
        assert e.value.response["Error"]["Code"] == "InternalError"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        with pytest.raises(botocore.exceptions.ClientError) as e:  # HEAD: the status alone
            client.head_object(Bucket="fault-front", Key="k")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        with pytest.raises(botocore.exceptions.ClientError):  # a PUT's body is read and dropped
            client.put_object(Bucket="fault-front", Key="k2", Body=b"x" * 100_000)
        s3.faults.outage = False
        s3.faults.fail_every = 2
        codes = []
        for _ in range(4):
            try:
                client.head_object(Bucket="fault-front", Key="k")
                codes.append(200)
            except botocore.exceptions.ClientError as err:
                codes.append(err.response["ResponseMetadata"]["HTTPStatusCode"])
        assert sorted(codes) == [200, 200, 500, 500]
        s3.faults.fail_every = 0
        assert client.get_object(Bucket="fault-front", Key="k")["Body"].read() == b"v"
        assert not s3.filesystem().exists("fault-front/k2")  # nothing half-written
    finally:
        s3.stop()


def test_triton_scenario_is_skipped_saying_why_without_a_tritonserver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from hipgen.inference import tritonserver

    def missing() -> Path:
        raise tritonserver.TritonServerNotInstalledError("no tritonserver binary here")

    monkeypatch.setattr(tritonserver, "tritonserver_home", missing)
    cluster = SimpleNamespace(gateway=object(), work=tmp_path)
    o = faults.scenario_triton_kill(cluster, 8, 2)  # type: ignore[arg-type]
    assert o.skipped and "no tritonserver binary here" in o.skipped
    assert o.passed and o.row()[-1].startswith("skipped: ")
