"""``make run``: render a labelled phantom set, start the server on the embedded default, show it working.

Steps: (1) render phantoms into ``<out_dir>/phantoms`` (image folder + metadata.csv + manifest) and a
labelled sample grid; (2) start ``python -m services.server`` on a free local port; (3) check health for
every service, list them through server reflection and call each once (services whose issues have not
landed answer UNIMPLEMENTED); (4) measure a few of the phantoms through AngleService (one PredictAngle,
the rest over one StreamPredictAngle), print true vs measured Norberg angles and write the overlays to
``<out_dir>/angle_overlays``; (5) generate images at requested angles through GenerateService (LCM,
4 steps) into ``<out_dir>/generated`` with requested vs measured angles; (6) score the generated
images against pelvis views of the phantoms through ScoreService (StreamScoreSets, inline images):
distribution and structural metrics beside their pure-noise baselines, and angle fidelity; (7) print
what is where and stop the server.

The angle models come from the ``model_repository`` setting (``HIPGEN_MODEL_REPOSITORY``). The demo
prints the numbers without judging them (a development repository may hold untrained models), but any
error the service answers fails it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
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
ANGLE_COUNT = 6  # phantoms measured through AngleService


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server_process(
    env: dict[str, str],
    args: tuple[str, ...] = ("services.server",),
    ready: str = "server listening",
    port: int = 0,
) -> tuple[subprocess.Popen[str], int, list[str]]:
    """Start a server process (``python -m <args>``) on ``port`` (0: a free one); return it, its port and
    its log lines so far (it logs ``ready`` with the port once it serves)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: deque[str] = deque(
        maxlen=200
    )  # the last log lines, for the error message (a server may run for days)
    found: dict[str, int] = {}

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == ready:
                found["port"] = int(rec["port"])

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 90  # models load first; a busy 2-core machine is slow
    while "port" not in found:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{' '.join(args)} did not start:\n" + "\n".join(list(lines)[-20:]))
        time.sleep(0.05)
    return proc, found["port"], list(lines)


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


class AngleDemoError(RuntimeError):
    """AngleService answered an error: the demo fails with its message."""


def _angle_request(path: Path):  # -> angle_pb2.PredictAngleRequest
    from hipgen.api.v1 import angle_pb2, common_pb2

    image = common_pb2.Image(
        data=path.read_bytes(), encoding=common_pb2.IMAGE_ENCODING_PNG, file_name=path.name
    )
    return angle_pb2.PredictAngleRequest(image=image, include_overlay=True)


def _measure_angles(port: int, files: list[Path]) -> list:
    """AngleService responses for ``files`` in order: the first by PredictAngle, the rest over one
    StreamPredictAngle (both RPCs a client uses). Raises :class:`AngleDemoError` on any error."""
    from hipgen.api.v1 import angle_pb2, angle_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = angle_pb2_grpc.AngleServiceStub(channel)
        try:
            responses = [stub.PredictAngle(_angle_request(files[0]), timeout=60)]
            items = (
                angle_pb2.StreamPredictAngleRequest(item_id=p.name, request=_angle_request(p))
                for p in files[1:]
            )
            for item in stub.StreamPredictAngle(items, timeout=120):
                if item.HasField("error"):
                    raise AngleDemoError(f"StreamPredictAngle {item.item_id}: {item.error.message}")
                responses.append(item.result)
        except grpc.RpcError as e:
            raise AngleDemoError(f"AngleService: {e.code().name}: {e.details()}") from None
    if len(responses) != len(files):
        raise AngleDemoError(f"AngleService answered {len(responses)} of {len(files)} images")
    return responses


def _angle_table(entries: list, responses: list, overlays: Path) -> Table:
    """True vs measured NA per phantom; writes each overlay PNG into ``overlays``."""
    from hipgen.data.images import write_atomic

    table = Table(title="AngleService on phantoms: Norberg angle true / measured (degrees)")
    for col in ("file", "right", "left", "class R/L", "P(big) R/L"):
        table.add_column(col, no_wrap=True)
    for entry, resp in zip(entries, responses, strict=True):
        rec, label = entry.record, resp.label
        write_atomic(overlays / f"{Path(entry.path).stem}_overlay.png", resp.overlay_png)
        table.add_row(
            Path(entry.path).stem,
            f"{rec.na_right:.1f} / {label.na_right:.1f}",
            f"{rec.na_left:.1f} / {label.na_left:.1f}",
            f"{_class_name(label.class_right)}/{_class_name(label.class_left)}",
            f"{resp.probability_big_right:.2f}/{resp.probability_big_left:.2f}",
        )
    return table


