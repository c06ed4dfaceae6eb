"""The generator commands of the ``hipgen`` CLI: ``generate`` (in-process, no server, no torch),
``distill``, ``export generator`` and ``evaluate generator`` (training stack). Registered on
:data:`hipgen.cli.app` when that module loads."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from hipgen.cli import (
    _data_folder,
    _fail,
    _progress,
    _training,
    _user_errors,
    app,
    console,
    evaluate_app,
    export_app,
    train_app,
)

SamplerOpt = Annotated[
    str | None, typer.Option(help="ddim | ddpm | lcm (default: the generator's own; lcm picks generator_lcm)")
]


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="output image folder (created; must be empty)")],
    na_left: Annotated[
        float | None, typer.Option("--na-left", help="requested NA of the patient's left hip, °")
    ] = None,
    na_right: Annotated[
        float | None, typer.Option("--na-right", help="requested NA of the patient's right hip, °")
    ] = None,
    na_range: Annotated[
        tuple[float, float] | None,
        typer.Option(
            "--na-range", help="instead: draw each image's two angles uniformly in LOW HIGH (seeded), °"
        ),
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, max=10_000, help="images")] = 8,
    sampler: SamplerOpt = None,
    steps: Annotated[int | None, typer.Option(min=1, help="denoising steps (default: the sampler's)")] = None,
    guidance_scale: Annotated[float | None, typer.Option(help="classifier-free guidance scale")] = None,
    seed: Annotated[int, typer.Option(min=0, help="image k uses seed + k")] = 0,
    model: Annotated[str | None, typer.Option(help="generator in the repository")] = None,
    repo: Annotated[Path, typer.Option("--repo", help="model repository")] = Path("model_repository"),
    batch_size: Annotated[int, typer.Option(min=1, help="images denoised together")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="print one label row per line")] = False,
) -> None:
    """Generate labelled synthetic pelvis views at a requested Norberg-angle pair (ONNX Runtime,
    in-process): PNGs marked synthetic + metadata.csv (measured labels) + generation.jsonl (requested
    angles, seed, sampler, steps, guidance, measured angles and keypoints)."""
    from hipgen.angle.measure import measurer_from_backend
    from hipgen.data.imagefolder import ImageFolderWriter, synthetic_text
    from hipgen.data.images import encode_png, write_atomic
    from hipgen.generate.conditions import NaRequest
    from hipgen.generate.generator import Generator, choose_sampler, generator_for
    from hipgen.generate.label import auto_label
    from hipgen.inference.backend import OrtBackend

    if out.exists() and any(out.iterdir()):
        raise _fail(f"{out}: not empty (generated sets never overwrite files)")
    if (na_range is None) == (na_left is None or na_right is None):
        raise _fail("give either --na-left and --na-right, or --na-range LOW HIGH")
    name = model or generator_for(sampler)
    rows: list[dict[str, Any]] = []
    with _user_errors():
        backend = OrtBackend(repo)
        gen = Generator(backend, name)
        choice = choose_sampler(gen.spec, sampler, steps, guidance_scale)
        if na_range is not None:
            drawn = np.random.default_rng(seed).uniform(min(na_range), max(na_range), size=(count, 2))
            requests = [NaRequest(float(a), float(b)) for a, b in drawn]
        else:
            requests = [NaRequest(float(na_left), float(na_right))] * count  # type: ignore[arg-type]
        gen.plan(requests, list(range(count)), choice)  # checks the angles before anything is written
        measurer = measurer_from_backend(backend)
        writer = ImageFolderWriter(out)
        try:
            with _progress() as bar:
                task = bar.add_task(f"{choice.sampler}-{choice.steps}", total=count * choice.steps)
                for start in range(0, count, batch_size):
                    n = min(batch_size, count - start)
                    seeds = [seed + start + j for j in range(n)]
                    reqs = requests[start : start + n]
                    plan = gen.plan(reqs, seeds, choice)
                    images = gen.generate(plan, on_step=lambda *_, n=n: bar.advance(task, n))
                    names = [f"generated_{s}.png" for s in seeds]
                    labels = auto_label(
                        measurer,
                        images,
                        reqs,
                        seeds,
                        choice,
                        generator=name,
                        model_version=gen.version,
                        file_names=names,
                    )
                    for img, lab in zip(images, labels, strict=True):
                        if lab.record is not None:
                            writer.add(lab.record, img)
                        else:  # kept for inspection, outside the labelled set
                            text = synthetic_text(name, gen.version, lab.seed)
                            write_atomic(out / "unmeasured" / lab.file_name, encode_png(img, text=text))
                        rows.append(lab.to_dict())
                        if as_json:
                            print(json.dumps(rows[-1]), flush=True)
        finally:  # what was made so far stays labelled
            writer.close()
            text = "".join(json.dumps(r) + "\n" for r in rows)
            write_atomic(out / "generation.jsonl", text.encode())
    if not as_json:
        _print_generated(rows)
    lost = sum(not r["measured"] for r in rows)
    note = f" ({lost} not measurable: in {out}/unmeasured/, unlabelled)" if lost else ""
    console.print(f"wrote {len(rows)} images, metadata.csv and generation.jsonl to {out}{note}")


def _print_generated(rows: list[dict[str, Any]]) -> None:
    table = Table("side", "requested mean °", "measured mean °", "sd °", "min °", "max °", "MAE °")
    for side in ("right", "left"):
        done = [r for r in rows if r["measured"]]
        v = np.array([r[f"na_{side}"] for r in done], np.float64)
        asked = np.array([r[f"requested_na_{side}"] for r in done], np.float64)
        if not len(v):
            continue
        table.add_row(
            side,
            f"{asked.mean():.1f}",
            f"{v.mean():.1f}",
            f"{v.std():.1f}",
            f"{v.min():.1f}",
            f"{v.max():.1f}",
            f"{np.abs(v - asked).mean():.1f}",
        )
    Console().print(table)


@train_app.command("vae")
def train_vae(
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder")] = Path("runs/vae"),
    count: Annotated[int, typer.Option(min=1, help="phantoms to render")] = 2000,
    data: Annotated[Path | None, typer.Option(help="train on this labelled folder instead")] = None,
    seed: int = 2,
    size: Annotated[int, typer.Option(min=16, max=1024, help="pelvis-view side, pixels (256 or 512)")] = 256,
    tiny: Annotated[bool, typer.Option(help="the test-sized VAE")] = False,
    steps: Annotated[int, typer.Option(min=1)] = 3000,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    workers: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """Train the latent path's AutoencoderKL (then `hipgen train diffusion --vae OUT`)."""
    mod = _training("training.diffusion.recipe")
    folder = _data_folder(data)
    recipe = mod.VaeRecipe(
        count=count,
        seed=seed,
        data=folder,
        size=size,
        tiny=tiny,
        steps=steps,
        batch_size=batch_size,
        workers=workers,
    )
    with _user_errors():
        report = mod.run_vae(recipe, out)
    console.print(
        f"VAE trained; reconstruction L1 {report['reconstruction_l1']:.4f}, "
        f"scaling {report['scaling_factor']:.3f}"
    )
    console.print(f"wrote {out}/vae/, {out}/vae.json, {out}/reconstructions.png")


