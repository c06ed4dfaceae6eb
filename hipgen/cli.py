"""The ``hipgen`` command line: render phantom data sets, convert between formats, inspect files.

Every command that reports results takes ``--json`` and then prints the one label record (DESIGN §1).
Bad input ends with one red line naming the file and exit code 2 — never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
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


def _fail(msg: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


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


def _check_format(fmt: str) -> str:
    from hipgen.data.datasets import FORMATS

    if fmt not in FORMATS:
        raise _fail(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


@app.command()
def phantom(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (created; must be empty)")],
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="number of images")] = 100,
    fmt: Format = "imagefolder",
    na_range: Annotated[
        tuple[float, float] | None, typer.Option("--na-range", help="NA range per side, degrees: LOW HIGH")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the whole set (image i uses seed + i)")] = 0,
    size: Annotated[int, typer.Option(help="upright image width, pixels", min=64, max=8192)] = 512,
    distribution: Annotated[str, typer.Option(help="uniform | population | tidy")] = "uniform",
    bits: Annotated[int, typer.Option(help="PNG/DICOM bit depth: 8 or 16")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="print one label record per line")] = False,
) -> None:
    """Render a labelled phantom data set (pixels, keypoints, radii, NA, class, grade, full spec)."""
    from hipgen.phantom import DISTRIBUTIONS
    from hipgen.phantom.dataset import write_phantom_set

    _check_format(fmt)
    if distribution not in DISTRIBUTIONS:
        raise _fail(f"--distribution {distribution!r} is not one of {', '.join(sorted(DISTRIBUTIONS))}")
    if bits not in (8, 16):
        raise _fail(f"--bits must be 8 or 16, got {bits}")
    with _progress() as bar:
        task = bar.add_task("rendering", total=count)

        def done(rec) -> None:
            if as_json:
                print(json.dumps(rec.to_dict()), flush=True)
            bar.advance(task)

        try:
            manifest = write_phantom_set(
                out,
                count,
                fmt,
                seed=seed,
                size=size,
                distribution=distribution,
                na_range=na_range,
                bits=bits,
                on_record=done,
            )
        except (ValueError, FileExistsError, InputError) as e:
            raise _fail(str(e)) from None
    console.print(f"wrote {count} {fmt} images to {out} ({len(manifest.files)} files in manifest.json)")


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="data set folder (format detected)")],
    dst: Annotated[Path, typer.Argument(help="output folder (created)")],
    to: Annotated[str, typer.Option("--to", help="imagefolder | classfolders | webdataset | dicom")],
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="skip unreadable files and report them")
    ] = False,
    bits: Annotated[int, typer.Option(help="PNG bit depth: 8 or 16")] = 16,
) -> None:
    """Convert a data set between formats; labels are carried over exactly."""
    from hipgen.data.datasets import detect_format, iter_dataset, open_writer

    _check_format(to)
    try:
        src_fmt = detect_format(src)
        items = iter_dataset(src, on_error="skip" if skip_bad else "raise")
        n = 0
        with (
            open_writer(to, dst, bits=bits, provenance={"converted_from": src_fmt}) as writer,
            _progress() as bar,
        ):
            task = bar.add_task(f"{src_fmt} → {to}", total=None)
            for rec, img in items:
                writer.add(rec, img.pixels, pixel_spacing_mm=img.pixel_spacing_mm)
                n += 1
                bar.advance(task)
    except (InputError, ValueError, FileExistsError) as e:
        raise _fail(str(e)) from None
    console.print(f"converted {n} images from {src_fmt} to {to} in {dst}")
    for item in items.report.skipped:
        console.print(
            f"[yellow]skipped[/yellow] {item.source}: {item.reason}", highlight=False, soft_wrap=True
        )
    for warning in items.report.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}", highlight=False, soft_wrap=True)


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="an image (PNG, JPEG, TIFF, DICOM) or a label file")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show what hipgen sees in one file: size, bit depth, spacing, DICOM summary and labels."""
    from hipgen.data.images import looks_like_dicom, read_image

    info: dict[str, Any] = {"file": str(file)}
    if not file.is_file():
        raise _fail(f"{file}: no such file")
    try:
        if looks_like_dicom(file):
            from hipgen.data.dicom import dicom_summary, read_synthetic_labels

            info["dicom"] = dicom_summary(file)
            rec = read_synthetic_labels(file)
            if rec is not None:
                info["label"] = rec.to_dict()
        img = read_image(file)
    except InputError as e:
        raise _fail(str(e)) from None
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
        if k in ("file", "label", "dicom", "metadata"):
            continue
        table.add_row(k, str(v))
    for section in ("dicom", "metadata", "label"):
        for k, v in (info.get(section) or {}).items():
            table.add_row(f"{section}.{k}", str(v))
    Console().print(table)


def _sibling_label(file: Path):
    """The label record of an image inside an image folder (``metadata.csv`` beside it or one above)."""
    from hipgen.data.imagefolder import find_label

    try:
        return find_label(file)
    except InputError as e:
        console.print(f"[yellow]labels not read:[/yellow] {e}", highlight=False, soft_wrap=True)
        return None


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

    try:
        p = write_sample_grid(out, count=count, seed=seed, distribution=distribution, labels=labels)
    except ValueError as e:
        raise _fail(str(e)) from None
    console.print(f"wrote {p}")


@app.command()
def version() -> None:
    """Print the hipgen version."""
    print(__version__)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
