"""Generate the hipgen.v1 gRPC stubs from protos/ into hipgen/api/v1/ (``make protos``).

Runs ``grpc_tools.protoc`` (the protoc bundled with grpcio-tools, with its well-known types and the
``google/rpc`` protos of googleapis-common-protos on the include path) with ``--python_out``,
``--pyi_out`` and ``--grpc_python_out``, into a temporary directory.

Why a rewrite step: protoc's Python generator names a module after the proto's path, so
``hipgen/v1/angle.proto`` becomes ``hipgen.v1.angle_pb2`` and every generated import reads
``from hipgen.v1 import common_pb2``. That package would collide with our own top-level ``hipgen``
package, so the generated files go to ``hipgen/api/v1/`` and their ``from hipgen.v1 import`` lines
are rewritten to ``from hipgen.api.v1 import`` (the approach protoletariat takes). The proto file
names inside the descriptors stay ``hipgen/v1/*.proto``, which is what server reflection and other
languages' clients expect.

Idempotent and quick (well under a second): it always regenerates, but writes only files whose bytes
changed (so timestamps of unchanged stubs stay put) and removes stubs of deleted protos. The package's
``__init__.py`` is touched on every run: the Makefile uses it as the stamp that the stubs are newer
than the protos.
``--check`` writes nothing and exits 1 when the stubs are missing or stale (for CI).

Usage::

    python scripts/gen_protos.py            # (re)generate hipgen/api/v1
    python scripts/gen_protos.py --check    # exit 1 if hipgen/api/v1 is out of date
"""

from __future__ import annotations

import argparse
import importlib.resources
import importlib.util
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "protos"
PROTO_PACKAGE_DIR = Path("hipgen") / "v1"
OUT_DIR = REPO / "hipgen" / "api" / "v1"

_IMPORT_RE = re.compile(r"^(\s*)from hipgen\.v1 import ", re.MULTILINE)
_INIT = '"""Generated hipgen.v1 gRPC stubs (build output of `make protos`; do not edit)."""\n'
_GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def include_dirs() -> list[Path]:
    """protos/, grpc_tools' bundled well-known types, and the googleapis protos (google/rpc/status.proto)."""
    well_known = Path(str(importlib.resources.files("grpc_tools") / "_proto"))
    spec = importlib.util.find_spec("google.rpc.status_pb2")
    if spec is None or spec.origin is None:
        raise SystemExit(
            "gen_protos: googleapis-common-protos is not installed (it ships google/rpc/*.proto)"
        )
    googleapis = Path(spec.origin).parents[2]
    if not (googleapis / "google" / "rpc" / "status.proto").is_file():
        raise SystemExit(f"gen_protos: google/rpc/status.proto not found under {googleapis}")
    return [PROTO_ROOT, well_known, googleapis]


def proto_files() -> list[Path]:
    """The hipgen.v1 protos, relative to :data:`PROTO_ROOT`, sorted."""
    files = sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PROTO_PACKAGE_DIR).glob("*.proto"))
    if not files:
        raise SystemExit(f"gen_protos: no .proto files under {PROTO_ROOT / PROTO_PACKAGE_DIR}")
    return files


def protoc_args(*outputs: str) -> list[str]:
    """Arguments for ``grpc_tools.protoc.main`` (or ``python -m grpc_tools.protoc``, without argv[0])."""
    return [*(f"--proto_path={d}" for d in include_dirs()), *outputs, *(str(p) for p in proto_files())]


def run_protoc(*outputs: str) -> None:
    """Run the bundled protoc in-process; raise ``RuntimeError`` on a non-zero exit."""
    from grpc_tools import protoc

    rc = protoc.main(["grpc_tools.protoc", *protoc_args(*outputs)])
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc exited with {rc} (see its messages above)")


def rewrite_imports(source: str) -> str:
    """``from hipgen.v1 import x_pb2`` -> ``from hipgen.api.v1 import x_pb2`` (see module docstring)."""
    return _IMPORT_RE.sub(r"\1from hipgen.api.v1 import ", source)


def generate() -> dict[str, bytes]:
    """Generated files by name (``angle_pb2.py`` …, plus ``__init__.py``), imports rewritten."""
    with tempfile.TemporaryDirectory(prefix="hipgen-protos-") as tmp:
        run_protoc(f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}")
        gen_dir = Path(tmp) / PROTO_PACKAGE_DIR
        out = {
            p.name: rewrite_imports(p.read_text(encoding="utf-8")).encode("utf-8")
            for p in sorted(gen_dir.iterdir())
            if p.name.endswith(_GENERATED_SUFFIXES)
        }
    out["__init__.py"] = _INIT.encode("utf-8")
    return out


def stale(files: dict[str, bytes], out_dir: Path) -> tuple[list[str], list[str]]:
    """``(to_write, to_remove)``: files whose bytes differ, and generated files no proto makes any more."""
    to_write = [n for n, data in files.items() if not _same(out_dir / n, data)]
    existing = out_dir.iterdir() if out_dir.is_dir() else ()
    to_remove = sorted(
        p.name for p in existing if p.name.endswith(_GENERATED_SUFFIXES) and p.name not in files
    )
    return to_write, to_remove


def _same(path: Path, data: bytes) -> bool:
    return path.is_file() and path.read_bytes() == data


def write(files: dict[str, bytes], out_dir: Path) -> list[str]:
    """Write changed files atomically (temp + rename), remove stale ones; return the names touched."""
    to_write, to_remove = stale(files, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in to_write:
        tmp = out_dir / f".{name}.tmp"
        tmp.write_bytes(files[name])
        tmp.replace(out_dir / name)
    for name in to_remove:
        (out_dir / name).unlink()
    (out_dir / "__init__.py").touch()  # the Makefile's stamp: "stubs are newer than the protos"
    return to_write + to_remove


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the stubs are stale")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output package dir (default {OUT_DIR})")
    args = parser.parse_args(argv)

    files = generate()
    if args.check:
        to_write, to_remove = stale(files, args.out)
        if to_write or to_remove:
            print(
                f"gen_protos: stubs in {args.out} are stale ({', '.join(to_write + to_remove)}); "
                "run `make protos`",
                file=sys.stderr,
            )
            return 1
        return 0
    touched = write(files, args.out)
    print(f"gen_protos: {len(files)} files in {args.out} ({len(touched)} updated)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
