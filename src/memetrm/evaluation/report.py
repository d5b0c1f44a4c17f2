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
    """``mean ± std`` (``n/a`` for the std of a single seed; the value alone for an ensemble,
    which has no spread over seeds), with ``[lo, hi]`` if asked."""
    if stat.get("std") is None:
        s = f"{stat['mean']:.3f}"
    else:
        std = "n/a" if len(stat.get("values", [])) == 1 else f"{stat['std']:.3f}"
        s = f"{stat['mean']:.3f} ± {std}"
    if ci and stat.get("ci95"):
        lo, hi = stat["ci95"]
        s += f" [{lo:.3f}, {hi:.3f}]"
    return s


SUMMARY_HEADER = ["head", "seeds", "params", "train s/seed", "threshold", "dev AUROC", "dev acc",
                  "dev F1", "test AUROC [95% CI]", "test acc", "test F1"]


def summary_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    """One row per run under ``SUMMARY_HEADER``: the console table and the markdown share it."""
    rows = []
    for r in runs:
        name = run_name(r)
        cells = [r["seeds"], f"{r['params']:,}", f"{r['train_seconds_per_seed']:.1f}"]
        rows.append(_metric_row(name, cells, np.mean(r["thresholds"]), r["splits"], r["roles"]))
        if r.get("ensemble") and r["seeds"] > 1:
            ens = r["ensemble"]
            rows.append(_metric_row(f"{name}, seed ensemble", [f"mean of {r['seeds']}", "", ""],
                                    ens["threshold"], ens["splits"], r["roles"]))
    return rows


def run_name(r: dict[str, Any]) -> str:
    """The head, with what sets the run apart: fields chosen by hand, or CV."""
    extra = [f"fields {'+'.join(r['fields'])}"] if r.get("config", {}).get("fields") else []
    if r.get("cv"):
        extra.append(f"{r['cv']}-fold CV")
    return r["head"] + (f" ({', '.join(extra)})" if extra else "")


def _metric_row(name: str, cells: list[Any], threshold: float, splits: dict[str, Any],
                roles: dict[str, str]) -> list[str]:
    dev, test = splits[roles["dev"]], splits[roles["test"]]
    return [name, *map(str, cells), f"{threshold:.3f}", fmt(dev["auroc"]), fmt(dev["accuracy"]),
            fmt(dev["f1"]), fmt(test["auroc"], ci=True), fmt(test["accuracy"]), fmt(test["f1"])]


def markdown_table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    """A GitHub table; ``align`` holds one of l/r per column (default: all left)."""
    marks = [("---:" if a == "r" else "---") for a in (align or "l" * len(header))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, marks, *rows])


def results_table(runs: list[dict[str, Any]]) -> str:
    """One row per run: dev and test AUROC/accuracy/F1 (mean ± std, test AUROC with 95% CI)."""
    return markdown_table(SUMMARY_HEADER, summary_rows(runs), "lrrrrllllll")


def replace_block(path: Path, name: str, text: str) -> None:
    """Replace what stands between ``<!-- generated:NAME start -->`` and ``... end -->`` in a
    markdown file; hand-written prose around it stays. Missing markers are an error, so a
    table can never silently stop being updated."""
    start, end = f"<!-- generated:{name} start -->", f"<!-- generated:{name} end -->"
    doc = Path(path).read_text()
    if start not in doc or end not in doc:
        raise ConfigError(f"{path}: no {start} ... {end} block to write {name!r} into")
    head, _, rest = doc.partition(start)
    _, _, tail = rest.partition(end)
    atomic_write_text(Path(path), f"{head}{start}\n{text.strip()}\n{end}{tail}")


def depth_table(runs: list[dict[str, Any]]) -> str | None:
    rows = []
    for r in runs:
        if not any(r.get("calibration") or []):
            continue  # no adaptive halting: every example runs at full depth
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
                 f"(mean over {runs[0]['seeds']} seeds, band ±1 std,\n"
                 "dot = operating point at the dev-chosen threshold; legend: mean AUROC)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
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


def asset_stem(run: dict[str, Any]) -> str:
    return f"{run['dataset']}-{run['encoder']}".replace("/", "_").replace(":", "_")


def write_plots(run_dirs: list[Path], asset_dir: Path) -> list[dict[str, Any]]:
    """ROC and reasoning-trace PNGs for one dataset's runs (they need the predictions)."""
    loaded = [load_run(d) for d in run_dirs]
    runs, preds = [r for r, _ in loaded], [p for _, p in loaded]
    asset_dir.mkdir(parents=True, exist_ok=True)
    name = asset_stem(runs[0])
    plot_roc(runs, preds, asset_dir / f"roc-{name}.png")
    for r, p in zip(runs, preds, strict=True):
        plot_traces(r, p, asset_dir / f"trace-{name}-{r['head']}.png")
    return runs


def speed_table(runs: list[dict[str, Any]]) -> str | None:
    timed = [r for r in runs if r.get("train_seconds_per_epoch")]
    if not timed:
        return None
    mlp = next((r["train_seconds_per_epoch"] for r in timed if r["head"] == "mlp"), None)
    rows = [[r["head"], f"{r['train_seconds_per_epoch']:.2f}",
             f"{r['train_seconds_per_epoch'] / mlp:.1f}x" if mlp else "-"] for r in timed]
    return markdown_table(["head", "train s/epoch", "vs mlp"], rows, "lrr")


def dataset_markdown(runs: list[dict[str, Any]], asset_dir: Path, rel: str) -> str:
    """Markdown for one dataset's results; links the plots found in ``asset_dir``."""
    first = runs[0]
    parts = [
        f"### {first['dataset']} — encoder `{first['encoder']}`, fields {', '.join(first['fields'])}",
        f"Train `{first['roles']['train']}`, select on `{first['roles']['dev']}` (epoch and "
        f"threshold), report `{first['roles']['test']}`; mean ± std over seeds; "
        "test AUROC with a 95% bootstrap CI (1000 resamples of the test set).",
        "",
        results_table(runs),
        "",
    ]
    if any(r.get("skipped_missing_images") for r in runs):
        skipped = sorted({i for r in runs for i in r["skipped_missing_images"]})
        parts += [f"Skipped (missing image): {', '.join(skipped)}.", ""]
    speed = speed_table(runs)
    if speed:
        parts += ["Training cost on this machine (seconds per epoch over the seeds' epochs, and "
                  "the ratio to `mlp`):", "", speed, ""]
    depth = depth_table(runs)
    if depth:
        parts += ["Adaptive halting (ACT): supervision steps used at inference vs full depth.", "",
                  depth, ""]
    name = asset_stem(first)
    pngs = [f"roc-{name}.png", *(f"trace-{name}-{r['head']}.png" for r in runs)]
    parts += [f"![{png.removesuffix('.png')}]({rel}/{png})\n" for png in pngs
              if (asset_dir / png).is_file()]
    return "\n".join(parts)


def write_report(groups: list[list[Path]], out: Path, title: str = "memetrm results",
                 preamble: str = "") -> Path:
    """One section per group of run folders (one group per dataset/encoder)."""
    out = Path(out)
    assets = out.parent / f"{out.stem}_assets"
    body = [f"# {title}", "", preamble, ""] if preamble else [f"# {title}", ""]
    for g in groups:
        body.append(dataset_markdown(write_plots(g, assets), assets, assets.name))
    atomic_write_text(out, "\n".join(body))
    return out
