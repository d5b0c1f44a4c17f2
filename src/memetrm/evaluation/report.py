"""Markdown tables and plots (ROC curves, TRM reasoning traces) from run folders."""

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
from memetrm.utils import atomic_write_text  # noqa: E402


def load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    res, pred = run_dir / "results.json", run_dir / "predictions.json"
    if not res.is_file():
        raise ConfigError(f"{run_dir}: no results.json (run `memetrm train --out-dir {run_dir}`)")
    return json.loads(res.read_text()), json.loads(pred.read_text()) if pred.is_file() else {}


def fmt(stat: dict[str, Any], ci: bool = False) -> str:
    s = f"{stat['mean']:.3f} ± {stat['std']:.3f}"
    if ci and stat.get("ci95"):
        lo, hi = stat["ci95"]
        s += f" [{lo:.3f}, {hi:.3f}]"
    return s


def results_table(runs: list[dict[str, Any]]) -> str:
    """One row per run: dev and test AUROC/accuracy/F1 (mean ± std, test AUROC with 95% CI)."""
    lines = [
        "| head | seeds | params | train s/seed | dev AUROC | dev acc | dev F1 "
        "| test AUROC [95% CI] | test acc | test F1 |",
        "|---|---:|---:|---:|---|---|---|---|---|---|",
    ]
    for r in runs:
        dev, test = r["splits"][r["roles"]["dev"]], r["splits"][r["roles"]["test"]]
        lines.append(
            f"| {r['head']} | {r['seeds']} | {r['params']:,} | {r['train_seconds_per_seed']:.1f} "
            f"| {fmt(dev['auroc'])} | {fmt(dev['accuracy'])} | {fmt(dev['f1'])} "
            f"| {fmt(test['auroc'], ci=True)} | {fmt(test['accuracy'])} | {fmt(test['f1'])} |"
        )
    return "\n".join(lines)


def depth_table(runs: list[dict[str, Any]]) -> str | None:
    rows = []
    for r in runs:
        for split in (r["roles"]["dev"], r["roles"]["test"]):
            d = r["splits"][split].get("depth")
            if d:
                rows.append(f"| {r['head']} | {split} | {d['mean_steps']:.2f} / {d['max_steps']} "
                            f"| {d['auroc_halted']:.3f} | {d['auroc_full_depth']:.3f} |")
    if not rows:
        return None
    return "\n".join(["| head | split | mean steps / N_sup | AUROC halted | AUROC full depth |",
                      "|---|---|---|---|---|", *rows])


def plot_roc(runs: list[dict[str, Any]], preds: list[dict[str, Any]], path: Path) -> None:
    """Test-split ROC of every head (seed 0), AUROC in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for r, p in zip(runs, preds, strict=True):
        split = r["roles"]["test"]
        if split not in p:
            continue
        y, prob = np.array(p[split]["labels"]), np.array(p[split]["probs"][0])
        fpr, tpr, _ = roc_curve(y, prob)
        ax.plot(fpr, tpr, label=f"{r['head']} ({r['splits'][split]['auroc']['values'][0]:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=f"ROC on {runs[0]['dataset']} {runs[0]['roles']['test']} (seed 0)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_traces(run: dict[str, Any], pred: dict[str, Any], path: Path) -> bool:
    """Hateful probability after each supervision step: class means and a few examples."""
    split = run["roles"]["test"]
    trace = pred.get(split, {}).get("trace")
    if not trace:
        return False
    t, y = np.array(trace), np.array(pred[split]["labels"])
    steps = np.arange(1, t.shape[1] + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i in range(min(12, len(t))):
        ax.plot(steps, t[i], color="tab:red" if y[i] else "tab:blue", alpha=0.25, lw=0.8)
    for cls, color, name in ((1, "tab:red", "hateful/offensive"), (0, "tab:blue", "benign")):
        if (y == cls).any():
            ax.plot(steps, t[y == cls].mean(0), color=color, lw=2.5, label=f"mean, {name}")
    ax.set(xlabel="supervision step", ylabel="P(hateful)",
           title=f"{run['head']} reasoning trace, {run['dataset']} {split} (seed 0)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def dataset_section(run_dirs: list[Path], asset_dir: Path, rel: str) -> str:
    """Markdown for one dataset's runs; plots are written to ``asset_dir`` (linked via ``rel``)."""
    loaded = [load_run(d) for d in run_dirs]
    runs, preds = [r for r, _ in loaded], [p for _, p in loaded]
    first = runs[0]
    name = f"{first['dataset']}-{first['encoder']}".replace("/", "_").replace(":", "_")
    asset_dir.mkdir(parents=True, exist_ok=True)
    plot_roc(runs, preds, asset_dir / f"roc-{name}.png")
    parts = [
        f"### {first['dataset']} — encoder `{first['encoder']}`, fields {', '.join(first['fields'])}",
        f"Train `{first['roles']['train']}`, select on `{first['roles']['dev']}` (epoch and "
        f"threshold), report `{first['roles']['test']}`; mean ± std over seeds; "
        "test AUROC with a 95% bootstrap CI (1000 resamples of the test set).",
        "",
        results_table(runs),
        "",
    ]
    if any(r["skipped_missing_images"] for r in runs):
        skipped = sorted({i for r in runs for i in r["skipped_missing_images"]})
        parts += [f"Skipped (missing image): {', '.join(skipped)}.", ""]
    depth = depth_table(runs)
    if depth:
        parts += ["Adaptive halting (ACT): supervision steps used at inference vs full depth.", "",
                  depth, ""]
    parts += [f"![ROC]({rel}/roc-{name}.png)", ""]
    for r, p in zip(runs, preds, strict=True):
        trace_png = asset_dir / f"trace-{name}-{r['head']}.png"
        if plot_traces(r, p, trace_png):
            parts += [f"![{r['head']} trace]({rel}/{trace_png.name})", ""]
    return "\n".join(parts)


def write_report(groups: list[list[Path]], out: Path, title: str = "memetrm results",
                 preamble: str = "") -> Path:
    """One section per group of run folders (one group per dataset/encoder)."""
    out = Path(out)
    assets = out.parent / f"{out.stem}_assets"
    body = [f"# {title}", "", preamble, ""] if preamble else [f"# {title}", ""]
    for g in groups:
        body.append(dataset_section(g, assets, assets.name))
    atomic_write_text(out, "\n".join(body))
    return out
