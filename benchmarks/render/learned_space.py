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
    out += contrast_table(data["runs"])
    out += vote_table(data["runs"], data.get("vote_before"))
    out += sweep_table(data.get("rgcl_sweep"))
    ens = data.get("ensemble")
    if ens:
        members = "; ".join(data["runs"][m]["label"] for m in ens["members"])
        out += ["#### dev-selected ensemble", "", markdown_table(header, [_row(
            f"ensemble of the {len(ens['members'])} best on {DEV}: {members}", "mean",
            ens["splits"])]), ""]
        sizes = ens.get("dev_auroc_by_size", {})
        if sizes:
            out += [f"Ensemble size chosen on {DEV} (AUROC of the mean of the k best): "
                    + ", ".join(f"k {k}: {v:.3f}" for k, v in sizes.items()) + ".", ""]
    out += targets(data)
    out.append("Commands: " + "; ".join(f"`{c}`" for c in data.get("commands", [])))
    return "\n".join(out)


#: (what a pair of runs isolates, the run with it, the run without it)
CONTRASTS = (
    ("TRM that compares against mlp, same fields", "trm-retrieval-tc", "mlp-tc"),
    ("recursion against one pass", "trm-retrieval-tc", "trm-retrieval-1pass-tc"),
    ("8 neighbours against none", "trm-retrieval-tc", "trm-retrieval-k0-tc"),
    ("neighbours' labels against none", "trm-retrieval-tc", "trm-retrieval-nolabels-tc"),
    ("16 neighbours against 8", "trm-retrieval-k16-tc", "trm-retrieval-tc"),
)


def contrast_table(runs: dict[str, Any]) -> list[str]:
    """What each TRM ablation isolates: the difference of seed-mean AUROCs, per split."""
    rows = []
    for what, with_, without in CONTRASTS:
        if with_ in runs and without in runs:
            a, b = runs[with_], runs[without]
            rows.append([what, f"{a['seeds']} vs {b['seeds']}"] + [
                f"{a['splits'][s]['auroc']['mean'] - b['splits'][s]['auroc']['mean']:+.3f}"
                for s in (DEV, TEST, UNSEEN)])
    if not rows:
        return []
    return ["#### what each TRM contrast isolates", "",
            "Difference of the seed-mean AUROCs, the first run minus the second; a difference "
            "within about two seed standard deviations of either row is noise.", "",
            markdown_table(["contrast", "seeds", f"Δ {DEV}", f"Δ {TEST}", f"Δ {UNSEEN}"], rows),
            ""]


def vote_table(runs: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    """Memory heads before (vote chosen on dev_seen, then ranked on it) and after (vote chosen
    leave-one-out on the training memes): seed-mean AUROC ± std per split."""
    if not before:
        return []
    rows = []
    for key, old in before["runs"].items():
        new = runs.get(key)
        if new is None or new["splits"] == old["splits"]:
            continue  # not rerun since
        for when, r in (("before", old), ("after", new)):
            rows.append([r["label"], when, str(r["seeds"])]
                        + [fmt(r["splits"][s]["auroc"]) for s in (DEV, TEST, UNSEEN)])
    if not rows:
        return []
    return ["#### memory votes: chosen on dev (before) and leave-one-out on train (after)", "",
            f"Before: the rows stored at {before['commit'][:7]}, whose k, temperature and weights "
            f"were chosen on {DEV}, which then also chose the epoch and ranked. After: chosen on "
            f"the training memes, each scored by its neighbours among the others; {DEV} keeps the "
            "epoch, the threshold and the ranking.", "",
            markdown_table(["configuration", "vote", "seeds", f"{DEV} AUROC", f"{TEST} AUROC",
                            f"{UNSEEN} AUROC"], rows), ""]


def sweep_table(sweep: dict[str, Any] | None) -> list[str]:
    """The rgcl settings tried on dev_seen, and the one the ``{swept}`` rows use."""
    if not sweep:
        return []
    rows = [[name, ", ".join(f"{k} {v}" for k, v in p["head_cfg"].items()),
             fmt(p["dev_auroc"]), "chosen" if name == sweep["chosen"] else ""]
            for name, p in sweep["points"].items()]
    fields = " + ".join(sweep["fields"])
    return [f"#### rgcl settings chosen on {DEV}", "",
            f"{fields}, {sweep['seeds']} seeds, {sweep['train']['epochs']} epochs; only "
            f"{DEV} is scored.", "",
            markdown_table(["point", "settings", f"{DEV} AUROC", ""], rows), ""]


def targets(data: dict[str, Any]) -> list[str]:
    """The issue's targets beside what was measured (the best on dev_seen where one is chosen)."""
    runs, ens = data["runs"], data.get("ensemble")

    def best(keys: list[str]) -> tuple[str, dict[str, Any]] | None:
        have = [k for k in keys if k in runs]
        if not have:
            return None
        k = max(have, key=lambda k: runs[k]["splits"][DEV]["auroc"]["mean"])
        return runs[k]["label"], runs[k]["splits"]

    singles = best(list(runs))
    tuned = best([k for k in runs if runs[k]["group"] == "tuned" and "frozen" not in k])
    rgcl = best(["rgcl-tc", "rgcl-cmean", "rgcl-crandom"])
    rows = []
    for what, target, split, found in (
            ("best dev-selected configuration (ensemble)", 0.76, TEST,
             ("ensemble", ens["splits"]) if ens else None),
            ("best dev-selected configuration (ensemble)", 0.74, UNSEEN,
             ("ensemble", ens["splits"]) if ens else None),
            ("best single configuration on dev", 0.76, TEST, singles),
            ("single head on the tuned MiniLM", 0.74, TEST, tuned),
            ("rgcl on the frozen MiniLM fields", 0.72, TEST, rgcl)):
        if found is None:
            rows.append([what, f"{split} >= {target}", "not measured", "-"])
            continue
        got = found[1][split]["auroc"]["mean"]
        rows.append([what, f"{split} >= {target}", f"{got:.3f} ({found[0]})",
                     "met" if got >= target else "missed"])
    return ["#### targets", "", markdown_table(["target", "AUROC", "measured", ""], rows), ""]


def render(data: Path = DATA) -> None:
    replace_block(DOC, "learned_space", markdown(load(data)))
