"""The ``hipgen`` command line: render phantom data sets, convert between formats, inspect files,
de-identify DICOM.

Every command that reports results takes ``--json`` and then prints the one label record (DESIGN §1).
Bad input ends with one red line naming the file and exit code 2 — never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from hipgen import __version__
from hipgen.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
console = Console(stderr=True)

Format = Annotated[
    str, typer.Option("--format", "-f", help="imagefolder | classfolders | webdataset | dicom")
]
SplitRatio = Annotated[
    tuple[float, float, float] | None,
    typer.Option(
        "--split", help="stratified train/val/test split by ratio, e.g. 219 31 84 (the published set)"
    ),
]


def _fail(msg: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _data_folder(data: Path | None) -> str | None:
    """A ``--data`` folder as a recipe takes it (None: phantoms), or one red line when it is missing."""
    if data is not None and not data.exists():
        raise _fail(f"{data}: no such folder")
    return str(data) if data else None


@contextmanager
def _user_errors() -> Iterator[None]:
    """Everything a user's input or environment can cause becomes one red line and exit code 2."""
    try:
        yield
    except (InputError, ValueError, OSError) as e:  # FileExistsError, PermissionError, … are OSErrors
        raise _fail(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


@app.callback()
def _settings_first() -> None:
    """Read the settings once up front, so a bad HIPGEN_* value or config file is one clear line."""
    from hipgen.settings import get_settings

    try:
        get_settings()
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise _fail(f"settings: {problems}") from None
    except (InputError, ValueError, OSError) as e:  # a missing or malformed HIPGEN_CONFIG file
        raise _fail(f"settings: {e}") from None


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )


@app.command()
def phantom(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (created; must be empty)")],
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="number of images")] = 100,
    fmt: Format = "imagefolder",
    na_range: Annotated[
        tuple[float, float] | None, typer.Option("--na-range", help="NA range per side, degrees: LOW HIGH")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="seed of the whole set (each image's own seed is in its label)")
    ] = 0,
    size: Annotated[int, typer.Option(help="upright image width, pixels", min=64, max=8192)] = 512,
    distribution: Annotated[str, typer.Option(help="uniform | population | tidy")] = "uniform",
    bits: Annotated[int, typer.Option(help="PNG/DICOM bit depth: 8 or 16")] = 8,
    split: SplitRatio = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one label record per line")] = False,
) -> None:
    """Render a labelled phantom data set (pixels, keypoints, radii, NA, class, grade, full spec)."""
    from hipgen.data.datasets import check_format
    from hipgen.phantom import DISTRIBUTIONS
    from hipgen.phantom.dataset import write_phantom_set

    with _user_errors():
        check_format(fmt)
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"--distribution {distribution!r} is not one of {', '.join(sorted(DISTRIBUTIONS))}"
            )
        if bits not in (8, 16):
            raise ValueError(f"--bits must be 8 or 16, got {bits}")
        with _progress() as bar:
            task = bar.add_task("rendering", total=count)

            def done(rec) -> None:
                if as_json:
                    print(json.dumps(rec.to_dict()), flush=True)
                bar.advance(task)

            manifest = write_phantom_set(
                out,
                count,
                fmt,
                seed=seed,
                size=size,
                distribution=distribution,
                na_range=na_range,
                bits=bits,
                split_ratio=split,
                on_record=done,
            )
    counts = f", split {manifest.split_counts}" if split else ""
    console.print(
        f"wrote {count} {fmt} images to {out} ({len(manifest.files)} files in manifest.json{counts})"
    )


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="data set folder (format detected)")],
    dst: Annotated[Path, typer.Argument(help="output folder (created; must be empty)")],
    to: Annotated[str, typer.Option("--to", help="imagefolder | classfolders | webdataset | dicom")],
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="skip unreadable files and report them")
    ] = False,
    bits: Annotated[int, typer.Option(help="PNG/DICOM bit depth: 8 or 16")] = 16,
    split: SplitRatio = None,
    split_seed: Annotated[int, typer.Option(help="seed of the split")] = 0,
    square: Annotated[str | None, typer.Option(help="make square: crop | pad")] = None,
    resize: Annotated[int | None, typer.Option(help="resize to SIZE×SIZE (use a power of two)")] = None,
    clahe: Annotated[bool, typer.Option(help="contrast-limited adaptive histogram equalisation")] = False,
) -> None:
    """Convert a data set between formats; labels are carried over exactly (and follow any
    preprocessing: keypoints move with the pixels)."""
    from hipgen.data.convert import convert_dataset, split_assignment
    from hipgen.data.datasets import check_format, detect_format
    from hipgen.data.preprocess import Preprocessing

    with _user_errors():
        check_format(to)
        if square not in (None, "crop", "pad"):
            raise ValueError(f"--square must be crop or pad, got {square!r}")
        pre = None
        if square or resize or clahe:
            pre = Preprocessing.standard(square=square or "crop", size=resize, clahe=clahe, normalize=None)
        src_fmt = detect_format(src)
        on_error = "skip" if skip_bad else "raise"
        splits = split_assignment(src, split, seed=split_seed, on_error=on_error) if split else None
        with _progress() as bar:
            task = bar.add_task(f"{src_fmt} → {to}", total=None)
            result = convert_dataset(
                src,
                dst,
                to,
                bits=bits,
                splits=splits,
                preprocessing=pre,
                provenance={"split_ratio": list(split) if split else None},
                on_error=on_error,
                progress=lambda _: bar.advance(task),
            )
    console.print(f"converted {result.count} images from {src_fmt} to {to} in {dst}")
    for item in result.report.skipped:
        console.print(
            f"[yellow]skipped[/yellow] {item.source}: {item.reason}", highlight=False, soft_wrap=True
        )
    for warning in result.report.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}", highlight=False, soft_wrap=True)