# requested [left, right] NA of the demo's generated images: dysplastic, borderline, normal, mixed sides
GENERATE_CONDITIONS = ((80.0, 120.0), (105.0, 105.0), (125.0, 90.0))


def _generate(port: int, out: Path) -> tuple[Table, list]:
    """Generate through GenerateService (LCM, 4 steps, two seeds per condition), write the PNGs (marked
    synthetic) to ``out`` and tabulate requested vs measured NA. Raises :class:`AngleDemoError`."""
    from hipgen.api.v1 import common_pb2, generate_pb2, generate_pb2_grpc
    from hipgen.data.images import write_atomic

    request = generate_pb2.GenerateRequest(
        conditions=[common_pb2.NaCondition(na_left_deg=a, na_right_deg=b) for a, b in GENERATE_CONDITIONS],
        images_per_condition=2,
        seed=0,
        sampler=generate_pb2.SAMPLER_LCM,
        steps=4,
    )
    images, steps_seen = [], 0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            for event in generate_pb2_grpc.GenerateServiceStub(channel).Generate(request, timeout=120):
                if event.HasField("progress"):
                    steps_seen += 1
                else:
                    images.append(event.image)
        except grpc.RpcError as e:
            raise AngleDemoError(f"GenerateService: {e.code().name}: {e.details()}") from None
    table = Table(title=f"GenerateService (LCM-4, {steps_seen} progress events): NA requested / measured (°)")
    for col in ("file", "right", "left", "seed", "model"):
        table.add_column(col, no_wrap=True)
    for img in images:
        write_atomic(out / img.image.file_name, img.image.data)
        lab = img.label
        table.add_row(
            img.image.file_name,
            f"{img.requested.na_right_deg:.0f} / {lab.na_right:.1f}",
            f"{img.requested.na_left_deg:.0f} / {lab.na_left:.1f}",
            str(img.seed),
            f"{lab.provenance.generator} {lab.provenance.model_version}",
        )
    return table, images


def _score(port: int, phantoms: Path, generated: list, views: Path) -> Table:
    """Score the generated PNGs (with their requested angles) against pelvis views cut from the phantoms
    through ScoreService, sent inline; the views are also written to ``views``. Raises
    :class:`AngleDemoError`."""
    from hipgen.api.v1 import common_pb2, score_pb2, score_pb2_grpc
    from hipgen.data.imagefolder import iter_imagefolder
    from hipgen.data.images import encode_png, write_atomic
    from hipgen.data.views import pelvis_view

    def png(name: str, data: bytes) -> common_pb2.Image:
        return common_pb2.Image(data=data, encoding=common_pb2.IMAGE_ENCODING_PNG, file_name=name)

    real = [
        png(rec.file_name, encode_png(pelvis_view(rad.pixels, rec.keypoints())[0]))
        for rec, rad in iter_imagefolder(phantoms)
    ]
    views.mkdir(parents=True, exist_ok=True)  # the reference folder the dataset job is scored against
    for img in real:
        write_atomic(views / Path(img.file_name).name, img.data)
    synth = [png(g.image.file_name, g.image.data) for g in generated]
    conditions = [g.requested for g in generated]
    request = score_pb2.StreamScoreSetsRequest(
        request=score_pb2.ScoreSetsRequest(
            reference=score_pb2.ImageSet(inline_images=score_pb2.InlineImageSet(images=real)),
            candidate=score_pb2.ImageSet(
                inline_images=score_pb2.InlineImageSet(images=synth, conditions=conditions)
            ),
            metrics=["fid", "kid", "mmd", "precision", "recall", "ssim", "angle_fidelity"],
        )
    )
    events, result = 0, None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            for event in score_pb2_grpc.ScoreServiceStub(channel).StreamScoreSets(request, timeout=120):
                if event.HasField("result"):
                    result = event.result
                else:
                    events += 1
        except grpc.RpcError as e:
            raise AngleDemoError(f"ScoreService: {e.code().name}: {e.details()}") from None
    assert result is not None
    table = Table(
        title=f"ScoreService: {len(synth)} generated vs {len(real)} phantom views",
        caption=f"backbone {result.feature_backbone}; {events} progress events",
    )
    for col in ("metric", "value", "pure noise"):
        table.add_column(col)
    for m in result.metrics:
        table.add_row(
            m.name, f"{m.value:.4g}", f"{m.noise_baseline:.4g}" if m.HasField("noise_baseline") else "—"
        )
    for side, f in (("left", result.angle_fidelity_left), ("right", result.angle_fidelity_right)):
        table.add_row(f"angle MAE ({side})", f"{f.mean_absolute_error_deg:.1f}°", "")
    return table