@app.command()
def distill(
    teacher: Annotated[Path, typer.Option(help="a `hipgen train diffusion` run folder")] = Path(
        "runs/diffusion"
    ),
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder of the student")] = Path("runs/lcm"),
    count: Annotated[int, typer.Option(min=1, help="phantoms to render")] = 2000,
    data: Annotated[Path | None, typer.Option(help="distil on this labelled folder instead")] = None,
    seed: int = 1,
    steps: Annotated[int, typer.Option(min=1)] = 1000,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    lr: Annotated[float, typer.Option(min=0)] = 1e-5,
    omega: Annotated[float, typer.Option(min=0, help="CFG inside the PF-ODE (guidance scale − 1)")] = 1.0,
    solver: Annotated[str, typer.Option(help="teacher ODE step: ddim | leapfrog")] = "ddim",
    checkpoint_every: Annotated[int, typer.Option(min=1)] = 250,
    grid_steps: Annotated[int, typer.Option(min=1, max=50, help="LCM steps of the sample grids")] = 4,
    resume: Annotated[bool, typer.Option(help="continue from OUT/checkpoint")] = False,
    workers: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """Consistency-distil a trained generator (LLCM: DDIM teacher, skipping step k = 20, CFG-aware)
    into a student that samples in 2–8 LCM steps."""
    mod = _training("training.diffusion.recipe")
    folder = _data_folder(data)
    recipe = mod.DistillRecipe(
        teacher=str(teacher),
        count=count,
        seed=seed,
        data=folder,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        omega=omega,
        solver=solver,
        checkpoint_every=checkpoint_every,
        grid_steps=grid_steps,
        resume=resume,
        workers=workers,
    )
    with _user_errors():
        report = mod.run_distill(recipe, out)
    if report["loss_first_50"] is not None:
        console.print(
            f"distilled {report['steps']} steps; "
            f"loss {report['loss_first_50']:.5f} → {report['loss_last_50']:.5f}"
        )
    console.print(f"wrote {out}/model.pt, {out}/unet.onnx, {out}/distill.json, {out}/samples_*.png")


@export_app.command("generator")
def export_generator(
    run: Annotated[Path, typer.Argument(help="a `hipgen train diffusion` or `hipgen distill` run folder")],
    name: Annotated[
        str | None, typer.Option(help="model name (default: generator_ddpm / generator_lcm)")
    ] = None,
    repo: Annotated[Path, typer.Option("--repo", help="model repository to write")] = Path(
        "model_repository"
    ),
    version: Annotated[str | None, typer.Option(help="model version (default: today's date)")] = None,
) -> None:
    """Export a generator's UNet to ONNX with config.pbtxt and MANIFEST.json (sampling defaults inside)."""
    mod = _training("training.diffusion.release")
    if not (run / "model.pt").is_file() or not (run / "model.json").is_file():
        raise _fail(f"{run}: no model.pt/model.json (train or distil into it first)")
    student = "distill" in json.loads((run / "model.json").read_text())
    name = name or ("generator_lcm" if student else "generator_ddpm")
    with _user_errors():
        path = mod.export_generator(run, repo, name, version=version, command=shlex.join(sys.argv))
    console.print(f"wrote {path}")


@evaluate_app.command("generator")
def evaluate_generator(
    repo: Annotated[Path, typer.Option("--repo", help="model repository")] = Path("model_repository"),
    model: Annotated[str | None, typer.Option(help="generator (default: by sampler)")] = None,
    sampler: SamplerOpt = None,
    steps: Annotated[int | None, typer.Option(min=1)] = None,
    guidance_scale: Annotated[float | None, typer.Option()] = None,
    grid: Annotated[
        str, typer.Option(help="requested NA per side, comma-separated °")
    ] = "75,87.5,100,112.5,125",
    per_cell: Annotated[int, typer.Option(min=1, help="images per (left, right) pair")] = 1,
    reference: Annotated[
        int, typer.Option(min=0, help="phantom views for the Fréchet distance (0: skip)")
    ] = 100,
    seed: int = 0,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/eval-generator"),
    record: Annotated[
        bool, typer.Option(help="write the metrics into the generator's MANIFEST.json")
    ] = False,
) -> None:
    """Angle fidelity (requested vs measured NA: Pearson r, R², MAE, bias) and a Fréchet distance on the
    angle model's features, through the deployed ONNX generator and angle model."""
    mod = _training("training.diffusion.evaluate")
    from hipgen.generate.generator import Generator, generator_for
    from hipgen.inference.backend import OrtBackend

    name = model or generator_for(sampler)
    try:
        values = tuple(float(v) for v in grid.split(","))
    except ValueError:
        raise _fail(f"--grid {grid!r}: give comma-separated angles in degrees") from None
    with _user_errors():
        size = Generator(OrtBackend(repo), name).spec.size
        ref = floor = None
        if reference:
            ref = mod.reference_views(reference, size)
            floor = mod.reference_views(reference, size, seed=mod.REFERENCE_SEED + 1)
        ev = mod.evaluate(
            repo,
            name,
            sampler=sampler,
            steps=steps,
            guidance_scale=guidance_scale,
            values=values,
            per_cell=per_cell,
            seed=seed,
            reference=ref,
            floor=floor,
        )
        out.mkdir(parents=True, exist_ok=True)
        report = {"command": shlex.join(sys.argv), "model": name, **ev.metrics}
        (out / f"{ev.name}.json").write_text(json.dumps(report, indent=2))
        mod.plot([ev], out / f"{ev.name}.png")
        mod.contact_sheet(ev, out / f"{ev.name}_images.png")
        if record:
            path = repo / name / "MANIFEST.json"
            manifest = json.loads(path.read_text())
            manifest.setdefault("metrics", {})[ev.name] = report
            path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    _print_fidelity(ev.name, ev.metrics)
    console.print(f"wrote {out}/{ev.name}.json, {ev.name}.png, {ev.name}_images.png")


def _print_fidelity(name: str, m: dict[str, Any]) -> None:
    table = Table("sampler", "side", "n", "Pearson r", "R²", "MAE °", "bias °", "≤5°")
    for side in ("left", "right", "both"):
        f = m["fidelity"][side]
        table.add_row(
            name,
            side,
            str(f["n"]),
            f"{f['pearson_r']:.3f}",
            f"{f['r2']:.3f}",
            f"{f['mae']:.2f}",
            f"{f['bias']:+.2f}",
            f"{f['within_5']:.0%}",
        )
    Console().print(table)
    extra = [f"{m['images_per_second']:.2f} images/s"]
    if "frechet_angle_features" in m:
        extra.append(f"Fréchet (angle features) {m['frechet_angle_features']:.2f}")
    if "frechet_phantom_floor" in m:
        extra.append(f"phantom-vs-phantom floor {m['frechet_phantom_floor']:.2f}")
    console.print("; ".join(extra))
