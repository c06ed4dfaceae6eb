"""``hipgen report``: one self-contained HTML page (plots embedded as PNG data URIs, no scripts, no
external files) plus ``report.json`` for a scored pair of sets — metrics with their noise baselines and
backbone, requested vs measured NA with the identity line, Bland–Altman, errors per angle bin and class,
real vs synthetic samples, and the nearest-neighbour pairs behind the memorisation check.

matplotlib draws the plots (Agg, no display); it is imported only here, so the serving path never
needs it.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from hipgen.anatomy import DEFAULT_THRESHOLD_DEG
from hipgen.score.scoring import ScoreReport
from hipgen.score.sets import ImageSet

ANGLE_BINS = (70.0, 85.0, 100.0, 115.0, 130.0)  # degrees: edges of the requested-angle bins
METRIC_HELP = {
    "fid": "Fréchet distance of feature Gaussians — lower is better",
    "kid": "Kernel distance (unbiased MMD², cubic kernel) — lower is better",
    "mmd": "MMD² with an RBF kernel, median-heuristic bandwidth — lower is better",
    "precision": "share of synthetic images inside the real feature manifold (realism)",
    "recall": "share of real images inside the synthetic manifold (coverage)",
    "ssim": "paired SSIM, synthetic image i vs real image i",
    "ms_ssim": "paired MS-SSIM",
    "ssim_diversity": "mean SSIM of random synthetic pairs — lower is more diverse",
    "ms_ssim_diversity": "mean MS-SSIM of random synthetic pairs — lower is more diverse",
    "gan_train": "Big/Small probe trained on synthetic, accuracy on real",
    "gan_test": "Big/Small probe trained on real, accuracy on synthetic",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(src: str, alt: str) -> str:
    return f'<img src="{src}" alt="{html.escape(alt)}">'


def per_bin(
    requested: np.ndarray, measured: np.ndarray, edges: tuple[float, ...] = ANGLE_BINS
) -> list[dict[str, Any]]:
    """MAE, bias and count per requested-angle bin, both sides pooled."""
    req, mea = np.asarray(requested).ravel(), np.asarray(measured).ravel()
    ok = np.isfinite(req) & np.isfinite(mea)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = ok & (req >= lo) & (req < hi if hi < edges[-1] else req <= hi)
        err = mea[sel] - req[sel]
        rows.append(
            {
                "bin": f"{lo:g}–{hi:g}°",
                "count": int(sel.sum()),
                "mae": float(np.abs(err).mean()) if len(err) else None,
                "bias": float(err.mean()) if len(err) else None,
            }
        )
    return rows


def per_class(
    requested: np.ndarray, measured: np.ndarray, threshold: float = DEFAULT_THRESHOLD_DEG
) -> list[dict[str, Any]]:
    """Per requested hip class (Big ≥ threshold, Small below): count, MAE, and how often the measured
    angle lands in the requested class."""
    req, mea = np.asarray(requested).ravel(), np.asarray(measured).ravel()
    ok = np.isfinite(req) & np.isfinite(mea)
    rows = []
    for name, sel in (("big", req >= threshold), ("small", req < threshold)):
        s = ok & sel
        err = mea[s] - req[s]
        agree = (mea[s] >= threshold) == (name == "big")
        rows.append(
            {
                "class": name,
                "count": int(s.sum()),
                "mae": float(np.abs(err).mean()) if len(err) else None,
                "class_agreement": float(agree.mean()) if len(err) else None,
            }
        )
    return rows


def _fidelity_plots(req: np.ndarray, mea: np.ndarray) -> tuple[str, str, str]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    lo = float(np.nanmin([np.nanmin(req), np.nanmin(mea), 60.0]))
    hi = float(np.nanmax([np.nanmax(req), np.nanmax(mea), 140.0]))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="identity (perfect control)")
    for k, (side, c) in enumerate((("left", "tab:blue"), ("right", "tab:orange"))):
        ax.scatter(req[:, k], mea[:, k], s=14, alpha=0.7, c=c, label=f"patient's {side}")
    ax.set(xlabel="requested NA (°)", ylabel="measured NA (°)", title="Requested vs measured Norberg angle")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.legend(fontsize=8)
    scatter = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    mean, diff = (req + mea).ravel() / 2, (mea - req).ravel()
    ok = np.isfinite(diff)
    bias, sd = float(diff[ok].mean()), float(diff[ok].std(ddof=1)) if ok.sum() > 1 else 0.0
    ax.scatter(mean[ok], diff[ok], s=12, alpha=0.6)
    ax.axhline(bias, color="k", label=f"bias {bias:+.1f}°")
    for s in (-1.96, 1.96):
        ax.axhline(bias + s * sd, color="gray", ls="--")
    ax.axhline(0, color="tab:green", lw=0.8)
    ax.set(
        xlabel="mean of requested and measured NA (°)",
        ylabel="measured − requested (°)",
        title=f"Bland–Altman (limits of agreement {bias - 1.96 * sd:+.1f}° … {bias + 1.96 * sd:+.1f}°)",
    )
    ax.legend(fontsize=8)
    bland = _png(fig)

    bins = per_bin(req, mea)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([b["bin"] for b in bins], [b["mae"] or 0 for b in bins], color="tab:purple")
    for i, b in enumerate(bins):
        ax.annotate(f"n={b['count']}", (i, b["mae"] or 0), ha="center", va="bottom", fontsize=8)
    ax.set(xlabel="requested NA bin", ylabel="MAE (°)", title="Angle error per requested-angle bin")
    bars = _png(fig)
    return scatter, bland, bars


def _grid(sets: list[tuple[str, list[np.ndarray]]], per_row: int = 8) -> str:
    plt = _plt()
    fig, axes = plt.subplots(len(sets), per_row, figsize=(1.5 * per_row, 1.7 * len(sets)), squeeze=False)
    for r, (title, images) in enumerate(sets):
        for c in range(per_row):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c], cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_title(title, loc="left", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _nn_pairs(report: ScoreReport, training: ImageSet, candidate: ImageSet, count: int = 6) -> str | None:
    mem = report.memorisation
    if mem is None or not len(mem.score):
        return None
    order = np.argsort(mem.score)[:count]
    plt = _plt()
    fig, axes = plt.subplots(2, len(order), figsize=(1.9 * len(order), 4.8), squeeze=False)
    for c, i in enumerate(order):
        j = int(mem.nearest[i])
        axes[0][c].imshow(candidate.images[i], cmap="gray", vmin=0, vmax=1)
        flag = " ⚑ copy?" if mem.score[i] < mem.threshold else ""
        axes[0][c].set_title(f"synthetic {i}\nscore {mem.score[i]:.2f}{flag}", fontsize=8)
        axes[1][c].imshow(training.images[j], cmap="gray", vmin=0, vmax=1)
        axes[1][c].set_title(f"nearest: {training.names[j]}"[:28], fontsize=7)
        for r in (0, 1):
            axes[r][c].axis("off")
    fig.suptitle("Closest synthetic–training pairs (feature distance ÷ typical training gap)", fontsize=10)
    fig.tight_layout(h_pad=1.5)
    return _png(fig)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if not np.isfinite(v):
            return "—"
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:24px auto;
padding:0 16px;color:#1d2433;line-height:1.45}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:32px;border-bottom:1px solid #d8dde6;padding-bottom:4px}
.meta{color:#5a6475;font-size:.92em}
table{border-collapse:collapse;margin:10px 0;font-size:.93em}
th,td{border:1px solid #d8dde6;padding:5px 10px;text-align:right}
th{background:#f1f4f8}td:first-child,th:first-child{text-align:left}
.help{color:#5a6475;text-align:left!important;font-size:.9em}
.figs{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}img{max-width:100%;height:auto}
.note{background:#fff6e0;border-left:4px solid #e0a000;padding:6px 10px;margin:6px 0}
.synthetic{background:#e8f1ff;border-left:4px solid #3b7ddd;padding:6px 10px}
"""


