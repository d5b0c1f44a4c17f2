"""The quality tables of docs/results.md, from docs/data/quality/<dataset>.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.render import replace_block
from memetrm.evaluation.tables import fmt, markdown_table
from memetrm.progress import console

DATA = Path("docs/data/quality")
DOC = Path("docs/results.md")


def _row(name: str, seeds: str, splits: dict[str, Any], roles: dict[str, str], extra: list[str]
         ) -> list[str]:
    dev, test = splits[roles["dev"]], splits[roles["test"]]
    return [name, seeds, fmt(dev["auroc"]), fmt(test["auroc"], ci=True), fmt(test["accuracy"]),
            fmt(test["f1"]), *[fmt(splits[s]["auroc"], ci=True) if s in splits else "-"
                               for s in extra]]


def dataset_tables(data: dict[str, Any]) -> str:
    runs, ens = data["runs"], data["ensemble"]
    roles = runs[0]["roles"]
    extra = [s for s in runs[0]["splits"] if s not in roles.values()]
    dev_name = "out-of-fold AUROC" if roles["dev"] == "cv" else f"{roles['dev']} AUROC"
    header = ["configuration", "seeds", dev_name, f"{roles['test']} AUROC [95% CI]",
              f"{roles['test']} acc", f"{roles['test']} F1", *(f"{s} AUROC [95% CI]" for s in extra)]
    rows = []
    for r in sorted(runs, key=lambda r: -r["splits"][roles["dev"]]["auroc"]["mean"]):
        rows.append(_row(r["name"], str(r["seeds"]), r["splits"], roles, extra))
        rows.append(_row(f"{r['name']}, seed ensemble", f"mean of {r['seeds']}",
                         r["ensemble"]["splits"], roles, extra))
    rows.append(_row(f"**ensemble of the {len(ens['members'])} best on dev**: "
                     + "; ".join(ens["members"]), "mean", ens["splits"], roles, extra))
    for ref in data["references"]:
        rr = ref["roles"]
        rows.append(_row(f"reference: {ref['name']}", str(ref["seeds"]),
                         ref["splits"], rr, [s for s in extra if s in ref["splits"]]))
    maj = data["majority_rate"].get(roles["test"])
    ds = runs[0]["dataset"]
    return "\n".join([
        f"### {ds}", "",
        f"`{data['command']}`. Selection: "
        + (f"{runs[0]['cv']}-fold cross-validation on train + dev (epoch, C, k/temperature/"
           f"alpha and the {runs[0]['config']['train']['threshold_metric']} threshold on the "
           "out-of-fold predictions), then a refit on train + dev" if runs[0]["cv"]
           else f"epoch and threshold on `{roles['dev']}`")
        + f". Test majority-class rate: {maj:.3f}.", "",
        markdown_table(header, rows), ""])


def markdown(data_dir: Path = DATA) -> str:
    """Every dataset's quality tables (docs/results.md embeds them in its own block too)."""
    files = sorted(data_dir.glob("*.json")) if data_dir.is_dir() else []
    if not files:
        return "Not run yet: `python -m benchmarks.quality --data-root ../shared/data`."
    return "\n".join(dataset_tables(json.loads(f.read_text())) for f in files)


def render() -> None:
    """The quality block of docs/results.md."""
    replace_block(DOC, "quality", markdown())
    console.print(f"wrote the quality tables of {DOC}")