DATASET_COUNT = 32
DATASET_RANGE = (80.0, 115.0)


def _dataset_job(port: int, out: Path, reference: Path) -> tuple[Table, bool]:
    """A dataset job through the gateway: 32 images over 80–115° (LCM-4), auto-labelled, written as an
    image folder with a manifest, scored against ``reference``. Watched with a progress bar; returns the
    summary table and whether everything checked out. Raises :class:`AngleDemoError`."""
    from rich.progress import Progress

    from hipgen.api.v1 import dataset_pb2, dataset_pb2_grpc, generate_pb2
    from hipgen.data.manifest import verify_manifest

    spec = dataset_pb2.DatasetJobSpec(
        output_uri=out.resolve().as_uri(),
        format=dataset_pb2.DATASET_FORMAT_IMAGEFOLDER,
        count=DATASET_COUNT,
        angles=dataset_pb2.AngleDistribution(
            uniform=dataset_pb2.UniformAngles(low_deg=DATASET_RANGE[0], high_deg=DATASET_RANGE[1])
        ),
        seed=0,
        sampler=generate_pb2.SAMPLER_LCM,
        steps=4,
        images_per_shard=8,
        reference_uri=reference.resolve().as_uri(),
        display_name="make run demo",
    )
    t0 = time.perf_counter()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = dataset_pb2_grpc.DatasetServiceStub(channel)
        try:
            job = stub.CreateDatasetJob(
                dataset_pb2.CreateDatasetJobRequest(
                    spec=spec, request_id=f"demo-{os.getpid()}-{time.time_ns()}"
                ),
                timeout=30,
            ).job
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task(f"dataset job {job.job_id[:8]}", total=DATASET_COUNT)
                for event in stub.WatchDatasetJob(
                    dataset_pb2.WatchDatasetJobRequest(job_id=job.job_id), timeout=600
                ):
                    job = event.job
                    bar.update(task, completed=job.progress.images_done)
        except grpc.RpcError as e:
            raise AngleDemoError(f"DatasetService: {e.code().name}: {e.details()}") from None
    dt = time.perf_counter() - t0
    state = dataset_pb2.DatasetJobState.Name(job.state).removeprefix("DATASET_JOB_STATE_")
    if state != "SUCCEEDED":
        raise AngleDemoError(f"dataset job {job.job_id} ended {state}: {job.error.message}")
    verified = verify_manifest(out)
    report = json.loads((out / "score" / "report.json").read_text())
    metrics = {m.get("name"): m.get("value", 0.0) for m in report.get("metrics", [])}
    table = Table(title="DatasetService via the gateway: a 32-image dataset job", show_header=False)
    table.add_row("job", job.job_id)
    table.add_row("state", f"{state} in {dt:.1f} s ({DATASET_COUNT / dt:.1f} images/s)")
    table.add_row("images", f"{job.progress.images_done} written in {job.progress.shards_done} shards")
    table.add_row("requested NA", f"uniform {DATASET_RANGE[0]:.0f}–{DATASET_RANGE[1]:.0f}° per hip (LCM-4)")
    table.add_row(
        "fidelity (measured vs requested)",
        f"r = {job.fidelity.pearson_r:.2f}, MAE = {job.fidelity.mae_deg:.1f}° ({job.fidelity.angles} angles)",
    )
    table.add_row(
        "manifest", f"{job.manifest_uri} (sha256 check: {'OK' if verified.ok else verified.problems[:3]})"
    )
    if "error" in report:
        table.add_row("score report", f"[red]{report['error']}[/red]")
    else:
        table.add_row("score report", f"{job.score_report_uri}")
        table.add_row(
            "FID / KID vs phantom views",
            f"{metrics.get('fid', float('nan')):.2f} / {metrics.get('kid', float('nan')):.4f}",
        )
    return table, verified.ok and "error" not in report