LABEL_SUFFIXES = (".csv", ".json", ".mat")


@app.command()
def inspect(
    file: Annotated[
        Path, typer.Argument(help="an image (PNG, JPEG, TIFF, DICOM) or a label file (.csv .json .mat)")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show what hipgen sees in one file: size, bit depth, spacing, DICOM summary and labels."""
    from hipgen.data.images import looks_like_dicom, read_image

    if not file.is_file():
        raise _fail(f"{file}: no such file")
    info: dict[str, Any] = {"file": str(file)}
    with _user_errors():
        if file.suffix.lower() in LABEL_SUFFIXES:
            info["labels"] = [r.to_dict() for r in _label_file(file)]
        else:
            if looks_like_dicom(file):
                from hipgen.data.dicom import dicom_summary, read_synthetic_labels

                info["dicom"] = dicom_summary(file)
                rec = read_synthetic_labels(file)
                if rec is not None:
                    info["label"] = rec.to_dict()
            img = read_image(file)
            h, w = img.pixels.shape
            info.update(
                format=img.format,
                width=w,
                height=h,
                bit_depth=img.bit_depth,
                pixel_spacing_mm=img.pixel_spacing_mm,
                metadata=img.metadata,
            )
            if "label" not in info:
                rec = _sibling_label(file)
                if rec is not None:
                    info["label"] = rec.to_dict()
    if as_json:
        print(json.dumps(info, default=str))
        return
    table = Table(title=str(file), show_header=False)
    for k, v in info.items():
        if k not in ("file", "label", "labels", "dicom", "metadata"):
            table.add_row(k, str(v))
    for section in ("dicom", "metadata", "label"):
        for k, v in (info.get(section) or {}).items():
            table.add_row(f"{section}.{k}", str(v))
    for i, rec in enumerate(info.get("labels", [])):
        table.add_row(
            f"label[{i}]",
            f"{rec['file_name']}: NA left {rec['na_left']:.2f}°, right {rec['na_right']:.2f}°, "
            f"{rec['class_left']}/{rec['class_right']}, grade {rec['grade_left']}/{rec['grade_right']}",
        )
    Console().print(table)


def _label_file(file: Path) -> list:
    from hipgen.data import keypoints

    suffix = file.suffix.lower()
    if suffix == ".csv":
        return keypoints.read_labels_csv(file)
    if suffix == ".json":
        return keypoints.read_labels_json(file)
    return [keypoints.mat_record(file, file.with_suffix(".png").name)]


def _sibling_label(file: Path):
    """The label record of an image inside an image folder (``metadata.csv`` beside it or one above)."""
    from hipgen.data.imagefolder import find_label

    try:
        return find_label(file)
    except InputError as e:
        console.print(f"[yellow]labels not read:[/yellow] {e}", highlight=False, soft_wrap=True)
        return None


@app.command()
def deidentify(
    src: Annotated[Path, typer.Argument(help="a DICOM file or a folder of them")],
    dst: Annotated[Path, typer.Argument(help="output file or folder (files keep their relative paths)")],
    salt: Annotated[
        str, typer.Option(envvar="HIPGEN_DEID_SALT", help="secret that keys the UID/ID remapping")
    ],
    allow_burned_in: Annotated[
        bool,
        typer.Option(help="accept images flagged BurnedInAnnotation=YES (their pixels may hold identifiers)"),
    ] = False,
) -> None:
    """De-identify DICOM inputs (PS3.15 basic profile subset) before anything else touches them."""
    from hipgen.data.dicom import deidentify_file
    from hipgen.data.images import looks_like_dicom

    if not src.exists():
        raise _fail(f"{src}: no such file or folder")
    pairs = (
        [(src, dst)]
        if src.is_file()
        else [
            (p, dst / p.relative_to(src))
            for p in sorted(src.rglob("*"))
            if p.is_file() and looks_like_dicom(p)
        ]
    )
    if not pairs:
        raise _fail(f"{src}: no DICOM files found")
    done = 0
    with _progress() as bar:
        task = bar.add_task("de-identifying", total=len(pairs))
        for s, d in pairs:
            try:
                deidentify_file(s, d, salt=salt, allow_burned_in=allow_burned_in)
                done += 1
            except InputError as e:  # one bad file is reported, the others still go through
                console.print(f"[yellow]skipped[/yellow] {e}", highlight=False, soft_wrap=True)
            bar.advance(task)
    console.print(f"de-identified {done} of {len(pairs)} files into {dst}")
    if done < len(pairs):
        raise typer.Exit(2)


@app.command()
def grid(
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write")] = Path("docs/phantom_grid.png"),
    count: Annotated[int, typer.Option(min=1, max=64)] = 12,
    seed: int = 0,
    distribution: str = "uniform",
    labels: Annotated[bool, typer.Option(help="draw heads, rims and both NA")] = True,
) -> None:
    """Write a sample grid of phantoms (the README picture)."""
    from hipgen.phantom.figure import write_sample_grid

    with _user_errors():
        p = write_sample_grid(out, count=count, seed=seed, distribution=distribution, labels=labels)
    console.print(f"wrote {p}")


train_app = typer.Typer(
    no_args_is_help=True, help="Train models (needs the training stack: make setup-train)."
)
app.add_typer(train_app, name="train")


def _training(module: str) -> Any:
    """Import a training module, or say in one line how to get the training stack."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise _fail(f"training needs {e.name}: run `make setup-train`") from None


@train_app.command("angle")
def train_angle(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="run folder for checkpoints and evaluation")
    ] = Path("runs/angle"),
    count: Annotated[
        int, typer.Option(min=1, help="phantoms to render (219 = the published train size)")
    ] = 3000,
    data: Annotated[
        Path | None, typer.Option(help="train on this labelled folder instead of phantoms")
    ] = None,
    seed: int = 0,
    backbone: str = "mobilenet_v3_large",
    head: Annotated[
        str, typer.Option(help="heatmap (soft-argmax) | regression (published baseline)")
    ] = "heatmap",
    locator_steps: Annotated[int, typer.Option(min=0)] = 1500,
    keypoint_steps: Annotated[int, typer.Option(min=0)] = 3000,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    test_count: Annotated[int, typer.Option(min=0, help="fresh held-out phantoms to evaluate on")] = 300,
    shifted_count: Annotated[int, typer.Option(min=0, help="fresh shifted phantoms to evaluate on")] = 200,
    small_count: Annotated[
        int, typer.Option(min=0, help="fresh phantoms at low-resolution export sizes (384–640 px)")
    ] = 150,
    weights: Annotated[
        Path | None, typer.Option(help="local torchvision state dict for the backbone")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="render processes")] = 2,
    resume: Annotated[
        Path | None, typer.Option(help="continue from this run folder (0 steps reuses that stage as is)")
    ] = None,
    crop_span: Annotated[
        float | None,
        typer.Option(
            min=0.3, max=1.2, help="hip crop side / inter-head distance (default: resumed model's, else 0.45)"
        ),
    ] = None,
) -> None:
    """Train the angle models (locator + hip keypoints/classifier) and evaluate them."""
    recipe_mod = _training("training.angle.recipe")
    models = _training("training.angle.models")
    with _user_errors():
        models.check_backbone(backbone)
        models.check_head(head)
    folder = _data_folder(data)
    if weights is not None and not weights.is_file():
        raise _fail(f"{weights}: no such file")
    recipe = recipe_mod.AngleRecipe(
        count=count,
        seed=seed,
        data=folder,
        backbone=backbone,
        head=head,
        locator_steps=locator_steps,
        keypoint_steps=keypoint_steps,
        batch_size=batch_size,
        test_count=test_count,
        shifted_count=shifted_count,
        small_count=small_count,
        weights=str(weights) if weights else None,
        workers=workers,
        resume=str(resume) if resume else None,
        crop_span=crop_span,
    )
    if resume is not None and not (resume / "keypoints.pt").is_file():
        raise _fail(f"{resume}: not a `hipgen train angle` run folder (no keypoints.pt)")
    with _user_errors():
        report = recipe_mod.run(recipe, out)
    _print_eval(report["eval"])
    console.print(f"wrote {out}/locator.pt, {out}/keypoints.pt, {out}/eval.json, {out}/eval.png")


