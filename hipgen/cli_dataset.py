"""The ``hipgen dataset`` commands: dataset jobs on a gateway through :mod:`hipgen.client` — ``create``
(optionally ``--watch``), ``watch``, ``get``, ``list``, ``cancel``. Registered on :data:`hipgen.cli.app`
when that module loads; gRPC is imported inside the commands, so the rest of the CLI does not load it.

Exit codes: 0 done; 2 bad input — an option this command cannot use, or a request the server refused
(INVALID_ARGUMENT naming the fields, an unknown job, a missing or refused token); 1 a server or network
error, or a watched job that FAILED or was CANCELLED. Every error is one red line, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hipgen.cli import _fail, app, console
from hipgen.errors import FieldError

if TYPE_CHECKING:
    from hipgen.client import DatasetJob, HipgenClient

dataset_app = typer.Typer(no_args_is_help=True, help="Dataset jobs on a hipgen gateway (DatasetService).")
app.add_typer(dataset_app, name="dataset")

#: The option a request field comes from, so that a server's complaint names what the user typed.
FIELD_OPTIONS = {
    "spec.output_uri": "--out",
    "spec.format": "--format",
    "spec.count": "--count",
    "spec.angles.uniform": "--na-range",
    "spec.angles.list": "--angles-list",
    "spec.angles.balanced": "--balanced/--na-range/--threshold",
    "spec.angles.histogram": "--histogram",
    "spec.angles": "--na-range/--angles-list/--balanced/--histogram",
    "spec.seed": "--seed",
    "spec.sampler": "--sampler",
    "spec.steps": "--steps",
    "spec.guidance_scale": "--guidance-scale",
    "spec.model_name": "--model",
    "spec.image_size": "--image-size",
    "spec.test_fraction": "--test-fraction",
    "spec.display_name": "--name",
    "spec.labels": "--labels",
    "spec.tolerance_deg": "--tolerance",
    "spec.max_regenerations": "--max-regenerations",
    "spec.reference_uri": "--reference",
    "spec.images_per_shard": "--images-per-shard",
    "spec.executor": "--executor",
    "request_id": "--request-id",
    "state_filter": "--state",
}
#: Codes that mean "the request as given cannot work" (exit 2) rather than "the server failed" (exit 1).
INPUT_CODES = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "OUT_OF_RANGE",
        "FAILED_PRECONDITION",
        "ALREADY_EXISTS",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
    }
)

Target = Annotated[str, typer.Option("--target", envvar="HIPGEN_TARGET", help="gateway address, host:port")]
TokenFile = Annotated[
    Path | None,
    typer.Option("--token-file", envvar="HIPGEN_TOKEN_FILE", help="file holding a bearer token"),
]
CaFile = Annotated[Path | None, typer.Option("--ca-file", help="CA certificate to trust (turns on TLS)")]
CertFile = Annotated[Path | None, typer.Option("--cert-file", help="client certificate (mutual TLS)")]
KeyFile = Annotated[Path | None, typer.Option("--key-file", help="client key (mutual TLS)")]
Timeout = Annotated[float, typer.Option("--timeout", min=0.001, help="deadline of each call, seconds")]
WatchTimeout = Annotated[
    float, typer.Option("--watch-timeout", min=0.001, help="longest wait for the job to finish, seconds")
]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output: one JSON object per line")]
DEFAULT_TARGET = "127.0.0.1:50051"


def _field_name(field: str) -> str:
    option = FIELD_OPTIONS.get(field)
    return f"{field} ({option})" if option else field


@contextmanager
def _call_errors() -> Iterator[None]:
    """Client and server errors as one line: bad input exits 2, server trouble 1."""
    from hipgen.client import ClientError

    try:
        yield
    except ClientError as e:
        if e.field_violations:
            text = "; ".join(f"{_field_name(f)}: {why}" for f, why in e.field_violations.items())
            msg = f"{e.code_name}: {text}"
        else:
            msg = str(e)
        if e.retry_after_s is not None:
            msg += f" (retry after {e.retry_after_s:.0f} s)"
        console.print(f"[red]error:[/red] {escape(msg)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2 if e.code_name in INPUT_CODES else 1) from None
    except FieldError as e:
        raise _fail(escape(f"{_field_name(e.field)}: {e.reason}")) from None
    except (ValueError, OSError) as e:
        raise _fail(escape(str(e).splitlines()[0] if str(e) else type(e).__name__)) from None


def _client(
    target: str,
    token_file: Path | None,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    timeout: float,
) -> HipgenClient:
    from hipgen.client import HipgenClient

    token = None
    if token_file is not None:
        try:
            token = token_file.read_text().strip() or None
        except OSError as e:
            raise _fail(f"--token-file {token_file}: {e.strerror or e}") from None
        if token is None:
            raise _fail(f"--token-file {token_file}: empty")
    with _call_errors():
        return HipgenClient(
            target, token=token, ca_file=ca_file, cert_file=cert_file, key_file=key_file, timeout_s=timeout
        )


def _pairs(text: str, option: str) -> list[tuple[float, float]]:
    """``"100,100;90,110"`` -> ``[(100, 100), (90, 110)]``."""
    try:
        pairs = []
        for item in filter(None, (p.strip() for p in text.split(";"))):
            left, right = (float(v) for v in item.split(","))
            pairs.append((left, right))
    except ValueError:
        raise _fail(f"{option} {text!r}: give LEFT,RIGHT pairs in degrees separated by ';'") from None
    if not pairs:
        raise _fail(f"{option}: give at least one LEFT,RIGHT pair")
    return pairs


def _numbers(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise _fail(f"{option} {text!r}: give comma-separated numbers") from None


def _print_job(job: DatasetJob, as_json: bool) -> None:
    if as_json:
        print(json.dumps(job.to_dict()), flush=True)
        return
    table = Table(title=f"dataset job {job.job_id}", show_header=False)
    p = job.progress
    rows: list[tuple[str, str]] = [
        ("state", job.state),
        ("images", f"{p.images_done} of {p.images_total}"),
        ("rejected", str(p.images_rejected)),
        ("out of tolerance", str(p.images_out_of_tolerance)),
        ("shards", f"{p.shards_done} of {p.shards_total}"),
        ("output", f"{job.output_uri} ({job.format})"),
        ("name", job.display_name),
        ("manifest", job.manifest_uri),
        ("score report", job.score_report_uri),
        ("created", str(job.create_time or "")),
        ("started", str(job.start_time or "")),
        ("ended", str(job.end_time or "")),
        ("kubernetes job", job.kubernetes_job_name),
    ]
    if job.fidelity:
        r = "n/a" if job.fidelity.pearson_r is None else f"{job.fidelity.pearson_r:.3f}"
        rows.append(("fidelity", f"MAE {job.fidelity.mae_deg:.2f}°, r {r} over {job.fidelity.angles} angles"))
    if job.error_code:
        rows.append(("error", f"{job.error_code}: {job.error_message}"))
    for k, v in rows:
        if v:
            table.add_row(k, v)
    Console().print(table)


def _watch(client: HipgenClient, job_id: str, timeout: float, as_json: bool) -> DatasetJob:
    """Follow a job with a progress bar until it is final; exit 1 if it FAILED or was CANCELLED."""
    last: DatasetJob | None = None
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rejected]} rejected"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    with _call_errors(), bar:
        task = bar.add_task(job_id[:8], total=None, rejected=0)
        for job in client.watch_dataset_job(job_id, timeout_s=timeout):
            last = job
            bar.update(
                task,
                description=f"{job_id[:8]} {job.state.lower()}",
                completed=job.progress.images_done,
                total=job.progress.images_total or None,
                rejected=job.progress.images_rejected,
            )
            if as_json:
                print(json.dumps(job.to_dict()), flush=True)
        if last is None or not last.done:
            last = client.get_dataset_job(job_id)
    p = last.progress
    if last.state == "FAILED":
        console.print(
            f"[red]error:[/red] job {job_id} FAILED: {last.error_code}: {escape(last.error_message)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if last.state == "CANCELLED":
        console.print(
            f"[yellow]job {job_id} was CANCELLED[/yellow] after {p.images_done} of {p.images_total} images "
            f"(listed in {last.manifest_uri or 'no manifest'})",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if last.state != "SUCCEEDED":
        console.print(f"[red]error:[/red] job {job_id} is still {last.state}", highlight=False)
        raise typer.Exit(1)
    fid = ""
    if last.fidelity:
        r = "n/a" if last.fidelity.pearson_r is None else f"{last.fidelity.pearson_r:.3f}"
        fid = f"; requested vs measured MAE {last.fidelity.mae_deg:.2f}°, r {r}"
    console.print(
        f"job {job_id} SUCCEEDED: {p.images_done} images ({p.images_rejected} rejected) in "
        f"{last.manifest_uri}{fid}",
        highlight=False,
        soft_wrap=True,
    )
    return last


@dataset_app.command("create")
def create(
    out: Annotated[
        str,
        typer.Option(
            "--out", "-o", help="empty output folder or file:///…, s3://… (a relative path is made absolute)"
        ),
    ],
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="images in the data set")],
    na_range: Annotated[
        tuple[float, float] | None,
        typer.Option(
            "--na-range", help="angles drawn uniformly in LOW HIGH, degrees (or the --balanced range)"
        ),
    ] = None,
    angles_list: Annotated[
        str | None, typer.Option("--angles-list", help='explicit LEFT,RIGHT pairs in order: "100,100;90,110"')
    ] = None,
    balanced: Annotated[
        bool, typer.Option("--balanced", help="alternate Big and Small hips within --na-range")
    ] = False,
    threshold: Annotated[float, typer.Option(help="Big/Small threshold of --balanced, degrees")] = 105.0,
    histogram: Annotated[
        tuple[str, str] | None,
        typer.Option("--histogram", help='angle histogram: EDGES WEIGHTS, e.g. "80,95,105,120" "1,2,1"'),
    ] = None,
    symmetric: Annotated[bool, typer.Option(help="the same requested angle on both hips")] = False,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="imagefolder | classfolders | webdataset | dicom")
    ] = "imagefolder",
    sampler: Annotated[
        str | None, typer.Option(help="ddpm | ddim | dpm_solver | lcm (default: the generator's)")
    ] = None,
    steps: Annotated[int, typer.Option(min=0, help="denoising steps (0: the sampler's default)")] = 0,
    seed: Annotated[int, typer.Option(min=0, help="job seed (every shard derives its own)")] = 0,
    guidance_scale: Annotated[float | None, typer.Option(help="classifier-free guidance scale")] = None,
    model: Annotated[str, typer.Option(help="generator model (default: the server's)")] = "",
    image_size: Annotated[int, typer.Option(min=0, help="image side, pixels (0: the model's)")] = 0,
    test_fraction: Annotated[float, typer.Option(help="fraction held out as a test split")] = 0.0,
    name: Annotated[str, typer.Option("--name", help="display name in listings")] = "",
    tolerance: Annotated[
        float | None, typer.Option("--tolerance", help="keep images measured within DEG of the request")
    ] = None,
    max_regenerations: Annotated[
        int, typer.Option(min=0, help="regenerations per image that misses --tolerance")
    ] = 0,
    reference: Annotated[
        str | None, typer.Option(help="reference set to score the result against (path or URI)")
    ] = None,
    labels: Annotated[str, typer.Option(help="captions state the measured | requested angles")] = "measured",
    images_per_shard: Annotated[int, typer.Option(min=0, help="images per shard (0: the server's)")] = 0,
    executor: Annotated[str | None, typer.Option(help="local | kubernetes (default: the gateway's)")] = None,
    request_id: Annotated[
        str | None, typer.Option(help="idempotency key (default: a fresh one; reuse it to retry safely)")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="follow the job until it finishes")] = False,
    target: Target = DEFAULT_TARGET,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    cert_file: CertFile = None,
    key_file: KeyFile = None,
    timeout: Timeout = 30.0,
    watch_timeout: WatchTimeout = 86_400.0,
    as_json: Json = False,
) -> None:
    """Start a dataset job: generate COUNT labelled images at requested angles into OUT, with a manifest.
    Prints the job id (or the job as JSON)."""
    from hipgen.client import builders

    dist: dict[str, Any] = {}
    if balanced:
        if na_range is None:
            raise _fail("--balanced needs --na-range LOW HIGH")
        dist["balanced"] = (na_range[0], na_range[1], threshold)
    elif na_range is not None:
        dist["na_range"] = na_range
    if angles_list is not None:
        dist["angles_list"] = _pairs(angles_list, "--angles-list")
    if histogram is not None:
        dist["histogram"] = (_numbers(histogram[0], "--histogram"), _numbers(histogram[1], "--histogram"))
    if len(dist) != 1:
        raise _fail("give exactly one of --na-range (optionally with --balanced), --angles-list, --histogram")
    client = _client(target, token_file, ca_file, cert_file, key_file, timeout)
    with client:
        with _call_errors():
            spec = builders.dataset_spec(
                out,
                count,
                format=fmt,
                symmetric=symmetric,
                seed=seed,
                sampler=sampler,
                steps=steps,
                guidance_scale=guidance_scale,
                model_name=model,
                image_size=image_size,
                test_fraction=test_fraction,
                display_name=name,
                labels=labels,
                tolerance_deg=tolerance,
                max_regenerations=max_regenerations,
                reference_uri=reference or "",
                images_per_shard=images_per_shard,
                executor=executor,
                **dist,
            )
            job = client.create_dataset_job(spec, request_id=request_id)
        console.print(
            f"created dataset job {job.job_id} ({job.state}): {job.count} {job.format} images → "
            f"{job.output_uri}",
            highlight=False,
            soft_wrap=True,
        )
        if watch:
            job = _watch(client, job.job_id, watch_timeout, as_json=False)
    if as_json:
        print(json.dumps(job.to_dict()), flush=True)
    else:
        print(job.job_id, flush=True)


@dataset_app.command("watch")
def watch_job(
    job_id: Annotated[str, typer.Argument(help="the job to follow")],
    target: Target = DEFAULT_TARGET,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    cert_file: CertFile = None,
    key_file: KeyFile = None,
    timeout: Timeout = 30.0,
    watch_timeout: WatchTimeout = 86_400.0,
    as_json: Json = False,
) -> None:
    """Follow a job with a progress bar until it finishes; exit 1 if it FAILED or was CANCELLED."""
    with _client(target, token_file, ca_file, cert_file, key_file, timeout) as client:
        _watch(client, job_id, watch_timeout, as_json)


@dataset_app.command("get")
def get_job(
    job_id: Annotated[str, typer.Argument(help="the job to show")],
    target: Target = DEFAULT_TARGET,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    cert_file: CertFile = None,
    key_file: KeyFile = None,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Show one job: state, progress, output, manifest, fidelity, error."""
    with _client(target, token_file, ca_file, cert_file, key_file, timeout) as client, _call_errors():
        job = client.get_dataset_job(job_id)
    _print_job(job, as_json)


