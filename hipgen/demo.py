"""``make run``: render a labelled phantom set, start the server on the embedded default, show it working.

Steps: (1) render phantoms into ``<out_dir>/phantoms`` (image folder + metadata.csv + manifest) and a
labelled sample grid; (2) start ``python -m services.server`` on a free local port; (3) check health for
every service, list them through server reflection and call each once (services whose issues have not
landed answer UNIMPLEMENTED); (4) print what is where and stop the server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from rich.console import Console
from rich.table import Table

from hipgen.settings import get_settings

console = Console()
COUNT = 24


def _start_server(env: dict[str, str]) -> tuple[subprocess.Popen[str], int, list[str]]:
    """Start the server process on a free port; return it, its port and its log lines so far."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.server", "--host", "127.0.0.1", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    found: dict[str, int] = {}

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "server listening":
                found["port"] = int(rec["port"])

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 30
    while "port" not in found:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("server did not start:\n" + "\n".join(lines[-20:]))
        time.sleep(0.05)
    return proc, found["port"], lines


def _probe(port: int) -> list[tuple[str, str, str]]:
    """(service, health, one call's outcome) for every hipgen service the server reflects."""
    rows = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        health = health_pb2_grpc.HealthStub(channel)
        db = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(s for s in db.get_services() if s.startswith("hipgen."))
        pool = descriptor_pool.DescriptorPool(db)
        for name in services:
            status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            svc = pool.FindServiceByName(name)
            method = svc.methods[0]
            path, ser, de = f"/{name}/{method.name}", (lambda _: b""), (lambda b: b)
            try:
                if method.client_streaming:
                    outcome = f"{method.name}: client-streaming (not called)"
                elif method.server_streaming:  # an empty request: the service validates or refuses it
                    list(
                        channel.unary_stream(path, request_serializer=ser, response_deserializer=de)(
                            b"", timeout=5
                        )
                    )
                    outcome = f"{method.name}: OK"
                else:
                    channel.unary_unary(path, request_serializer=ser, response_deserializer=de)(
                        b"", timeout=5
                    )
                    outcome = f"{method.name}: OK"
            except grpc.RpcError as e:
                outcome = f"{method.name}: {e.code().name}"
            rows.append((name, health_pb2.HealthCheckResponse.ServingStatus.Name(status), outcome))
    return rows


def main() -> int:
    from hipgen.phantom.dataset import write_phantom_set
    from hipgen.phantom.figure import write_sample_grid

    settings = get_settings()
    out = Path(settings.out_dir)
    data = out / "phantoms"
    if data.exists():
        shutil.rmtree(data)  # the demo's own output: start clean so the manifest matches
    console.rule("[bold]hipgen demo")
    t0 = time.perf_counter()
    with console.status(f"rendering {COUNT} labelled phantoms"):
        manifest = write_phantom_set(data, COUNT, "imagefolder", seed=0, size=512, distribution="uniform")
    dt = time.perf_counter() - t0
    grid = write_sample_grid(out / "phantom_grid.png", count=12, seed=0)
    recs = [f.record for f in manifest.files if f.record is not None]
    console.print(f"rendered {len(recs)} phantoms in {dt:.1f} s ({len(recs) / dt:.1f} images/s)")

    env = {**os.environ, "HIPGEN_METRICS_PORT": "0", "HIPGEN_GRACE_PERIOD_S": "2"}
    proc, port, _ = _start_server(env)
    try:
        rows = _probe(port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()

    table = Table(title="gRPC server (python -m services.server)")
    for col in ("service", "health", "first RPC"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)

    where = Table(title="what is where", show_header=False)
    where.add_row("phantom data set", f"{data}/ (PNG + metadata.csv + phantom_specs.jsonl + manifest.json)")
    where.add_row("sample grid", str(grid))
    where.add_row("server", f"127.0.0.1:{port} (stopped; `make serve` keeps one running on :{settings.port})")
    small = sum(r.class_left == "small" or r.class_right == "small" for r in recs)
    where.add_row(
        "labels",
        f"{len(recs)} images, {small} with a small (<105°) hip; NA "
        f"{min(min(r.na_left, r.na_right) for r in recs):.1f}–"
        f"{max(max(r.na_left, r.na_right) for r in recs):.1f}°",
    )
    console.print(where)
    ok = all(h == "SERVING" for _, h, _ in rows) and len(rows) == 4
    console.print("[green]demo OK[/green]" if ok else "[red]demo found a problem[/red]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
