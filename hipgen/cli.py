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
    from hipgen.data.datasets import check_format, detect_format, iter_dataset, open_writer
    from hipgen.data.preprocess import Preprocessing
    from hipgen.data.split import split_records

    with _user_errors():
        check_format(to)
        if square not in (None, "crop", "pad"):
            raise ValueError(f"--square must be crop or pad, got {square!r}")
        pre = None
        if square or resize or clahe:
            pre = Preprocessing.standard(square=square or "crop", size=resize, clahe=clahe, normalize=None)
        src_fmt = detect_format(src)
        on_error = "skip" if skip_bad else "raise"
        splits: dict[str, str] = {}
        if split is not None:  # a first pass for the labels: a stratified split needs all of them
            recs = [rec for rec, _ in iter_dataset(src, on_error=on_error)]
            splits = dict(
                zip(
                    (r.file_name for r in recs),
                    split_records(recs, ratio=split, seed=split_seed).assignment,
                    strict=True,
                )
            )
        items = iter_dataset(src, on_error=on_error)
        n = 0
        provenance = {"converted_from": src_fmt, "split_ratio": list(split) if split else None}
        with (
            open_writer(to, dst, bits=bits, provenance=provenance, preprocessing=pre) as writer,
            _progress() as bar,
        ):
            task = bar.add_task(f"{src_fmt} → {to}", total=None)
            for rec, img in items:
                writer.add(
                    rec, img.pixels, split=splits.get(rec.file_name), pixel_spacing_mm=img.pixel_spacing_mm
                )
                n += 1
                bar.advance(task)
    console.print(f"converted {n} images from {src_fmt} to {to} in {dst}")
    for item in items.report.skipped:
        console.print(
            f"[yellow]skipped[/yellow] {item.source}: {item.reason}", highlight=False, soft_wrap=True
        )
    for warning in items.report.warnings:
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


@app.command()
def version() -> None:
    """Print the hipgen version."""
    print(__version__)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
