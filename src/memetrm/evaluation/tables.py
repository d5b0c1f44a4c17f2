"""Results as tables: markdown for reports and docs, rich for the terminal.

Plain Python over results dicts (no torch, no plotting), so the docs renderer can use it too.
"""

from __future__ import annotations

from pathlib import Path
from statistics import fmean
from typing import Any

from rich import box
from rich.table import Table


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
#: the accuracy of always answering the larger class, shown after "test acc" where known
MAJORITY = "test majority"
#: the terminal's default table: means only, so it fits 100 columns (``--wide``: the full one)
COMPACT_HEADER = ["head", "thr", "dev AUROC", "test AUROC [95% CI]", "test acc", "test F1"]


def summary_header(runs: list[dict[str, Any]], wide: bool = True) -> list[str]:
    """``SUMMARY_HEADER`` (or ``COMPACT_HEADER``), with the majority-class rate beside test
    accuracy when the runs record it."""
    header = list(SUMMARY_HEADER if wide else COMPACT_HEADER)
    if any(r.get("majority_rate") for r in runs):
        header.insert(header.index("test acc") + 1, MAJORITY if wide else "majority")
    return header


def summary_rows(runs: list[dict[str, Any]], wide: bool = True) -> list[list[str]]:
    """One row per run under ``summary_header``: the console table and the markdown share it."""
    majority = any(r.get("majority_rate") for r in runs)
    rows = []
    for r in runs:
        name = run_name(r)
        cells = [r["seeds"], f"{r['params']:,}", f"{r['train_seconds_per_seed']:.1f}"]
        rate = (r.get("majority_rate") or {}).get(r["roles"]["test"])
        rows.append(_metric_row(name, cells, fmean(r["thresholds"]), r["splits"], r["roles"],
                                wide, rate, majority))
        if r.get("ensemble") and r["seeds"] > 1:
            ens = r["ensemble"]
            label = f"{name}, seed ensemble" if wide else "  seed ensemble"
            rows.append(_metric_row(label, [f"mean of {r['seeds']}", "", ""],
                                    ens["threshold"], ens["splits"], r["roles"], wide, rate,
                                    majority))
    return rows


def run_name(r: dict[str, Any]) -> str:
    """The head, with what sets the run apart: fields chosen by hand, or CV."""
    extra = [f"fields {'+'.join(r['fields'])}"] if r.get("config", {}).get("fields") else []
    if r.get("cv"):
        extra.append(f"{r['cv']}-fold CV")
    return r["head"] + (f" ({', '.join(extra)})" if extra else "")


def _metric_row(name: str, cells: list[Any], threshold: float, splits: dict[str, Any],
                roles: dict[str, str], wide: bool, majority: float | None,
                with_majority: bool) -> list[str]:
    dev, test = splits[roles["dev"]], splits[roles["test"]]
    if wide:
        row = [name, *map(str, cells), f"{threshold:.3f}", fmt(dev["auroc"]),
               fmt(dev["accuracy"]), fmt(dev["f1"]), fmt(test["auroc"], ci=True),
               fmt(test["accuracy"]), fmt(test["f1"])]
    else:
        lo, hi = test["auroc"].get("ci95") or (None, None)
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
        row = [name, f"{threshold:.3f}", f"{dev['auroc']['mean']:.3f}",
               f"{test['auroc']['mean']:.3f}{ci}", f"{test['accuracy']['mean']:.3f}",
               f"{test['f1']['mean']:.3f}"]
    if with_majority:
        row.insert(len(row) - 1, "-" if majority is None else f"{majority:.3f}")
    return row


def markdown_table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    """A GitHub table; ``align`` holds one of l/r per column (default: all left)."""
    marks = [("---:" if a == "r" else "---") for a in (align or "l" * len(header))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, marks, *rows])


def results_table(runs: list[dict[str, Any]]) -> str:
    """One row per run: dev and test AUROC/accuracy/F1 (mean ± std, test AUROC with 95% CI),
    and the test majority-class rate where recorded."""
    header = summary_header(runs)
    return markdown_table(header, summary_rows(runs), "lrrrr" + "l" * (len(header) - 5))


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


def asset_stem(run: dict[str, Any]) -> str:
    return f"{run['dataset']}-{run['encoder']}".replace("/", "_").replace(":", "_")


def speed_table(runs: list[dict[str, Any]]) -> str | None:
    timed = [r for r in runs if r.get("train_seconds_per_epoch")]
    if not timed:
        return None
    mlp = next((r["train_seconds_per_epoch"] for r in timed if r["head"] == "mlp"), None)
    rows = [[r["head"], f"{r['train_seconds_per_epoch']:.2f}",
             f"{r['train_seconds_per_epoch'] / mlp:.1f}x" if mlp else "-"] for r in timed]
    return markdown_table(["head", "train s/epoch", "vs mlp"], rows, "lrr")


def dataset_markdown(runs: list[dict[str, Any]], asset_dir: Path, rel: str,
                     stem: str | None = None) -> str:
    """Markdown for one dataset's results; links the plots found in ``asset_dir`` (named
    after ``stem``, default the dataset and encoder)."""
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
    name = stem or asset_stem(first)
    pngs = [f"roc-{name}.png", f"forest-{name}.png", *(f"trace-{name}-{r['head']}.png" for r in runs)]
    parts += [f"![{png.removesuffix('.png')}]({rel}/{png})\n" for png in pngs
              if (asset_dir / png).is_file()]
    return "\n".join(parts)




def summary_table(results: list[dict[str, Any]], wide: bool = False) -> Table:
    """The terminal version of ``results_table``: by default means only, fitting 100 columns;
    ``wide``: every column of the markdown table."""
    if wide:
        title, right = "results (mean ± std over seeds; test AUROC 95% bootstrap CI)", 5
    else:
        title, right = ("results (mean over seeds; test AUROC 95% bootstrap CI; --wide: ± std, "
                        "dev acc/F1, params, time)"), 0
    table = Table(title=title, box=box.SIMPLE_HEAD)
    rows = summary_rows(results, wide)
    for i, col in enumerate(summary_header(results, wide)):
        # a number is never folded; compact headers take two lines instead
        table.add_column(col if wide or not i else col.replace(" ", "\n", 1),
                         overflow="fold", no_wrap=i > 0, min_width=None if i else 10,
                         justify="right" if 0 < i < right else "left")
    for row in rows:
        table.add_row(*row)
    return table


def ensemble_table(sel: dict[str, Any]) -> Table:
    """A cross-configuration ensemble's members, threshold and metrics per split."""
    table = Table(title=f"ensemble of the {len(sel['members'])} best on dev: "
                        f"{', '.join(sel['members'])} (threshold {sel['threshold']:.3f})")
    for col in ("split", "n", "AUROC [95% CI]", "accuracy", "F1"):
        table.add_column(col)
    for split, m in sel["splits"].items():
        table.add_row(split, str(m["n"]), fmt(m["auroc"], ci=True), fmt(m["accuracy"]),
                      fmt(m["f1"]))
    return table