@dataset_app.command("list")
def list_jobs(
    state: Annotated[
        str | None,
        typer.Option(
            help="only jobs in this state: queued | running | succeeded | failed | cancelling | cancelled"
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many jobs (newest first)")] = None,
    target: Target = DEFAULT_TARGET,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    cert_file: CertFile = None,
    key_file: KeyFile = None,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """List jobs, newest first (every page)."""
    jobs: list[DatasetJob] = []
    with _client(target, token_file, ca_file, cert_file, key_file, timeout) as client, _call_errors():
        for job in client.list_dataset_jobs(state=state, page_size=min(limit or 100, 100)):
            jobs.append(job)
            if as_json:
                print(json.dumps(job.to_dict()), flush=True)
            if limit is not None and len(jobs) >= limit:
                break
    if as_json:
        return
    table = Table()
    table.add_column("job", no_wrap=True, min_width=32)  # ids are what the other commands take: never cut
    for name in ("state", "images", "created"):
        table.add_column(name, no_wrap=True)
    for name in ("output", "name"):
        table.add_column(name, overflow="fold")
    for job in jobs:
        p = job.progress
        created = job.create_time.astimezone().strftime("%Y-%m-%d %H:%M") if job.create_time else ""
        images = f"{p.images_done}/{p.images_total}"
        table.add_row(job.job_id, job.state, images, created, job.output_uri, job.display_name)
    Console().print(table)
    console.print(f"{len(jobs)} job(s)", highlight=False)


@dataset_app.command("cancel")
def cancel_job(
    job_id: Annotated[str, typer.Argument(help="the job to stop")],
    target: Target = DEFAULT_TARGET,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    cert_file: CertFile = None,
    key_file: KeyFile = None,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Ask a job to stop after the images in flight (a finished job stays as it is)."""
    with _client(target, token_file, ca_file, cert_file, key_file, timeout) as client, _call_errors():
        job = client.cancel_dataset_job(job_id)
    if as_json:
        print(json.dumps(job.to_dict()), flush=True)
    else:
        note = " (already finished: nothing to cancel)" if job.done else ""
        console.print(f"job {job.job_id}: {job.state}{note}", highlight=False)
