"""The TRM sweep table in docs/trm.md, from docs/data/trm_sweep.json."""

from __future__ import annotations

from pathlib import Path

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/trm_sweep.json"), Path("docs/trm.md")


def render(data: Path = DATA) -> None:
    """The sweep table in docs/trm.md, from the JSON the last run wrote."""
    r = load(data)
    if not r:
        return
    best = max(r["rows"], key=lambda row: row["dev"]["mean"])["name"]
    rows = [[row["name"] + (" (best on dev)" if row["name"] == best else ""),
             f"{row['dev']['mean']:.3f} ± {row['dev']['std']:.3f}",
             f"{row['test']['mean']:.3f} ± {row['test']['std']:.3f}"] for row in r["rows"]]
    header = [f"TRM variant ({r['dataset']}, {r['seeds']} seeds)", "dev AUROC", "test AUROC"]
    replace_block(DOC, "trm-sweep", f"`{r['command']}`:\n\n" + markdown_table(header, rows))