@train_app.command("diffusion")
def train_diffusion(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="run folder (checkpoint, model, ONNX, grids)")
    ] = Path("runs/diffusion"),
    count: Annotated[int, typer.Option(min=1, help="phantoms to render")] = 2000,
    data: Annotated[
        Path | None, typer.Option(help="train on this labelled folder instead of phantoms")
    ] = None,
    seed: int = 0,
    size: Annotated[int, typer.Option(min=16, max=512, help="pelvis-view side, pixels")] = 128,
    tiny: Annotated[bool, typer.Option(help="the test-sized UNet")] = False,
    steps: Annotated[int, typer.Option(min=1)] = 20_000,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="steps between checkpoints and grids")] = 500,
    grid_steps: Annotated[int, typer.Option(min=1, help="DDIM steps of the sample grids")] = 25,
    resume: Annotated[bool, typer.Option(help="continue from OUT/checkpoint")] = False,
    workers: Annotated[int, typer.Option(min=1, help="render processes")] = 2,
    vae: Annotated[
        Path | None, typer.Option(help="a `hipgen train vae` run: denoise its latents (the SD-like path)")
    ] = None,
    hint: Annotated[
        bool, typer.Option(help="also condition on the rays the rims must lie on (spatial channel)")
    ] = False,
    init: Annotated[Path | None, typer.Option(help="fine-tune from this model.pt")] = None,
) -> None:
    """Train the angle-conditioned diffusion generator on pelvis views (DDPM, EMA, CFG dropout)."""
    mod = _training("training.diffusion.recipe")
    folder = _data_folder(data)
    if size % 8:
        raise _fail(f"--size {size}: must be a multiple of 8 (the UNet halves it three times)")
    recipe = mod.DiffusionRecipe(
        count=count,
        seed=seed,
        data=folder,
        size=size,
        tiny=tiny,
        steps=steps,
        batch_size=batch_size,
        checkpoint_every=checkpoint_every,
        grid_steps=grid_steps,
        resume=resume,
        workers=workers,
        vae=str(vae) if vae else None,
        hint=hint,
        init=str(init) if init else None,
    )
    if init is not None and not init.is_file():
        raise _fail(f"{init}: no such model")
    if vae is not None and not (vae / "vae.json").is_file():
        raise _fail(f"{vae}: no vae.json (run `hipgen train vae --out {vae}` first)")
    with _user_errors():
        report = mod.run(recipe, out)
    console.print(
        f"trained {report['steps']} steps on {report['train_images']} pelvis views; loss "
        f"{report['loss_first_100']:.4f} → {report['loss_last_100']:.4f}"
    )
    console.print(f"wrote {out}/model.pt, {out}/unet.onnx, {out}/train.json, {out}/samples_*.png")


