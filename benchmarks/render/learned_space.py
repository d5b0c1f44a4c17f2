"""The tables of docs/learned_space.md, from docs/data/learned_space.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import fmt, markdown_table

DATA, DOC = Path("docs/data/learned_space.json"), Path("docs/learned_space.md")
DEV, TEST, UNSEEN = "dev_seen", "test_seen", "dev_unseen"


def _row(label: str, seeds: str, splits: dict[str, Any]) -> list[str]:
    return [label, seeds, fmt(splits[DEV]["auroc"]), fmt(splits[TEST]["auroc"], ci=True),
            fmt(splits[TEST]["accuracy"]), fmt(splits[UNSEEN]["auroc"], ci=True)]


def markdown(data: dict[str, Any] | None) -> str:
    if not data or not data.get("runs"):
        return "Not run yet: `python -m benchmarks.learned_space --data-root ../shared/data`."
    header = ["configuration", "seeds", f"{DEV} AUROC", f"{TEST} AUROC [95% CI]",
              f"{TEST} acc", f"{UNSEEN} AUROC [95% CI]"]
    out = []
    for group in dict.fromkeys(r["group"] for r in data["runs"].values()):
        rows = []
        for r in data["runs"].values():
            if r["group"] != group:
                continue
            rows.append(_row(r["label"], str(r["seeds"]), r["splits"]))
            rows.append(_row(f"{r['label']}, seed ensemble", f"mean of {r['seeds']}",
                             r["ensemble"]["splits"]))
        out += [f"#### {group}", "", markdown_table(header, rows), ""]
    ens = data.get("ensemble")
    if ens:
        members = ", ".join(data["runs"][m]["label"] for m in ens["members"])
        out += ["#### dev-selected ensemble", "", markdown_table(header, [_row(
            f"ensemble of the {len(ens['members'])} best on {DEV}: {members}", "mean",
            ens["splits"])]), ""]
    out.append("Commands: " + "; ".join(f"`{c}`" for c in data.get("commands", [])))
    return "\n".join(out)


def render(data: Path = DATA) -> None:
    replace_block(DOC, "learned_space", markdown(load(data)))
