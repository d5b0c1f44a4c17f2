"""The threshold-policy table in docs/results.md, from docs/data/thresholds.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/thresholds.json"), Path("docs/thresholds.md")


def _ms(stat: dict[str, Any]) -> str:
    return f"{stat['mean']:.3f}" + ("" if stat["std"] is None else f" ± {stat['std']:.3f}")


def render(data: Path = DATA) -> str | None:
    """The table, written into docs/thresholds.md and returned; None before the first run."""
    r = load(data)
    if not r:
        return None
    rows = []
    for row in r["rows"]:
        for policy in r["policies"]:
            m = row["policies"][policy]
            above = m["accuracy"]["mean"] > row["test_majority_rate"]
            rows.append([f"{row['dataset']} `{row['head']}`", policy, _ms(m["threshold"]),
                         _ms(m["accuracy"]), f"{row['test_majority_rate']:.3f}",
                         "yes" if above else "**no**", _ms(m["balanced_accuracy"]),
                         _ms(m["fpr"]), _ms(m["flagged"])])
    heads = ", ".join(sorted({f"{x['dataset']} {x['head']} ({x['seeds']} seed"
                              f"{'s' if x['seeds'] > 1 else ''}, fields "
                              f"{'+'.join(x['fields'])}, dev {x['dev']}, test {x['test']}, "
                              f"test AUROC {x['test_auroc']:.3f})" for x in r["rows"]}))
    table = "\n".join([
        f"{' and '.join(f'`{c}`' for c in r['commands'])} ({r['threads']} thread, "
        f"{r['machine']}): {heads}. Each policy picks "
        "each seed's threshold on dev; test is scored at it (mean ± std over seeds). "
        "\"majority\" is the test accuracy of always answering the larger class.", "",
        markdown_table(["run", "policy (on dev)", "threshold", "test acc", "majority",
                        "acc > majority", "test balanced acc", "test FPR", "test flagged"],
                       rows, "llrrrlrrr")])
    table += "\n\n" + summary(r)
    replace_block(DOC, "thresholds", table)
    return table


def summary(r: dict[str, Any]) -> str:
    """Per policy over every run: how many beat the majority rate, balanced accuracy, and the
    most one-sided run (the share of test memes its threshold puts in one class)."""
    rows = []
    for policy in r["policies"]:
        ms = [(row["policies"][policy], row["test_majority_rate"]) for row in r["rows"]]
        above = sum(m["accuracy"]["mean"] > rate for m, rate in ms)
        rows.append([policy, f"{above} of {len(ms)}",
                     f"{sum(m['accuracy']['mean'] - rate for m, rate in ms) / len(ms):+.3f}",
                     f"{sum(m['balanced_accuracy']['mean'] for m, _ in ms) / len(ms):.3f}",
                     f"{max(max(f, 1 - f) for f in (m['flagged']['mean'] for m, _ in ms)):.3f}"])
    return "\n".join([
        "Over all runs above (each run counted once):", "",
        markdown_table(["policy (on dev)", "runs with test acc > majority",
                        "mean test acc − majority", "mean test balanced acc",
                        "most put in one class (a run's mean)"], rows, "lrrrr")])