@app.command()
def screen(
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/screen"),
    backbones: Annotated[
        str, typer.Option(help="comma-separated torchvision names; 'all' = the default list")
    ] = "all",
    heads: Annotated[str, typer.Option(help="heatmap, regression or both (comma-separated)")] = "heatmap",
    model_repo: Annotated[
        Path, typer.Option(help="repository with the angle_locator every candidate shares")
    ] = Path("model_repository"),
    count: Annotated[int, typer.Option(min=1)] = 800,
    test_count: Annotated[int, typer.Option(min=1)] = 150,
    steps: Annotated[int, typer.Option(min=1)] = 400,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    max_seconds: Annotated[float, typer.Option(min=1, help="wall-clock cap per architecture")] = 150.0,
    seed: int = 0,
) -> None:
    """Screen backbones for the hip keypoint model under one budget: CSV, markdown and a plot."""
    mod = _training("training.angle.screen")
    from hipgen.angle.measure import measurer_from_backend
    from hipgen.inference.backend import OrtBackend
    from training.angle.data import render_set
    from training.angle.models import SCREEN_BACKBONES
    from training.angle.recipe import TEST_SEED_OFFSET

    names = (
        list(SCREEN_BACKBONES)
        if backbones == "all"
        else [b.strip() for b in backbones.split(",") if b.strip()]
    )
    head_list = [h.strip() for h in heads.split(",") if h.strip()]
    models = _training("training.angle.models")
    with _user_errors():
        for name in names:
            models.check_backbone(name)
        for head in head_list:
            models.check_head(head)
        if not names or not head_list:
            raise ValueError("name at least one backbone and one head")
        located = measurer_from_backend(OrtBackend(model_repo))
        data = render_set(count, seed)
        test = render_set(test_count, seed + TEST_SEED_OFFSET, distribution="population")
        budget = mod.ScreenBudget(steps=steps, batch_size=batch_size, max_seconds=max_seconds, seed=seed)
        rows = mod.screen(
            names,
            head_list,
            data,
            test,
            located.locator,
            budget,
            pipeline=located.config,
            on_row=lambda r: console.print(f"{r['backbone']} {r['head']}: MAE {r['mae']:.2f}°"),
        )
        note = (
            f"`{' '.join(sys.argv)}` — {count} training phantoms, {test_count} held-out population phantoms, "
            f"{steps} steps × batch {batch_size}, cap {max_seconds:.0f} s per architecture, "
            f"shared locator from {model_repo}."
        )
        paths = mod.write_reports(rows, out, note=note)
    console.print(f"wrote {', '.join(map(str, paths))}")


