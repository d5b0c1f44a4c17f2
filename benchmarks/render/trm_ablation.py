"""The TRM ablation in docs/trm.md, from docs/data/trm_ablation.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import fmt, markdown_table

DATA, DOC = Path("docs/data/trm_ablation.json"), Path("docs/trm.md")
REFERENCE = "reference: mlp"
BASE = "trm (n=3, T=3, N_sup=8, hidden 128)"
ONCE = "no recursion (n=1, T=1, N_sup=1: the network once)"


def best_variant(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The TRM variant with the best mean dev_seen AUROC (test plays no part)."""
    return max((r for r in rows if r["name"] != REFERENCE), key=lambda r: r["dev_seen"]["mean"])


def findings(rows: list[dict[str, Any]]) -> str:
    """What the ablation says, in words, from its dev_seen numbers alone."""
    by = {r["name"]: r["dev_seen"]["mean"] for r in rows}
    best = best_variant(rows)
    parts = []
    if BASE in by and ONCE in by:
        gap = by[BASE] - by[ONCE]
        parts.append(f"Recursion {'helps' if gap > 0 else 'does not help'}: the `trm` defaults "
                     f"score {by[BASE]:.3f} on dev_seen against {by[ONCE]:.3f} for the same "
                     f"network applied once ({gap:+.3f}).")
    if REFERENCE in by:
        gap = best["dev_seen"]["mean"] - by[REFERENCE]
        parts.append(f"The best TRM on dev, {best['name']} ({best['dev_seen']['mean']:.3f}), is "
                     f"{'above' if gap > 0 else 'below'} `mlp` ({by[REFERENCE]:.3f}) by "
                     f"{abs(gap):.3f}.")
    return " ".join(parts)


def render(data: Path = DATA) -> None:
    """The ablation table in docs/trm.md, from the JSON the last run wrote."""
    r = load(data)
    if not r:
        return
    rows_in = sorted(r["rows"], key=lambda row: -row["dev_seen"]["mean"])
    best = best_variant(rows_in)["name"]
    rows = [[row["name"] + (" **(best TRM on dev)**" if row["name"] == best else ""),
             fmt(row["dev_seen"]), fmt(row["test_seen"], ci=True), fmt(row["dev_unseen"]),
             f"{row['seconds_per_epoch']:.1f}"] for row in rows_in]
    header = [f"variant ({r['seeds']} seeds x {r['epochs']} epochs)", "dev_seen AUROC (selects)",
              "test_seen AUROC [95% CI]", "dev_unseen AUROC", "train s/epoch"]
    text = f"`{r['command']}`:\n\n" + markdown_table(header, rows) + "\n\n" + findings(r["rows"])
    if r.get("confirm"):
        c = r["confirm"]
        table = []
        for row in c["rows"]:
            table.append([row["name"], fmt(row["splits"]["dev_seen"]),
                          fmt(row["splits"]["test_seen"], ci=True),
                          fmt(row["splits"]["dev_unseen"], ci=True),
                          f"{row['seconds_per_epoch']:.1f}"])
            table.append([f"{row['name']}, seed ensemble", fmt(row["ensemble"]["dev_seen"]),
                          fmt(row["ensemble"]["test_seen"], ci=True),
                          fmt(row["ensemble"]["dev_unseen"], ci=True), ""])
        text += (f"\n\nThe variant first on dev against `mlp`, {c['seeds']} seeds, up to "
                 f"{c['epochs']} epochs with early stopping on dev_seen (`{c['command']}`):\n\n"
                 + markdown_table([f"model ({c['seeds']} seeds)", "dev_seen AUROC",
                                   "test_seen AUROC [95% CI]", "dev_unseen AUROC [95% CI]",
                                   "train s/epoch"], table))
    replace_block(DOC, "trm-ablation", text)
