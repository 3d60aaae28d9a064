"""Benchmark report: ``results.json``, a markdown table (methods x metrics, mean +- std over the
cases), and plots (matplotlib, Agg backend): metric bars, PSNR per held-out cell, a contact sheet
of held-out renders next to the ground truth.

Layout of a bench run folder::

    OUT/results.json        everything measured (per run, per held-out cell) + summaries
    OUT/results.partial.json    the runs so far, while a bench is running (removed at the end)
    OUT/table.md            the markdown tables (also printed by ``recon bench``)
    OUT/metric_bars.png     one panel per metric, a bar per method (mean, std as error bar)
    OUT/psnr_per_cell.png   held-out PSNR of every (view, time) cell, one line per method, per case
    OUT/contact_sheet.png   per case: GT held-out frame, then each method's render of it
    OUT/novel_views.png     per case and method: three novel views (a bullet-time sweep between the grid cameras)
    OUT/offgrid_views.png   synthetic cases: the off-grid evaluation cameras at time 0, ground truth first
    OUT/runs/<case>/<method>/fit/   each fit's pipeline run folder; init/ holds a non-tracking initialisation
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from recon.bench.metrics import summarize

# (key, column title, format, higher is better)
METRICS: tuple[tuple[str, str, str, bool | None], ...] = (
    ("psnr", "PSNR dB", "{:.2f}", True),
    ("ssim", "SSIM", "{:.3f}", True),
    ("masked_psnr", "masked PSNR dB", "{:.2f}", True),
    ("background_psnr", "bg PSNR dB", "{:.2f}", True),
    ("lpips", "LPIPS", "{:.3f}", False),
    ("novel_psnr", "novel PSNR dB", "{:.2f}", True),
    ("novel_masked_psnr", "novel masked PSNR dB", "{:.2f}", True),
    ("novel_background_psnr", "novel bg PSNR dB", "{:.2f}", True),
    ("train_psnr", "train PSNR dB", "{:.2f}", True),
    ("chamfer", "Chamfer", "{:.4f}", False),
    ("accuracy", "accuracy", "{:.4f}", False),
    ("completeness", "completeness", "{:.4f}", False),
    ("track_error", "3D track err", "{:.4f}", False),
    ("track_error_static", "track err if static", "{:.4f}", None),
    ("floater_ratio", "floaters", "{:.3f}", False),
    ("alpha_iou", "alpha IoU", "{:.3f}", True),
    ("input_registration_rate", "SfM reg (input)", "{:.2f}", True),
    ("recon_registration_rate", "SfM reg (recon)", "{:.2f}", True),
    ("input_reprojection_px", "SfM err px (input)", "{:.2f}", False),
    ("recon_reprojection_px", "SfM err px (recon)", "{:.2f}", False),
    ("gaussians", "Gaussians", "{:.0f}", None),
    ("wall_s", "wall s", "{:.1f}", None),
    ("peak_rss_mb", "peak MB", "{:.0f}", None),
    ("output_mb", "output MB", "{:.2f}", None),
)
BAR_METRICS = ("psnr", "ssim", "masked_psnr", "chamfer", "track_error", "floater_ratio", "alpha_iou", "wall_s")


def summarise_runs(runs: list[dict[str, Any]], methods: list[str], group_key: str | None = None) -> dict[str, Any]:
    """``{group: {method: {metric: {mean, std, n}}}}`` over the successful runs (group "all"
    when ``group_key`` is None, else the value of ``run["group"]``)."""
    out: dict[str, Any] = {}
    groups = ["all"] if group_key is None else sorted({r.get("group", "all") for r in runs})
    for g in groups:
        out[g] = {}
        for m in methods:
            sel = [r for r in runs if r["method"] == m and r["status"] == "ok" and (group_key is None or r.get("group") == g)]
            out[g][m] = {k: summarize([r["metrics"].get(k) for r in sel]) for k, *_ in METRICS}
    return out


PAIRED_METRICS = ("psnr", "background_psnr", "novel_psnr", "novel_background_psnr", "floater_ratio", "chamfer")
"""Metrics of the paired comparison (:func:`paired_differences`)."""


def paired_differences(runs: list[dict[str, Any]], methods: list[str], base: str = "recon",
                       keys: tuple[str, ...] = PAIRED_METRICS) -> dict[str, Any]:
    """Per method ``m`` other than ``base`` and metric: the per-case differences ``base - m``
    over the cases where both ran, ``{mean, std, n, better}`` (``better``: cases where ``base`` is
    better, by the metric's direction) and the differences themselves, by case."""
    direction = {k: hb for k, _, _, hb in METRICS}
    ok = {(r["case"], r["method"]): r["metrics"] for r in runs if r["status"] == "ok"}
    cases = sorted({c for c, _ in ok})
    out: dict[str, Any] = {}
    for m in methods:
        if m == base:
            continue
        out[m] = {}
        for k in keys:
            diffs = {c: _num(ok[(c, base)].get(k)) - _num(ok[(c, m)].get(k)) for c in cases
                     if (c, base) in ok and (c, m) in ok}
            diffs = {c: d for c, d in diffs.items() if math.isfinite(d)}
            if not diffs:
                continue
            s = summarize(list(diffs.values()))
            sign = 1.0 if direction.get(k, True) else -1.0
            out[m][k] = {**s, "better": int(sum(sign * d > 0 for d in diffs.values())), "by_case": diffs}
    return out


def paired_table(paired: dict[str, Any], base: str = "recon") -> str:
    """Markdown: one row per method, one column per metric: ``mean ± std (better in b of n)``."""
    keys = [k for k in PAIRED_METRICS if any(k in v for v in paired.values())]
    if not keys:
        return ""
    title = {k: t for k, t, *_ in METRICS}
    fmt = {k: f for k, _, f, _ in METRICS}
    lines = [f"| {base} - method | " + " | ".join(title[k] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for m, row in paired.items():
        cells = []
        for k in keys:
            s = row.get(k)
            cells.append("n/a" if s is None else f"{fmt[k].format(s['mean'])} ± {fmt[k].format(s['std'] or 0.0)} "
                                                f"({base} better in {s['better']}/{s['n']})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _num(v: Any) -> float:
    """None (a NaN after JSON sanitising) -> NaN."""
    return float("nan") if v is None else float(v)


def _cell(s: dict[str, Any], fmt: str) -> str:
    if s["n"] == 0 or not math.isfinite(_num(s["mean"])):
        return "n/a"
    if s["n"] == 1:
        return fmt.format(s["mean"])
    return f"{fmt.format(s['mean'])} ± {fmt.format(s['std'])}"


def markdown_table(summary: dict[str, dict[str, Any]], methods: list[str], status: dict[str, dict[str, str]]) -> str:
    """Methods x metrics; columns with no value for any method are left out; methods that did
    not run get one row saying why."""
    cols = [(k, t, f, hb) for k, t, f, hb in METRICS if any(summary.get(m, {}).get(k, {"n": 0})["n"] > 0 for m in methods)]
    titles = [t + (" ↑" if hb else " ↓" if hb is False else "") for _, t, _, hb in cols] or ["status"]
    lines = ["| method | " + " | ".join(titles) + " |", "|" + "---|" * (len(titles) + 1)]
    for m in methods:
        st = status.get(m, {})
        if st.get("status") not in (None, "ok"):
            lines.append(f"| {m} | " + " | ".join([st.get("reason", st.get("status", ""))] + [""] * (len(titles) - 1)) + " |")
            continue
        lines.append(f"| {m} | " + " | ".join(_cell(summary[m][k], f) for k, _, f, _ in cols) + " |")
    return "\n".join(lines)


def write_plots(out: Path, results: dict[str, Any], renders: dict[str, dict[str, np.ndarray]]) -> list[str]:
    """Write the figures into ``out``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recon.io.atomic import atomic_path

    methods = [m for m in results["methods"] if results["methods"][m]["status"] == "ok"]
    summary = results["summary"]["all"]
    written = []

    # 1. metric bars
    keys = [k for k in BAR_METRICS if any(summary[m][k]["n"] > 0 for m in methods)]
    if keys and methods:
        ncol = min(4, len(keys))
        nrow = math.ceil(len(keys) / ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.8 * nrow), squeeze=False)
        title = {k: t for k, t, *_ in METRICS}
        for ax, k in zip(axes.flat, keys):
            mean = [_num(summary[m][k]["mean"]) for m in methods]
            std = [_num(summary[m][k]["std"]) if summary[m][k]["n"] > 1 else 0.0 for m in methods]
            ax.bar(range(len(methods)), np.nan_to_num(mean), yerr=np.nan_to_num(std), color="C0", capsize=3)
            ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right", fontsize=7)
            ax.set_title(title[k], fontsize=9)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.tight_layout()
        with atomic_path(out / "metric_bars.png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        written.append("metric_bars.png")

    # 2. PSNR per held-out cell
    cases = sorted({r["case"] for r in results["runs"] if r["status"] == "ok" and r.get("per_cell")})
    if cases:
        fig, axes = plt.subplots(len(cases), 1, figsize=(8, 2.2 * len(cases)), squeeze=False)
        for ax, c in zip(axes[:, 0], cases):
            for k, m in enumerate(methods):
                run = next((r for r in results["runs"] if r["case"] == c and r["method"] == m and r["status"] == "ok"), None)
                if run is None:
                    continue
                ps = [_num(x["psnr"]) for x in run["per_cell"]]
                ax.plot(range(len(ps)), ps, marker="o", ms=3, label=m, color=f"C{k}")
            labels = [f"{x['view']}@t{x['time']}" for x in run["per_cell"]] if run else []
            ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=6)
            ax.set_ylabel("PSNR dB", fontsize=8)
            ax.set_title(c, fontsize=9)
        axes[0, 0].legend(fontsize=7, ncol=min(4, len(methods)))
        fig.tight_layout()
        with atomic_path(out / "psnr_per_cell.png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        written.append("psnr_per_cell.png")

    # 3. contact sheet: GT then each method, one row per case
    rows = [c for c in renders if "gt" in renders[c]]
    if rows:
        cols = ["gt"] + [m for m in methods if any(m in renders[c] for c in rows)]
        fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.9 * len(cols), 2.0 * len(rows)), squeeze=False)
        for i, c in enumerate(rows):
            for j, m in enumerate(cols):
                ax = axes[i, j]
                ax.axis("off")
                if m in renders[c]:
                    ax.imshow(renders[c][m])
                if i == 0:
                    ax.set_title(m, fontsize=8)
            axes[i, 0].text(-0.05, 0.5, c, transform=axes[i, 0].transAxes, rotation=90, va="center", ha="right", fontsize=7)
        fig.tight_layout()
        with atomic_path(out / "contact_sheet.png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        written.append("contact_sheet.png")
    written += _novel_sheet(out, renders, methods, plt)
    return written


def _novel_sheet(out: Path, renders: dict[str, dict[str, np.ndarray]], methods: list[str], plt) -> list[str]:
    """OUT/novel_views.png: per case (rows) and method (columns), three novel-view frames of a
    bullet-time sweep between the grid's cameras (:func:`recon.bench.runner.novel_views`); and
    OUT/offgrid_views.png: the off-grid evaluation cameras of synthetic cases at time 0
    (:data:`recon.bench.suites.NOVEL_CAMERAS`), ground truth first."""
    return (_strip_sheet(out, renders, methods, plt, "novel", "novel_views.png",
                         "novel views: a bullet-time sweep between the grid cameras at time 0 (no per-view offsets)")
            + _strip_sheet(out, renders, ["gt", *methods], plt, "offgrid", "offgrid_views.png",
                           "off-grid cameras (between the arc's views, 15 degrees higher) at time 0: the novel-PSNR views"))


def _strip_sheet(out: Path, renders: dict[str, dict[str, np.ndarray]], columns: list[str], plt, prefix: str,
                 name: str, title: str) -> list[str]:
    """One image per (case, column) from ``renders[case][f"{prefix}:{column}"]``, in a grid."""
    rows = [c for c in renders if any(k.startswith(f"{prefix}:") for k in renders[c])]
    cols = [m for m in columns if any(f"{prefix}:{m}" in renders[c] for c in rows)]
    if not rows or not cols:
        return []
    from recon.io.atomic import atomic_path

    fig, axes = plt.subplots(len(rows), len(cols), figsize=(max(6.0, 3.6 * len(cols)), 1.5 * len(rows) + 0.5), squeeze=False)
    for i, c in enumerate(rows):
        for j, m in enumerate(cols):
            ax = axes[i, j]
            ax.axis("off")
            if f"{prefix}:{m}" in renders[c]:
                ax.imshow(renders[c][f"{prefix}:{m}"])
            if i == 0:
                ax.set_title(m, fontsize=8)
        axes[i, 0].text(-0.02, 0.5, c, transform=axes[i, 0].transAxes, rotation=90, va="center", ha="right", fontsize=7)
    fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    with atomic_path(out / name) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return [name]


def write_report(out: Path, results: dict[str, Any], renders: dict[str, dict[str, np.ndarray]]) -> str:
    """Write ``results.json``, ``table.md`` and the plots into ``out``; returns the markdown."""
    from recon.io.atomic import write_json, write_text

    methods = list(results["methods"])
    status = results["methods"]
    parts = [f"### {results['suite']} suite{' (quick)' if results.get('quick') else ''}: all cases\n",
             markdown_table(results["summary"]["all"], methods, status)]
    by = results.get("summary_by_group") or {}
    if len(by) > 1:
        for g, summ in by.items():
            parts += [f"\n### {g}\n", markdown_table(summ, methods, status)]
    paired = results.get("paired") or {}
    if paired:
        parts += ["\n### Paired differences per case: recon - method (positive: recon higher; \"better\" follows each metric's direction)\n", paired_table(paired)]
    notes = results.get("notes") or []
    if notes:
        parts += ["\nNotes:"] + [f"- {n}" for n in notes]
    md = "\n".join(parts) + "\n"
    results["plots"] = write_plots(out, results, renders)
    write_json(out / "results.json", results)
    write_text(out / "table.md", md)
    (out / "results.partial.json").unlink(missing_ok=True)
    return md
