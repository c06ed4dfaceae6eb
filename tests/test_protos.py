"""The hipgen.v1 API contract: it compiles, follows the buf-style rules of DESIGN §3, mirrors the label
record, and the checked-out stubs match the protos."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from hipgen.data.record import LABEL_COLUMNS

REPO = Path(__file__).resolve().parents[1]
FDP = descriptor_pb2.FieldDescriptorProto

# Units a numeric field's comment must name (as a whole word).
UNITS = ("degrees", "pixels", "mm", "seconds", "bytes", "count", "unitless")
NUMERIC = {
    FDP.TYPE_DOUBLE,
    FDP.TYPE_FLOAT,
    FDP.TYPE_INT32,
    FDP.TYPE_INT64,
    FDP.TYPE_UINT32,
    FDP.TYPE_UINT64,
    FDP.TYPE_SINT32,
    FDP.TYPE_SINT64,
    FDP.TYPE_FIXED32,
    FDP.TYPE_FIXED64,
    FDP.TYPE_SFIXED32,
    FDP.TYPE_SFIXED64,
}
EXPECTED_FILES = {f"hipgen/v1/{n}.proto" for n in ("common", "angle", "generate", "score", "dataset")}
EXPECTED_SERVICES = {"AngleService", "GenerateService", "ScoreService", "DatasetService"}

LOWER_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
PASCAL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")

# source_code_info path tags (descriptor.proto field numbers)
MSG, ENUM, SERVICE = 4, 5, 6
MSG_FIELD, MSG_NESTED, MSG_ENUM, MSG_ONEOF = 2, 3, 4, 8
ENUM_VALUE, METHOD = 2, 2


def _load_gen_protos():
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_protos = _load_gen_protos()


@pytest.fixture(scope="module")
def fds(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    """A real compile (python, pyi and grpc outputs, plus a descriptor set with comments)."""
    out = tmp_path_factory.mktemp("protos")
    desc = out / "hipgen.binpb"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *gen_protos.protoc_args(
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                f"--descriptor_set_out={desc}",
                "--include_source_info",
                "--include_imports",
            ),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", f"protoc warnings: {proc.stderr}"
    for name in ("common", "angle", "generate", "score", "dataset"):
        assert (out / "hipgen" / "v1" / f"{name}_pb2.py").is_file()
        assert (out / "hipgen" / "v1" / f"{name}_pb2_grpc.py").is_file()
    return descriptor_pb2.FileDescriptorSet.FromString(desc.read_bytes())


@pytest.fixture(scope="module")
def files(fds: descriptor_pb2.FileDescriptorSet) -> list[descriptor_pb2.FileDescriptorProto]:
    return [f for f in fds.file if f.name.startswith("hipgen/")]


def _comments(f: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {tuple(loc.path): loc.leading_comments.strip() for loc in f.source_code_info.location}


def _walk(f: descriptor_pb2.FileDescriptorProto):
    """Yield (kind, name, path, descriptor) for every message, field, oneof, enum, value, service, rpc."""

    def enum(e, path):
        yield "enum", e.name, path, e
        for i, v in enumerate(e.value):
            yield "enum value", f"{e.name}.{v.name}", (*path, ENUM_VALUE, i), v

    def message(m, path, prefix):
        name = f"{prefix}{m.name}"
        yield "message", name, path, m
        for i, fld in enumerate(m.field):
            yield "field", f"{name}.{fld.name}", (*path, MSG_FIELD, i), fld
        for i, o in enumerate(m.oneof_decl):
            if not any(
                fld.proto3_optional for fld in m.field if fld.HasField("oneof_index") and fld.oneof_index == i
            ):
                yield "oneof", f"{name}.{o.name}", (*path, MSG_ONEOF, i), o
        for i, n in enumerate(m.nested_type):
            yield from message(n, (*path, MSG_NESTED, i), f"{name}.")
        for i, e in enumerate(m.enum_type):
            yield from enum(e, (*path, MSG_ENUM, i))

    for i, m in enumerate(f.message_type):
        yield from message(m, (MSG, i), "")
    for i, e in enumerate(f.enum_type):
        yield from enum(e, (ENUM, i))
    for i, s in enumerate(f.service):
        yield "service", s.name, (SERVICE, i), s
        for j, rpc in enumerate(s.method):
            yield "rpc", f"{s.name}.{rpc.name}", (SERVICE, i, METHOD, j), rpc


def test_files_and_package(files):
    assert {f.name for f in files} == EXPECTED_FILES
    for f in files:
        assert f.package == "hipgen.v1", f.name
        assert f.syntax == "proto3", f.name
        assert Path(f.name).parent.as_posix() == f.package.replace(".", "/"), "directory must match package"


def test_one_service_per_file_named_service(files):
    services = [s.name for f in files for s in f.service]
    assert set(services) == EXPECTED_SERVICES and len(services) == len(EXPECTED_SERVICES)
    for f in files:
        assert len(f.service) <= 1, f"{f.name} defines {len(f.service)} services"
        for s in f.service:
            assert s.name.endswith("Service"), s.name
            assert f.name == f"hipgen/v1/{s.name.removesuffix('Service').lower()}.proto", (f.name, s.name)


def test_rpc_request_response_names_and_uniqueness(files):
    seen: dict[str, str] = {}
    for f in files:
        for s in f.service:
            for rpc in s.method:
                assert PASCAL.match(rpc.name), rpc.name
                assert rpc.input_type == f".hipgen.v1.{rpc.name}Request", (rpc.name, rpc.input_type)
                assert rpc.output_type == f".hipgen.v1.{rpc.name}Response", (rpc.name, rpc.output_type)
                for t in (rpc.input_type, rpc.output_type):
                    assert t not in seen, f"{t} used by both {seen[t]} and {rpc.name}"
                    seen[t] = rpc.name
    assert len(seen) == 2 * sum(len(s.method) for f in files for s in f.service)


def test_streaming_shapes(files):
    rpcs = {rpc.name: rpc for f in files for s in f.service for rpc in s.method}
    assert not rpcs["PredictAngle"].client_streaming and not rpcs["PredictAngle"].server_streaming
    assert rpcs["StreamPredictAngle"].client_streaming
    assert rpcs["Generate"].server_streaming and not rpcs["Generate"].client_streaming
    assert rpcs["WatchDatasetJob"].server_streaming
    assert {"CreateDatasetJob", "GetDatasetJob", "ListDatasetJobs", "CancelDatasetJob"} <= set(rpcs)


def test_naming_conventions(files):
    bad = []
    for f in files:
        for kind, name, _path, d in _walk(f):
            short = d.name
            ok = {
                "message": PASCAL,
                "enum": PASCAL,
                "service": PASCAL,
                "rpc": PASCAL,
                "field": LOWER_SNAKE,
                "oneof": LOWER_SNAKE,
                "enum value": UPPER_SNAKE,
            }[kind].match(short)
            if not ok:
                bad.append(f"{kind} {name}")
    assert not bad, f"badly cased names: {bad}"


def test_enums_prefixed_and_unspecified_zero(files):
    enums = [d for f in files for kind, _n, _p, d in _walk(f) if kind == "enum"]
    assert enums
    for e in enums:
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", e.name).upper() + "_"
        assert e.value[0].number == 0 and e.value[0].name == f"{prefix}UNSPECIFIED", e.name
        for v in e.value:
            assert v.name.startswith(prefix), f"{e.name}.{v.name} must start with {prefix}"
        assert len({v.number for v in e.value}) == len(e.value), f"{e.name} reuses a number"


def test_field_numbers_unique_and_not_reserved(files):
    for f in files:
        for kind, name, _p, m in _walk(f):
            if kind != "message":
                continue
            numbers = [fld.number for fld in m.field]
            assert len(numbers) == len(set(numbers)), f"{name} reuses a field number"
            reserved_names = set(m.reserved_name)
            for fld in m.field:
                assert fld.name not in reserved_names, f"{name}.{fld.name} is reserved"
                for r in m.reserved_range:
                    assert not r.start <= fld.number < r.end, f"{name}.{fld.name} uses a reserved number"


def test_everything_has_a_comment(files):
    missing = []
    for f in files:
        comments = _comments(f)
        for kind, name, path, _d in _walk(f):
            if not comments.get(path):
                missing.append(f"{f.name}: {kind} {name}")
    assert not missing, "elements without a leading comment:\n" + "\n".join(missing)


def test_numeric_fields_name_their_unit(files):
    unit_re = re.compile(r"\b(" + "|".join(UNITS) + r")\b")
    missing = []
    for f in files:
        comments = _comments(f)
        for kind, name, path, d in _walk(f):
            if kind == "field" and d.type in NUMERIC and not unit_re.search(comments.get(path, "")):
                missing.append(f"{name}: {comments.get(path)!r}")
    assert not missing, f"numeric fields whose comment names no unit of {UNITS}:\n" + "\n".join(missing)


def _message(files, name):
    for f in files:
        for m in f.message_type:
            if m.name == name:
                return m
    raise AssertionError(f"no message {name}")


def test_hip_label_mirrors_the_label_record(files):
    """Every label record column is a HipLabel field, a Point coordinate (left_head_x is left_head.x)
    or a Provenance field (HipLabel.provenance); and HipLabel has nothing else."""
    label = {fld.name: fld for fld in _message(files, "HipLabel").field}
    point = {fld.name for fld in _message(files, "Point").field}
    provenance = {fld.name for fld in _message(files, "Provenance").field}
    assert point == {"x", "y"}
    assert label["provenance"].type_name == ".hipgen.v1.Provenance"
    used = {"provenance"}
    for col in LABEL_COLUMNS:
        if col in label:
            used.add(col)
        elif m := re.fullmatch(r"((?:left|right)_(?:head|rim))_([xy])", col):
            assert label[m[1]].type_name == ".hipgen.v1.Point", col
            used.add(m[1])
        else:
            assert col in provenance, f"label column {col} has no place in HipLabel"
    assert set(label) == used, f"HipLabel fields not in the label record: {set(label) - used}"
    assert provenance == {"synthetic", "generator", "model_version", "seed"}
    for side in ("left", "right"):
        assert label[f"class_{side}"].type_name == ".hipgen.v1.HipClass"
        assert label[f"na_{side}"].type == FDP.TYPE_DOUBLE


def test_checked_out_stubs_are_current():
    """hipgen/api/v1 is build output: it must be what the protos generate now (``make protos``)."""
    if not (gen_protos.OUT_DIR / "common_pb2.py").is_file():
        pytest.skip("stubs not generated yet: run `make protos`")
    to_write, to_remove = gen_protos.stale(gen_protos.generate(), gen_protos.OUT_DIR)
    assert not to_write and not to_remove, f"stale stubs {to_write + to_remove}: run `make protos`"


def test_generated_modules_import_under_hipgen_api():
    pytest.importorskip("hipgen.api", reason="stubs not generated: run `make protos`")
    from hipgen.api.v1 import angle_pb2, angle_pb2_grpc, common_pb2, dataset_pb2_grpc

    assert angle_pb2.DESCRIPTOR.name == "hipgen/v1/angle.proto"  # proto file names are not rewritten
    assert hasattr(angle_pb2_grpc, "AngleServiceStub") and hasattr(dataset_pb2_grpc, "DatasetServiceServicer")
    label = common_pb2.HipLabel(na_left=101.5, left_head=common_pb2.Point(x=1.0, y=2.0))
    assert common_pb2.HipLabel.FromString(label.SerializeToString()) == label


def test_rewrite_imports_only_touches_hipgen_v1():
    src = (
        "from hipgen.v1 import common_pb2 as c\nfrom google.rpc import status_pb2\n"
        "  from hipgen.v1 import x\n"
    )
    out = gen_protos.rewrite_imports(src)
    assert out == (
        "from hipgen.api.v1 import common_pb2 as c\nfrom google.rpc import status_pb2\n"
        "  from hipgen.api.v1 import x\n"
    )


def test_gen_protos_is_idempotent(tmp_path: Path):
    out = tmp_path / "v1"
    assert gen_protos.main(["--out", str(out)]) == 0
    stubs = sorted(p for p in out.iterdir() if p.name != "__init__.py")
    before = {p.name: p.stat().st_mtime_ns for p in stubs}
    stamp = out / "__init__.py"
    os.utime(stamp, ns=(0, 0))
    assert gen_protos.main(["--check", "--out", str(out)]) == 0
    assert stamp.stat().st_mtime_ns == 0  # --check writes nothing
    assert gen_protos.main(["--out", str(out)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in stubs} == before  # unchanged stubs not rewritten
    assert stamp.stat().st_mtime_ns > 0  # but the make stamp is refreshed
    (out / "old_pb2.py").write_text("# from a deleted proto\n")
    (out / "angle_pb2.py").write_text("# edited by hand\n")
    assert gen_protos.main(["--check", "--out", str(out)]) == 1
    assert gen_protos.main(["--out", str(out)]) == 0
    assert not (out / "old_pb2.py").exists()
    assert "from hipgen.api.v1 import common_pb2" in (out / "angle_pb2.py").read_text()