def _review_app(base: dict[str, str], gateway_port: int, out: Path) -> tuple[subprocess.Popen[str], str, str]:
    """Start the review web app on the gateway; return it, its URL and a one-time admin link, after
    checking that it lists the demo's dataset job through the gateway."""
    import urllib.request

    env = {
        **base,
        "HIPGEN_REVIEW_GATEWAY_ADDRESS": f"127.0.0.1:{gateway_port}",
        "HIPGEN_REVIEW_DB_URL": f"sqlite:///{(out / 'demo-review.db').resolve()}",
        "HIPGEN_REVIEW_DATA_ROOT": str(out.resolve()),
    }
    proc, port, lines = start_server_process(env, ("services.review", "--admin-link"), "review app listening")
    url = f"http://127.0.0.1:{port}"
    from services.review.server import ADMIN_LINK_PREFIX

    deadline = time.monotonic() + 10
    while not any(line.startswith(ADMIN_LINK_PREFIX) for line in list(lines)) and time.monotonic() < deadline:
        time.sleep(0.05)  # printed just after the ready line
    link = next(
        (
            line.split(ADMIN_LINK_PREFIX, 1)[1].strip()
            for line in list(lines)
            if line.startswith(ADMIN_LINK_PREFIX)
        ),
        None,
    )
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as resp:  # noqa: S310 (our own loopback URL)
            healthy = resp.status == 200
    except OSError as e:
        proc.terminate()
        raise AngleDemoError(f"the review app at {url} did not answer: {e}") from e
    if not healthy or link is None:
        proc.terminate()
        raise AngleDemoError(f"the review app at {url} is not healthy (admin link: {link is not None})")
    return proc, url, link


def _class_name(value: int) -> str:
    from hipgen.api.v1 import common_pb2

    return common_pb2.HipClass.Name(value).removeprefix("HIP_CLASS_").lower()


