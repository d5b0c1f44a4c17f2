"""The calibration table of docs/calibration.md, from docs/data/calibration.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table

DATA, DOC = Path("docs/data/calibration.json"), Path("docs/calibration.md")
#: what a calibrated default model should reach on test
TARGET_ECE = 0.05


def _ms(stat: dict[str, Any]) -> str:
    return f"{stat['mean']:.3f}" + ("" if stat["std"] is None else f" ± {stat['std']:.3f}")


def markdown(r: dict[str, Any] | None) -> str:
    if not r:
        return "Not run yet: `python -m benchmarks.calibration --data-root ../shared/data`."
    rows = []
    for row in r["rows"]:
        run = (f"{row['dataset']} `{row['head']}` on {'+'.join(row['fields'])}, "
               f"{row['dev']} ({row['n_dev']}) → {row['test']} ({row['n_test']})")
        for method in r["methods"]:
            m = row["methods"][method]
            if "refused" in m:
                rows.append([run, method, f"refused: {m['refused']}", "", ""])
                continue
            rows.append([run, method, _ms(m["ece"]), _ms(m["auroc"]), _ms(m["mean_prob"])])
    rates = "; ".join(f"{row['dataset']}: " + ", ".join(
        f"{split} {row['label_1_rate'][split]:.3f}" for split in ("train", "dev", "test"))
        for row in r["rows"])
    p = r["provenance"]
    default = [row["methods"]["temperature"]["ece"]["mean"] for row in r["rows"]
               if row["dataset"] == "hateful_memes"]
    verdict = ("" if not default else
               f" The default (temperature scaling) on Hateful Memes: test ECE "
               f"{default[0]:.3f}, {'within' if default[0] <= TARGET_ECE else '**above**'} the "
               f"target of {TARGET_ECE}.")
    return "\n".join([
        f"`{p['command']}` ({p['threads']} thread, {r['machine']}, commit "
        f"`{(p['git_commit'] or '?')[:12]}`, {p['utc']}). Each of the "
        f"{r['rows'][0]['seeds']} seeds is calibrated on its own dev predictions; test is "
        f"scored raw and through each calibrator (mean ± std over seeds). Rate of label 1: "
        f"{rates}.{verdict}", "",
        markdown_table(["run (dev → test)", "calibration", "test ECE (15 bins)", "test AUROC",
                        "test mean p"], rows, "llrrr")])


def render(data: Path = DATA) -> str:
    text = markdown(load(data))
    replace_block(DOC, "calibration", text)
    return text