evaluate_app = typer.Typer(no_args_is_help=True, help="Evaluate deployed models (ONNX) on labelled data.")
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.command("angle")
def evaluate_angle(
    data: Annotated[
        Path | None, typer.Option(help="your labelled folder (any supported format); default: fresh phantoms")
    ] = None,
    repo: Annotated[Path, typer.Option("--repo", help="model repository")] = Path("model_repository"),
    model: str = "angle_keypoints",
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for eval.json and eval.png")] = Path(
        "runs/eval"
    ),
    test_count: Annotated[int, typer.Option(min=0)] = 300,
    shifted_count: Annotated[int, typer.Option(min=0)] = 200,
    small_count: Annotated[
        int, typer.Option(min=0, help="the test population at low-resolution export sizes (384–640 px)")
    ] = 150,
    seed: int = 0,
    record: Annotated[bool, typer.Option(help="write the metrics into the model's MANIFEST.json")] = False,
) -> None:
    """Measure a labelled set with the exported models and report NA and classifier metrics."""
    rec = _training("training.angle.recipe")
    from hipgen.angle.measure import measurer_from_backend
    from hipgen.inference.backend import OrtBackend
    from training.angle.data import load_folder
    from training.angle.evaluate import plot

    _data_folder(data)
    if data is None and test_count == 0 and shifted_count == 0 and small_count == 0:
        raise _fail(
            "nothing to evaluate: give --data or a non-zero --test-count, --shifted-count or --small-count"
        )
    with _user_errors():
        measurer = measurer_from_backend(OrtBackend(repo), model)
        if data is not None:
            sets = {data.name: load_folder(data)}
        else:
            sets = rec.test_sets(
                rec.AngleRecipe(
                    seed=seed, test_count=test_count, shifted_count=shifted_count, small_count=small_count
                )
            )
        evals = rec.evaluate_sets(measurer, sets)
        out.mkdir(parents=True, exist_ok=True)
        report = {
            "command": " ".join(sys.argv),
            "model": model,
            "eval": {k: e.metrics for k, e in evals.items()},
        }
        (out / "eval.json").write_text(json.dumps(report, indent=2))
        plot(evals, out / "eval.png")
        if record:
            _record_metrics(repo / model / "MANIFEST.json", report, data)
    _print_eval(report["eval"])
    console.print(f"wrote {out}/eval.json, {out}/eval.png")


