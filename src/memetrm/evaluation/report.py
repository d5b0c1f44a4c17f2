"""Markdown tables and plots (ROC curves, a forest plot of test AUROC, TRM reasoning traces)
from run folders, one section per dataset and test split."""

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
from memetrm.evaluation.tables import asset_stem, dataset_markdown, run_name  # noqa: E402
from memetrm.utils import atomic_write_text, plural  # noqa: E402


def load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    res, pred = run_dir / "results.json", run_dir / "predictions.json"
    if not res.is_file():
        raise ConfigError(f"{run_dir}: no results.json (run `memetrm train --out-dir {run_dir}`)")
    return json.loads(res.read_text()), json.loads(pred.read_text()) if pred.is_file() else {}


def plot_roc(runs: list[dict[str, Any]], preds: list[dict[str, Any]], path: Path) -> None:
    """Test-split ROC of every head: the mean over seeds with a ±1 std band, and the mean
    operating point of the dev-chosen thresholds (a dot)."""
    grid = np.linspace(0, 1, 201)
    fig, ax = plt.subplots(figsize=(6.5, 5))
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
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1),
           title=f"ROC on {runs[0]['dataset']} {runs[0]['roles']['test']} "
                 f"(mean over {plural(runs[0]['seeds'], 'seed')}, band ±1 std,\n"
                 "dot = operating point at the dev-chosen threshold; legend: mean AUROC)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
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