def render_html(
    report: ScoreReport,
    reference: ImageSet,
    candidate: ImageSet,
    *,
    title: str = "hipgen score report",
    command: str = "",
    training: ImageSet | None = None,
) -> str:
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>reference <b>{html.escape(reference.source)}</b> "
        f"({report.reference_count} images) · candidate <b>{html.escape(candidate.source)}</b> "
        f"({report.candidate_count} images) · feature backbone <b>{html.escape(report.backbone)}</b> "
        "(feature metrics compare only within one backbone) · "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>",
    ]
    if command:
        parts.append(f"<p class='meta'>command: <code>{html.escape(command)}</code></p>")
    parts.append(
        "<p class='synthetic'>The candidate images are synthetic. None of them is a patient's radiograph.</p>"
    )
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in report.notes]
    parts.append("<h2>Metrics</h2>")
    rows = [
        [
            m.name,
            m.value,
            m.standard_error or None,
            m.noise_baseline,
            m.improvement,
            m.sample_count,
        ]
        for m in report.metrics
    ]
    table = _table(["metric", "value", "± s.e.", "pure-noise baseline", "× better than noise", "n"], rows)
    help_rows = "".join(
        f"<tr><td>{html.escape(m.name)}</td>"
        f"<td class='help'>{html.escape(METRIC_HELP.get(m.name, ''))}</td></tr>"
        for m in report.metrics
    )
    parts.append(
        table + f"<details><summary>what each metric means</summary><table>{help_rows}</table></details>"
    )
    if report.fidelity and report.requested is not None and report.measured is not None:
        parts.append("<h2>Angle fidelity: requested vs measured Norberg angle</h2>")
        fid_rows = [
            [side, f.n, f.pearson_r, f.r2, f.mae, f.rmse, f.bias, f.within_5]
            for side, f in report.fidelity.items()
        ]
        parts.append(
            _table(["side", "n", "Pearson r", "R² (identity)", "MAE °", "RMSE °", "bias °", "≤5°"], fid_rows)
        )
        scatter, bland, bars = _fidelity_plots(report.requested, report.measured)
        parts.append(
            f"<div class='figs'>{_img(scatter, 'requested vs measured NA')}"
            f"{_img(bland, 'Bland–Altman')}</div>"
        )
        parts.append("<h2>Per angle bin and class</h2>")
        bins = per_bin(report.requested, report.measured)
        parts.append(_table(["requested bin", "hips", "MAE °", "bias °"], [list(b.values()) for b in bins]))
        classes = per_class(report.requested, report.measured)
        parts.append(
            _table(
                ["requested class", "hips", "MAE °", "measured in that class"],
                [list(c.values()) for c in classes],
            )
        )
        parts.append(_img(bars, "MAE per requested-angle bin"))
    if report.transfer:
        t = report.transfer
        parts.append("<h2>GAN-train / GAN-test (Big/Small linear probe on backbone features)</h2>")
        parts.append(
            _table(
                ["train → test", "accuracy"],
                [
                    ["synthetic → real (GAN-train)", t.gan_train],
                    ["real → synthetic (GAN-test)", t.gan_test],
                    ["real half → real half (base)", t.base],
                ],
            )
        )
    parts.append("<h2>Samples</h2>")
    parts.append(
        _img(_grid([("real", reference.images[:8]), ("synthetic", candidate.images[:8])]), "samples")
    )
    if report.memorisation is not None:
        mem = report.memorisation
        parts.append("<h2>Memorisation: nearest training image of each synthetic image</h2>")
        parts.append(
            f"<p>{len(mem.flagged)} of {len(mem.score)} synthetic images "
            f"({100 * mem.flagged_fraction:.1f} %) are closer to a training image than "
            f"{mem.threshold:g}× the typical gap between two training images "
            "(flagged as possible copies).</p>"
        )
        against = training or reference
        parts.append(f"<p class='meta'>searched: {html.escape(against.source)} ({len(against)} images)</p>")
        pairs = _nn_pairs(report, against, candidate)
        if pairs:
            parts.append(_img(pairs, "nearest-neighbour pairs"))
    parts.append("</body></html>")
    return "\n".join(parts)


def _json_safe(v: Any) -> Any:
    """NaN/inf → null (strict JSON has neither), numpy scalars → Python numbers."""
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def write_report(
    report: ScoreReport,
    reference: ImageSet,
    candidate: ImageSet,
    out: str | Path,
    *,
    command: str = "",
    title: str = "hipgen score report",
    training: ImageSet | None = None,
) -> tuple[Path, Path]:
    """``out/report.html`` and ``out/report.json`` (written whole, then renamed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = report.to_dict() | {
        "reference": reference.source,
        "candidate": candidate.source,
        "command": command,
        "skipped": {"reference": reference.skipped, "candidate": candidate.skipped},
    }
    if report.requested is not None and report.measured is not None:
        data["per_bin"] = per_bin(report.requested, report.measured)
        data["per_class"] = per_class(report.requested, report.measured)
    paths = []
    for name, text in (
        ("report.json", json.dumps(_json_safe(data), indent=2)),
        (
            "report.html",
            render_html(report, reference, candidate, title=title, command=command, training=training),
        ),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)
        paths.append(out / name)
    return paths[1], paths[0]


__all__ = ["ANGLE_BINS", "per_bin", "per_class", "render_html", "write_report"]
