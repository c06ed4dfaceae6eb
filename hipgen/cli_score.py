"""The scoring commands of the ``hipgen`` CLI: ``experiment augment`` (training stack) and, with the
metrics, ``report``. Registered on :data:`hipgen.cli.app` when that module loads."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from hipgen.cli import _fail, _progress, _training, _user_errors, app, console, export_app

experiment_app = typer.Typer(no_args_is_help=True, help="Experiments that reproduce published results.")
app.add_typer(experiment_app, name="experiment")


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


@experiment_app.command("augment")
def experiment_augment(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (a rerun resumes there)")] = Path(
        "runs/augment"
    ),
    real: Annotated[int, typer.Option(min=1, help="real (phantom) training images, N")] = 219,
    synthetic: Annotated[int, typer.Option(min=0, help="synthetic images generated per sampler, K")] = 307,
    test: Annotated[int, typer.Option(min=1, help="held-out test phantoms")] = 84,
    backbones: Annotated[str, typer.Option(help="comma-separated torchvision names")] = (
        "squeezenet1_1,efficientnet_b0,densenet121,resnet18"
    ),
    seeds: Annotated[str, typer.Option(help="comma-separated training seeds")] = "0,1,2",
    samplers: Annotated[str, typer.Option(help="comma-separated <sampler>-<steps>, e.g. lcm-4,ddim-50")] = (
        "lcm-4"
    ),
    head: Annotated[str, typer.Option(help="regression (published) or heatmap")] = "regression",
    steps: Annotated[int, typer.Option(min=1, help="training steps per run (same with and without)")] = 150,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    threads: Annotated[int, typer.Option(min=0, help="torch threads (0: torch's default)")] = 0,
    device: Annotated[str, typer.Option(help="cpu, or cuda on a GPU machine")] = "cpu",
    repo: Annotated[Path, typer.Option("--repo", help="model repository (generators, angle models)")] = Path(
        "model_repository"
    ),
) -> None:
    """Train the NA model on N real images alone and with K auto-labelled synthetic ones, per backbone,
    sampler and seed; write the MAPE/MAE table (augment.md, augment.json, augment.png, runs.jsonl)."""
    mod = _training("training.angle.augmentation")
    with _user_errors():
        config = mod.AugmentConfig(
            real=real,
            synthetic=synthetic,
            test=test,
            backbones=_names(backbones),
            seeds=tuple(int(s) for s in _names(seeds)),
            samplers=_names(samplers),
            head=head,
            steps=steps,
            batch_size=batch_size,
            threads=threads,
            device=device,
            repo=str(repo),
            extra={"command": shlex.join(["hipgen", *sys.argv[1:]])},
        )
        summary = mod.run(
            config,
            out,
            on_row=lambda r: console.print(
                f"{r['backbone']} seed {r['seed']} {r['training']}: "
                f"MAPE {r['mape']:.2f} %, MAE {r['mae']:.2f}°"
            ),
        )
    console.print(mod.markdown(summary), highlight=False, soft_wrap=True)
    console.print(f"wrote {out}/augment.md, augment.json, augment.png, runs.jsonl")


@app.command()
def views(
    data: Annotated[
        Path, typer.Option(help="a folder of radiographs (any supported format, labelled or not)")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="output image folder (created; must be empty)")],
    size: Annotated[int, typer.Option(min=32, max=1024, help="view side, pixels")] = 128,
    repo: Annotated[
        Path, typer.Option("--repo", help="model repository (to measure unlabelled images)")
    ] = Path("model_repository"),
) -> None:
    """Cut pelvis views — the generators' framing (both hips, side 2.4 × the inter-head distance) — from
    whole studies, so real radiographs can be scored against generated views. Labelled images are cut
    at their labelled heads; unlabelled ones where the default angle model finds them."""
    from dataclasses import replace

    from hipgen.angle.measure import DEFAULT_ANGLE_MODEL
    from hipgen.cli import _angle_measurer
    from hipgen.data.datasets import open_writer
    from hipgen.data.record import LabelRecord
    from hipgen.data.views import pelvis_view
    from hipgen.generate.label import measure_each
    from hipgen.score.sets import iter_folder

    if not data.is_dir():
        raise _fail(f"{data}: no such folder")
    with _user_errors():
        measurer = None
        written, unmeasured = 0, []
        with open_writer("imagefolder", out, provenance={"views_of": str(data), "size": size}) as writer:
            for name, pixels, record in iter_folder(data, field_name="--data"):
                if record is not None:
                    kp = record.keypoints()
                else:  # unlabelled: where the default angle model finds the heads
                    measurer = measurer or _angle_measurer(repo, DEFAULT_ANGLE_MODEL)
                    (found,) = measure_each(measurer, [pixels])
                    if found is None:
                        unmeasured.append(name)
                        continue
                    kp = found.keypoints
                view, vkp = pelvis_view(pixels, kp, size=size)
                rec = LabelRecord.from_keypoints(Path(name).with_suffix(".png").as_posix(), vkp)
                if record is not None:  # keep provenance (a synthetic image stays marked synthetic)
                    rec = replace(
                        rec,
                        synthetic=record.synthetic,
                        generator=record.generator,
                        model_version=record.model_version,
                        seed=record.seed,
                    )
                writer.add(rec, view)
                written += 1
        if not written:
            raise ValueError(f"{data}: no image could be cut ({len(unmeasured)} without measurable hips)")
    note = f"; {len(unmeasured)} unmeasurable image(s) skipped" if unmeasured else ""
    console.print(f"wrote {written} {size}×{size} pelvis views to {out}{note}")


@app.command()
def report(
    real: Annotated[str, typer.Option(help="reference set: folder, file:// or s3:// (usually real images)")],
    synthetic: Annotated[
        str, typer.Option(help="set to score: folder, file:// or s3:// (usually generated)")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder for report.html and report.json")],
    training: Annotated[
        str | None,
        typer.Option(help="the generator's training images, for the memorisation check (default: --real)"),
    ] = None,
    backbone: Annotated[str | None, typer.Option(help="feature backbone (default: angle_locator)")] = None,
    metrics: Annotated[str, typer.Option(help="comma-separated metric names (default: all)")] = "",
    image_size: Annotated[int, typer.Option(min=0, help="side for SSIM/MS-SSIM, pixels (0: 256)")] = 0,
    seed: Annotated[int, typer.Option(min=0, help="seed of KID subsets, noise baseline and pairs")] = 0,
    kid_subset_size: Annotated[int, typer.Option(min=2, help="KID subset size (clipped to the sets)")] = 1000,
    limit: Annotated[int, typer.Option(min=1, help="most images read per set")] = 20_000,
    repo: Annotated[Path, typer.Option("--repo", help="model repository (backbones, angle model)")] = Path(
        "model_repository"
    ),
    title: Annotated[str, typer.Option(help="report title")] = "hipgen score report",
) -> None:
    """Score a synthetic set against a real one: a self-contained HTML report (metrics with noise
    baselines, angle fidelity, Bland–Altman, per-bin and per-class errors, samples, nearest-neighbour
    pairs) and report.json."""
    from hipgen.angle.measure import measurer_from_backend
    from hipgen.inference.backend import ModelNotFoundError, OrtBackend
    from hipgen.score.features import backbone_for
    from hipgen.score.report import write_report
    from hipgen.score.scoring import ScoreOptions, score_sets
    from hipgen.score.sets import load_set

    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise _fail(
            "the report's plots need matplotlib: run `make setup-train` or pip install matplotlib"
        ) from None
    command = shlex.join(["hipgen", *sys.argv[1:]])
    with _user_errors():
        backend = OrtBackend(repo)
        options = ScoreOptions(
            metrics=_names(metrics), image_size=image_size, seed=seed, kid_subset_size=kid_subset_size
        )
        options.chosen()
        features = backbone_for(repo, backbone, backend)
        try:
            measurer = measurer_from_backend(backend)
        except ModelNotFoundError:  # scored without angle fidelity; the report says so
            measurer = None
        with _progress() as bar:
            task = bar.add_task("read sets", total=None)
            ref = load_set(real, limit=limit, field_name="--real")
            cand = load_set(synthetic, limit=limit, field_name="--synthetic")
            train = load_set(training, limit=limit, field_name="--training") if training else None
            stages: dict[str, int] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in stages:
                    stages[stage] = bar.add_task(stage, total=total)
                bar.update(stages[stage], completed=done, total=total)

            bar.update(task, total=1, completed=1)
            result = score_sets(
                ref, cand, options, backbone=features, measurer=measurer, training=train, on_progress=progress
            )
        html_path, json_path = write_report(
            result, ref, cand, out, command=command, title=title, training=train
        )
    for m in result.metrics:
        base = f" (noise {m.noise_baseline:.4g})" if m.noise_baseline is not None else ""
        console.print(f"{m.name:>18}: {m.value:.4g}{base}", highlight=False)
    if result.fidelity:
        f = result.fidelity["both"]
        console.print(
            f"angle fidelity: r {f.pearson_r:.3f}, MAE {f.mae:.2f}°, bias {f.bias:+.2f}°", highlight=False
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(f"wrote {html_path} and {json_path}")


@export_app.command("backbone")
def export_backbone(
    arch: Annotated[str, typer.Option(help="torchvision classifier, e.g. inception_v3, resnet50")],
    weights: Annotated[
        Path | None, typer.Option(help="local state dict of the full classifier (e.g. ImageNet weights)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="repository entry (default: features_<arch>)")] = None,
    input_size: Annotated[int | None, typer.Option(min=32, help="input side (default: the family's)")] = None,
    random_weights: Annotated[
        bool, typer.Option("--random-weights", help="export untrained (only for trying the pipeline)")
    ] = False,
    repo: Annotated[Path, typer.Option("--repo", help="model repository to write")] = Path(
        "model_repository"
    ),
) -> None:
    """Export a feature backbone for the scoring metrics from weights on disk (nothing is downloaded)."""
    mod = _training("training.features")
    if weights is None and not random_weights:
        raise _fail("give --weights PATH (a local state dict), or --random-weights to try the pipeline")
    if weights is not None and not weights.is_file():
        raise _fail(f"{weights}: no such file")
    with _user_errors():
        path = mod.export_backbone(
            arch,
            weights,
            repo,
            name=name,
            input_size=input_size,
            command=shlex.join(["hipgen", *sys.argv[1:]]),
        )
    console.print(f"wrote {path} (backbone name: {path.name})")