def _record_metrics(manifest_path: Path, report: dict[str, Any], data: Path | None) -> None:
    """Put an evaluation of the deployed (ONNX) pipeline into the model's MANIFEST, with its command."""
    manifest = json.loads(manifest_path.read_text())
    manifest["metrics"] = report["eval"]
    manifest["evaluation"] = {
        "command": report["command"],
        "runtime": "onnxruntime",
        "test_frames": manifest.get("pipeline", {}).get("test_frames", 1),
        "sets": f"labelled folder {data.name}" if data else "fresh phantoms never used in training",
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


export_app = typer.Typer(no_args_is_help=True, help="Export trained models to the model repository.")
app.add_typer(export_app, name="export")


@export_app.command("angle")
def export_angle(
    run: Annotated[Path, typer.Argument(help="a `hipgen train angle` run folder")],
    repo: Annotated[Path, typer.Option("--repo", help="model repository to write")] = Path(
        "model_repository"
    ),
    version: Annotated[str | None, typer.Option(help="model version (default: today's date)")] = None,
    test_frames: Annotated[
        int, typer.Option(min=1, max=8, help="frames per hip averaged at inference (test-time augmentation)")
    ] = 4,
) -> None:
    """Export the locator and keypoint models to ONNX with config.pbtxt and MANIFEST.json."""
    mod = _training("training.angle.export")
    if not (run / "keypoints.pt").is_file() or not (run / "locator.pt").is_file():
        raise _fail(f"{run}: no locator.pt/keypoints.pt (run `hipgen train angle --out {run}` first)")
    with _user_errors():
        dirs = mod.export_run(run, repo, version=version, test_frames=test_frames)
    for d in dirs:
        console.print(f"wrote {d}")


def _print_eval(evals: dict[str, Any]) -> None:
    table = Table("set", "images", "MAE °", "RMSE °", "R²", "≤3°", "≤5°", "≤10°", "cls acc", "AUC", "ECE")
    for name, m in evals.items():
        na, c = m["na"], m["classifier_side"]
        table.add_row(
            name,
            str(m["n_images"]),
            f"{na['mae']:.2f}",
            f"{na['rmse']:.2f}",
            f"{na['r2']:.3f}",
            f"{na['within_3']:.1%}",
            f"{na['within_5']:.1%}",
            f"{na['within_10']:.1%}",
            f"{c['accuracy']:.1%}",
            f"{c['auc']:.3f}",
            f"{c['ece']:.3f}",
        )
    Console().print(table)


# --- measure: Norberg angles of radiographs in-process (the AngleService pipeline, no server) --------
MEASURE_CHUNK = 16  # images per measure call: the batch the service uses


@app.command()
def measure(
    images: Annotated[list[Path], typer.Argument(help="radiographs: PNG, JPEG, TIFF or DICOM files")],
    model_repo: Annotated[
        Path | None,
        typer.Option("--model-repo", help="model repository (default: the model_repository setting)"),
    ] = None,
    model: Annotated[str, typer.Option(help="angle keypoint model in the repository")] = "angle_keypoints",
    overlays: Annotated[
        Path | None, typer.Option("--overlays", help="folder for one <stem>_overlay.png per image")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one label record per line")] = False,
    scheme: Annotated[str, typer.Option(help="grading scheme: fci | bva")] = "fci",
    threshold: Annotated[float, typer.Option(help="Big/Small threshold, degrees")] = 105.0,
) -> None:
    """Measure both Norberg angles of radiographs with the deployed angle models (no server needed).

    An image that cannot be measured gets a red line; the others are still measured (exit code 1).

    Exit code 2: nothing ran (bad options, missing files or models).
    """
    import math

    from hipgen import anatomy
    from hipgen.settings import get_settings

    scheme = scheme.strip().lower()
    if scheme not in anatomy.GRADING_SCHEMES:
        raise _fail(f"--scheme {scheme!r} is not one of {', '.join(sorted(anatomy.GRADING_SCHEMES))}")
    if not (math.isfinite(threshold) and 0.0 < threshold < 180.0):
        raise _fail(f"--threshold must be an angle in (0, 180) degrees, got {threshold}")
    stems = [p.stem for p in images]
    if overlays is not None and len(set(stems)) < len(stems):
        raise _fail("--overlays: two images share a file stem, so their overlays would overwrite each other")
    for path in images:
        if not path.is_file():
            raise _fail(f"{path}: no such file")
    repo = model_repo if model_repo is not None else get_settings().model_repository
    measurer = _angle_measurer(repo, model)
    rows = []
    failed = 0
    for start in range(0, len(images), MEASURE_CHUNK):
        for path, outcome in _measure_chunk(measurer, images[start : start + MEASURE_CHUNK]):
            error = outcome if isinstance(outcome, str) else None
            if not isinstance(outcome, str):
                rad, m = outcome
                try:
                    rec = _measured_record(path, rad, m, scheme=scheme, threshold=threshold)
                    if overlays is not None:
                        _write_overlay(overlays / f"{path.stem}_overlay.png", rad.pixels, rec, m)
                except (ValueError, OSError) as e:
                    error = str(e).splitlines()[0] if str(e) else type(e).__name__
            if error is not None:  # this image only: report it and go on with the others
                failed += 1
                console.print(f"[red]error:[/red] {path}: {error}", highlight=False, soft_wrap=True)
                continue
            if as_json:
                print(json.dumps(rec.to_dict()), flush=True)
            rows.append((rec, m))
    if not as_json and rows:
        _print_measurements(rows)
    if overlays is not None:
        console.print(f"wrote {len(rows)} overlays to {overlays}")
    if failed:
        console.print(f"[red]{failed} of {len(images)} images could not be measured[/red]", highlight=False)
        raise typer.Exit(1)


def _angle_measurer(repo: Path, model: str) -> Any:
    """The measurer of ``model`` (and the locator its manifest names), or one red line saying what is
    missing and how to get it."""
    from hipgen.angle.measure import NotAnAngleModelError, measurer_from_backend
    from hipgen.inference.backend import ModelNotFoundError, OrtBackend

    try:
        return measurer_from_backend(OrtBackend(repo), model)
    except NotAnAngleModelError as e:
        raise _fail(f"{repo}/{model}: {e}") from None
    except ModelNotFoundError as e:  # the model, or the locator its manifest names
        raise _fail(f"{e} (train and export one: `hipgen train angle`, `hipgen export angle`)") from None
    except Exception as e:  # an unreadable ONNX file or manifest
        why = f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e).strip() else type(e).__name__
        raise _fail(f"{repo}/{model}: cannot load the model ({why})") from None


def _measure_chunk(measurer: Any, paths: list[Path]) -> list[tuple[Path, tuple[Any, Any] | str]]:
    """Read and measure a few images in one call: per path, ``(radiograph, measurement)`` or why it has
    none (one unreadable or unmeasurable image never costs the others theirs)."""
    from hipgen.angle.measure import MIN_SIDE
    from hipgen.data.images import read_image

    out: list[tuple[Path, tuple[Any, Any] | str]] = []
    readable: list[tuple[int, Any]] = []  # (index in out, radiograph)
    for path in paths:
        try:
            rad = read_image(path)
        except InputError as e:
            out.append((path, e.reason))
            continue
        h, w = rad.pixels.shape
        if min(h, w) < MIN_SIDE:
            out.append((path, f"image is {w}x{h} pixels; at least {MIN_SIDE} on each side"))
            continue
        readable.append((len(out), rad))
        out.append((path, ""))
    measured = _measure_decoded(measurer, [rad for _, rad in readable])
    for (i, rad), m in zip(readable, measured, strict=True):
        out[i] = (paths[i], m if isinstance(m, str) else (rad, m))
    return out


def _measure_decoded(measurer: Any, rads: list[Any]) -> list[Any]:
    """One measure call over decoded images: per image its measurement or why it has none. When the
    call fails, the images are measured one by one, so only the culprit fails."""
    if not rads:
        return []
    try:
        return list(measurer.measure([r.pixels for r in rads]))
    except Exception as e:
        if len(rads) > 1:
            return [_measure_decoded(measurer, [r])[0] for r in rads]
        first = str(e).splitlines()[0] if str(e) else ""
        if isinstance(e, (ValueError, ArithmeticError)):  # the geometry: coinciding or non-finite points
            return [f"no measurable pair of hips ({first})"]
        return [f"measurement failed ({type(e).__name__}: {first})"]  # still only this image's failure


def _measured_record(path: Path, rad: Any, m: Any, *, scheme: str, threshold: float) -> Any:
    """The label record of one measurement, with the provenance of hipgen's synthetic marker; ValueError
    when the model's points are not finite (the service refuses them too)."""
    import math

    from hipgen.data.images import synthetic_provenance
    from hipgen.data.record import LabelRecord

    marker = synthetic_provenance(rad)
    rec = LabelRecord.from_keypoints(
        path.name,
        m.keypoints,
        threshold=threshold,
        scheme=scheme,
        **(marker.as_fields() if marker is not None else {}),
    )
    values = [rec.na_left, rec.na_right, rec.left_radius, rec.right_radius, m.prob_big_left, m.prob_big_right]
    values += [*m.keypoints.left_head, *m.keypoints.right_head, *m.keypoints.left_rim, *m.keypoints.right_rim]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("no measurable pair of hips (the model returned non-finite keypoints)")
    return rec


def _write_overlay(path: Path, pixels: Any, rec: Any, m: Any) -> None:
    from hipgen.angle.overlay import overlay_png
    from hipgen.data.images import write_atomic

    png = overlay_png(
        pixels,
        m.keypoints,
        na_left=rec.na_left,
        na_right=rec.na_right,
        prob_big_left=m.prob_big_left,
        prob_big_right=m.prob_big_right,
    )
    write_atomic(path, png)


def _print_measurements(rows: list[tuple[Any, Any]]) -> None:
    table = Table("file", "NA R °", "NA L °", "class R", "class L", "P(big) R", "P(big) L")
    for rec, m in rows:
        table.add_row(
            rec.file_name,
            f"{rec.na_right:.1f}",
            f"{rec.na_left:.1f}",
            f"{rec.class_right}/{rec.grade_right}",
            f"{rec.class_left}/{rec.grade_left}",
            f"{m.prob_big_right:.2f}",
            f"{m.prob_big_left:.2f}",
        )
    Console().print(table)


@app.command()
def version() -> None:
    """Print the hipgen version."""
    print(__version__)


# registers generate, distill, export/evaluate generator; experiment augment, views, report, export backbone
# token secret, token create; dataset create/watch/get/list/cancel
from hipgen import cli_dataset, cli_generate, cli_score, cli_token  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
