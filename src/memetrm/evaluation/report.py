"""Markdown tables and plots (ROC curves beside reliability diagrams, a forest plot of test
AUROC, TRM reasoning traces) from run folders, one section per dataset and test split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from memetrm.errors import ConfigError  # noqa: E402
from memetrm.evaluation.calibration import (  # noqa: E402
    ECE_BINS,
    expected_calibration_error,
    reliability,
)
from memetrm.evaluation.tables import asset_stem, dataset_markdown, run_name  # noqa: E402
from memetrm.utils import atomic_write_text, plural  # noqa: E402


def load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    res, pred = run_dir / "results.json", run_dir / "predictions.json"
    if not res.is_file():
        raise ConfigError(f"{run_dir}: no results.json (run `memetrm train --out-dir {run_dir}`)")
    return json.loads(res.read_text()), json.loads(pred.read_text()) if pred.is_file() else {}


def draw_reliability(ax: Any, y: np.ndarray, p: np.ndarray, label: str, color: str,
                     raw: bool = False) -> None:
    """One reliability curve: each non-empty bin's mean probability against its observed rate
    of label 1 (dots sized by count); dashed for raw scores."""
    r = reliability(y, p)
    keep = np.array(r["count"]) > 0
    x, rate, count = (np.array(r[k])[keep] for k in ("mean_prob", "rate", "count"))
    ax.plot(x, rate, ls="--" if raw else "-", color=color, lw=1 if raw else 1.8,
            alpha=0.6 if raw else 1, label=label)
    if not raw:
        ax.scatter(x, rate, s=8 + 60 * count / count.max(), color=color, zorder=3)


def finish_reliability(ax: Any, title: str) -> None:
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="mean predicted probability (bin)", ylabel="observed rate of label 1",
           xlim=(0, 1), ylim=(0, 1), title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper left")


def plot_scores(y: np.ndarray, prob: np.ndarray, raw: np.ndarray, threshold: float, path: Path,
                title: str) -> None:
    """One model on one split: its ROC with the threshold's operating point, beside the
    reliability diagram of its calibrated (and raw) probabilities."""
    fig, (roc, rel) = plt.subplots(1, 2, figsize=(11, 5))
    fpr, tpr, _ = roc_curve(y, prob)
    roc.plot(fpr, tpr, color="C0")
    pred = prob >= threshold
    roc.plot(pred[y == 0].mean(), pred[y == 1].mean(), "o", color="C0", ms=5,
             label=f"threshold {threshold:.3f}")
    roc.plot([0, 1], [0, 1], "k--", lw=0.8)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1),
            title=f"ROC, {title}")
    roc.title.set_fontsize(9)
    roc.legend(fontsize=8, loc="lower right")
    draw_reliability(rel, y, prob, f"calibrated (ECE {expected_calibration_error(y, prob):.3f})",
                     "C0")
    draw_reliability(rel, y, raw, f"raw (ECE {expected_calibration_error(y, raw):.3f})", "C0",
                     raw=True)
    finish_reliability(rel, f"reliability, {ECE_BINS} equal-width bins (dot size: count)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(runs: list[dict[str, Any]], preds: list[dict[str, Any]], path: Path) -> None:
    """Test-split ROC of every head: the mean over seeds with a ±1 std band, and the mean
    operating point of the dev-chosen thresholds (a dot); beside it, the reliability diagram
    of every head's calibrated probabilities (all seeds pooled; dashed: raw), with the mean
    ECE over seeds."""
    grid = np.linspace(0, 1, 201)
    fig, (ax, rel) = plt.subplots(1, 2, figsize=(12, 5))
    for i, (r, p) in enumerate(zip(runs, preds, strict=True)):
        split = r["roles"]["test"]
        if split not in p:
            continue
        y = np.array(p[split]["labels"])
        tprs, points = [], []
        for prob, thr in zip(p[split]["probs"], r["thresholds"], strict=True):
            prob = np.array(prob)
            fpr, tpr, _ = roc_curve(y, prob)
            tprs.append(np.interp(grid, fpr, tpr))
            pred = prob >= thr
            points.append((pred[y == 0].mean(), pred[y == 1].mean()))
        mean, std = np.mean(tprs, 0), np.std(tprs, 0)
        auc = r["splits"][split]["auroc"]
        color = f"C{i % 10}"
        ax.plot(grid, mean, color=color, label=f"{r['head']} ({auc['mean']:.3f})")
        ax.fill_between(grid, mean - std, mean + std, color=color, alpha=0.15, lw=0)
        ax.plot(*np.mean(points, 0), "o", color=color, ms=5)
        n_seeds = len(p[split]["probs"])
        ys = np.tile(y, n_seeds)
        for key, raw in (("probs", False), ("probs_raw", True)):
            if key not in p[split]:  # runs saved before calibration kept no raw scores
                continue
            probs = np.concatenate(p[split][key])
            ece = np.mean([expected_calibration_error(y, np.array(q)) for q in p[split][key]])
            draw_reliability(rel, ys, probs, f"{r['head']}{' raw' if raw else ''} "
                             f"(ECE {ece:.3f})", color, raw=raw)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1),
           title=f"ROC on {runs[0]['dataset']} {runs[0]['roles']['test']} "
                 f"(mean over {plural(runs[0]['seeds'], 'seed')}, band ±1 std,\n"
                 "dot = operating point at the dev-chosen threshold; legend: mean AUROC)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="lower right")
    finish_reliability(rel, f"Reliability on {runs[0]['roles']['test']} ({ECE_BINS} equal-width "
                            "bins, seeds pooled; dashed: raw scores;\nlegend: mean ECE over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_forest(runs: list[dict[str, Any]], path: Path) -> None:
    """Test AUROC of every head with its 95% bootstrap CI, best at the top: readable where
    ten overlapping ROC curves are not."""
    rows = []
    for r in runs:
        auc = r["splits"][r["roles"]["test"]]["auroc"]
        lo, hi = auc.get("ci95") or (auc["mean"], auc["mean"])
        rows.append((auc["mean"], lo, hi, run_name(r)))
    rows.sort()
    means, lo, hi, names = (list(c) for c in zip(*rows, strict=True))
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.35 * len(rows)))
    ax.errorbar(means, y, xerr=[np.subtract(means, lo), np.subtract(hi, means)], fmt="o",
                color="k", ecolor="tab:blue", elinewidth=2, capsize=3, ms=4)
    for yi, m in zip(y, means, strict=True):
        ax.annotate(f"{m:.3f}", (m, yi), xytext=(0, 5), textcoords="offset points",
                    ha="center", fontsize=7)
    ax.axvline(0.5, color="grey", ls=":", lw=1)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    first = runs[0]
    ax.set(xlabel="test AUROC, mean over seeds\nbars: 95% bootstrap CI; dotted line: chance",
           title=f"Test AUROC on {first['dataset']} {first['roles']['test']}, "
                 f"encoder {first['encoder']}")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: faint example lines per class on a trace plot
TRACE_EXAMPLES = 6


def plot_traces(run: dict[str, Any], pred: dict[str, Any], path: Path) -> bool:
    """P(positive) after each supervision step (seed 0): class means and a few examples."""
    split = run["roles"]["test"]
    trace = pred.get(split, {}).get("trace")
    if not trace:
        return False
    t, y = np.array(trace), np.array(pred[split]["labels"])
    negative, positive = run.get("label_names", ["not hateful", "hateful"])
    steps = np.arange(1, t.shape[1] + 1)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    rng = np.random.default_rng(0)
    for cls, color, name in ((1, "tab:red", positive), (0, "tab:blue", negative)):
        idx = np.flatnonzero(y == cls)
        for i in rng.choice(idx, min(TRACE_EXAMPLES, len(idx)), replace=False):
            ax.plot(steps, t[i], color=color, alpha=0.25, lw=0.8)
        if len(idx):
            ax.plot(steps, t[idx].mean(0), color=color, lw=2.5, label=f"mean, {name}")
    ax.axhline(run["thresholds"][0], color="k", ls=":", lw=1,
               label=f"threshold {run['thresholds'][0]:.3f}")
    ax.set(xlabel="supervision step", ylabel=f"P({positive})", ylim=(0, 1), xticks=steps,
           title=f"{run['head']} reasoning trace, {run['dataset']} {split} (seed 0)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.text(0.01, 0.01, f"Faint lines: {TRACE_EXAMPLES} examples per class drawn at random "
             "(seed 0); thick lines: class means over the split.", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_plots(run_dirs: list[Path], asset_dir: Path, name: str | None = None
                ) -> list[dict[str, Any]]:
    """ROC, forest and reasoning-trace PNGs for one dataset's runs (ROC and traces need the
    predictions), named after ``name`` (default: the dataset and encoder)."""
    loaded = [load_run(d) for d in run_dirs]
    runs, preds = [r for r, _ in loaded], [p for _, p in loaded]
    asset_dir.mkdir(parents=True, exist_ok=True)
    name = name or asset_stem(runs[0])
    plot_roc(runs, preds, asset_dir / f"roc-{name}.png")
    plot_forest(runs, asset_dir / f"forest-{name}.png")
    for r, p in zip(runs, preds, strict=True):
        plot_traces(r, p, asset_dir / f"trace-{name}-{r['head']}.png")
    return runs


def group_runs(run_dirs: list[Path]) -> list[list[Path]]:
    """Run folders grouped by (dataset, test split, encoder), in first-seen order: runs of
    different data are never put in one table or one plot."""
    groups: dict[tuple[str, str, str], list[Path]] = {}
    for d in run_dirs:
        r, _ = load_run(d)
        groups.setdefault((r["dataset"], r["roles"]["test"], r["encoder"]), []).append(d)
    return list(groups.values())


def write_report(groups: list[list[Path]], out: Path, title: str = "memetrm results",
                 preamble: str = "") -> Path:
    """One section per group of run folders; each group is split further by dataset, test
    split and encoder (``group_runs``)."""
    out = Path(out)
    assets = out.parent / f"{out.stem}_assets"
    body = [f"# {title}", "", preamble, ""] if preamble else [f"# {title}", ""]
    sections = [sub for g in groups for sub in group_runs(g)]
    stems = [asset_stem(load_run(g[0])[0]) for g in sections]
    for g, stem in zip(sections, stems, strict=True):
        if stems.count(stem) > 1:  # same dataset and encoder, another test split
            stem = f"{stem}-{load_run(g[0])[0]['roles']['test']}"
        runs = write_plots(g, assets, stem)
        body.append(dataset_markdown(runs, assets, assets.name, stem))
    atomic_write_text(out, "\n".join(body))
    return out