SERVICE_PROCESSES = ("angle", "generate", "score")


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    import argparse

    from hipgen.phantom.dataset import write_phantom_set
    from hipgen.phantom.figure import write_sample_grid

    parser = argparse.ArgumentParser(prog="python -m hipgen.demo", description="make run: the hipgen demo")
    parser.add_argument("--once", action="store_true", help="stop the servers after the demo")
    args = parser.parse_args(argv)

    settings = get_settings()
    out = Path(settings.out_dir)
    data = out / "phantoms"
    for own in (data, out / "dataset", out / "phantom_views"):  # the demo's own outputs: start clean
        if own.exists():
            shutil.rmtree(own)
    for db in [*out.glob("demo-datasets.db*"), *out.glob("demo-review.db*")]:
        db.unlink()
    console.rule("[bold]hipgen demo")
    t0 = time.perf_counter()
    with console.status(f"rendering {COUNT} labelled phantoms"):
        manifest = write_phantom_set(data, COUNT, "imagefolder", seed=0, size=512, distribution="uniform")
    dt = time.perf_counter() - t0
    grid = write_sample_grid(out / "phantom_grid.png", count=12, seed=0)
    recs = [f.record for f in manifest.files if f.record is not None]
    console.print(f"rendered {len(recs)} phantoms in {dt:.1f} s ({len(recs) / dt:.1f} images/s)")

    # one process per service, as deployed, and the gateway in front of them
    base = {**os.environ, "HIPGEN_GRACE_PERIOD_S": "2", "HIPGEN_SCORE_DATA_ROOT": str(out.resolve())}
    procs: list[subprocess.Popen[str]] = []
    addresses: dict[str, str] = {}
    metrics: dict[str, int] = {}
    try:
        with console.status("starting angle, generate and score servers and the gateway"):
            for name in SERVICE_PROCESSES:
                metrics[name] = _free_port()
                env = {**base, "HIPGEN_METRICS_PORT": str(metrics[name])}
                proc, svc_port, _ = start_server_process(env, ("services.server", "--services", name))
                procs.append(proc)
                addresses[name] = f"127.0.0.1:{svc_port}"
            metrics["gateway"] = _free_port()
            gw_env = {
                **base,
                "HIPGEN_METRICS_PORT": str(metrics["gateway"]),
                "HIPGEN_ANGLE_ADDRESS": addresses["angle"],
                "HIPGEN_GENERATE_ADDRESS": addresses["generate"],
                "HIPGEN_SCORE_ADDRESS": addresses["score"],
                "HIPGEN_DATASET_DB_URL": f"sqlite:///{(out / 'demo-datasets.db').resolve()}",
                "HIPGEN_DATASET_OUTPUT_ROOT": str(out.resolve()),
            }
            proc, port, _ = start_server_process(gw_env, ("services.gateway",), "gateway listening")
            procs.append(proc)
    except BaseException:
        _stop(procs)
        raise
    angle_entries = [f for f in manifest.files if f.record is not None][:ANGLE_COUNT]
    overlays = out / "angle_overlays"
    if overlays.exists():
        shutil.rmtree(overlays)
    generated = out / "generated"
    if generated.exists():
        shutil.rmtree(generated)
    angle_error = generate_error = score_error = dataset_error = None
    dataset_ok = False
    try:
        rows = _probe(port)
        try:
            responses = _measure_angles(port, [data / f.path for f in angle_entries])
        except AngleDemoError as e:
            angle_error = str(e)
        try:
            generate_table, generated_images = _generate(port, generated)
        except AngleDemoError as e:
            generate_error = str(e)
        if generate_error is None:
            try:
                score_table = _score(port, data, generated_images, out / "phantom_views")
            except AngleDemoError as e:
                score_error = str(e)
        if score_error is None and generate_error is None:
            try:
                dataset_table, dataset_ok = _dataset_job(port, out / "dataset", out / "phantom_views")
            except AngleDemoError as e:
                dataset_error = str(e)
        review = None
        if dataset_ok:
            try:
                review = _review_app(base, port, out)
                procs.append(review[0])
            except AngleDemoError as e:
                dataset_error = f"review app: {e}"
    except BaseException:
        _stop(procs)
        raise

    table = Table(title=f"gateway 127.0.0.1:{port} (python -m services.gateway) → one server per service")
    for col in ("service", "health", "first RPC (an empty request)"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if angle_error is None:
        console.print(_angle_table(angle_entries, responses, overlays))
    else:
        console.print(f"[red]AngleService failed:[/red] {angle_error}", highlight=False, soft_wrap=True)
        console.print(
            f"(models are read from {settings.model_repository}; set HIPGEN_MODEL_REPOSITORY to a repository "
            "with angle_keypoints + angle_locator, or train and export them: `hipgen train angle`, "
            "`hipgen export angle`)",
            highlight=False,
            soft_wrap=True,
        )

    if generate_error is None:
        console.print(generate_table)
    else:
        console.print(f"[red]GenerateService failed:[/red] {generate_error}", highlight=False, soft_wrap=True)
    if generate_error is None and score_error is None:
        console.print(score_table)
    elif score_error is not None:
        console.print(f"[red]ScoreService failed:[/red] {score_error}", highlight=False, soft_wrap=True)
    if dataset_error is not None:
        console.print(f"[red]DatasetService failed:[/red] {dataset_error}", highlight=False, soft_wrap=True)
    elif generate_error is None and score_error is None:
        console.print(dataset_table)

    where = Table(title="what is where", show_header=False)
    where.add_row("phantom data set", f"{data}/ (PNG + metadata.csv + phantom_specs.jsonl + manifest.json)")
    where.add_row("sample grid", str(grid))
    if angle_error is None:
        where.add_row("angle overlays", f"{overlays}/ ({len(angle_entries)} PNGs from AngleService)")
    if generate_error is None:
        where.add_row("generated", f"{generated}/ (PNGs marked synthetic, labelled by the angle model)")
    if dataset_error is None and generate_error is None and score_error is None:
        where.add_row("dataset job", f"{out / 'dataset'}/ (manifest.json, metadata.csv, score/report.json)")
    where.add_row("gateway", f"127.0.0.1:{port} (gRPC; health, reflection)")
    if review is not None:
        where.add_row(
            "review app", f"{review[1]} (label review and reader studies; python -m services.review)"
        )
    for name in SERVICE_PROCESSES:
        where.add_row(f"{name} server", addresses[name])
    where.add_row("/metrics", ", ".join(f"{n} :{p}" for n, p in metrics.items()))
    small = sum(r.class_left == "small" or r.class_right == "small" for r in recs)
    where.add_row(
        "labels",
        f"{len(recs)} images, {small} with a small (<105°) hip; NA "
        f"{min(min(r.na_left, r.na_right) for r in recs):.1f}–"
        f"{max(max(r.na_left, r.na_right) for r in recs):.1f}°",
    )
    console.print(where)
    ok = (
        review is not None
        and all(h == "SERVING" for _, h, _ in rows)
        and len(rows) == 4
        and angle_error is None
        and generate_error is None
        and score_error is None
        and dataset_error is None
        and dataset_ok
    )
    console.print("[green]demo OK[/green]" if ok else "[red]demo found a problem[/red]")
    if review is not None:
        console.print(f"[bold]review app:[/bold] {review[1]}", highlight=False, soft_wrap=True)
        console.print(
            f"sign in as admin (one-time link): {review[2]}\n"
            "  review the dataset job's labels, or start a reader study of out/phantom_views (real) "
            "against out/dataset (synthetic)",
            highlight=False,
            soft_wrap=True,
        )
    if ok and not args.once:
        console.print(
            f"serving: gateway 127.0.0.1:{port} — try `hipgen dataset list --target 127.0.0.1:{port}`; "
            "Ctrl-C stops everything",
            highlight=False,
        )
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(0.5) and all(p.poll() is None for p in procs):
            pass
    _stop(procs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
