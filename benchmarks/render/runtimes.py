"""The encoder-runtime tables (tower speed, batch scoring, AUROC) in docs/serving.md, from
docs/data/runtimes.json."""

from __future__ import annotations

from pathlib import Path
from statistics import mean, pstdev

from benchmarks.render import load, replace_block
from memetrm.evaluation.tables import markdown_table
from memetrm.utils import plural

DATA, DOC = Path("docs/data/runtimes.json"), Path("docs/serving.md")


def render(data: Path = DATA) -> None:
    """Speed relative to torch and AUROC per runtime, for the runtimes the last run measured
    (in its order; ``memetrm.encoders.runtimes`` is not imported: it needs torch)."""
    r = load(data)
    if not r:
        return
    speed = r["towers"]
    keys = ["texts_per_s", "texts_per_s_b1", "images_per_s", "images_per_s_b1"]
    rows = [[rt, *(f"{speed[rt][k]:.1f} ({speed[rt][k] / speed['torch'][k]:.2f}x)" for k in keys),
             f"{r['batch_scoring'][rt]:.1f}" if rt in r["batch_scoring"] else "-"]
            for rt in speed]
    speed_table = markdown_table(["runtime", "texts/s, batch 32", "texts/s, one at a time",
                                  "images/s, batch 16", "images/s, one at a time",
                                  "batch scoring memes/s"], rows, "lrrrrr")
    qrows = []
    for ds, q in r["quality"].items():
        for rt, v in q["runtimes"].items():
            qrows.append([f"{ds}/{q['split']} (n={q['n']})", rt,
                          f"{mean(v['auroc']):.4f} ± {pstdev(v['auroc']):.4f}",
                          f"{mean(v['delta']):+.4f}", f"{max(map(abs, v['delta'])):.4f}",
                          ", ".join(f"{f} {c:.4f}" for f, c in v["cosine_to_torch"].items())])
    qtable = markdown_table(["test split", "runtime", "AUROC (mean ± std, seeds)",
                             "Δ vs torch", "largest Δ over seeds (abs)", "feature cosine to torch"],
                            qrows, "llrrrl")
    replace_block(DOC, "runtimes", "\n".join([
        f"`{r['command']}` ({r['machine']}, {plural(r['threads'], 'torch/ORT thread')}):", "",
        speed_table, "", f"AUROC of the same MLP heads ({r['seeds']} seeds, trained and selected "
        "on torch features) with test features from each runtime:", "", qtable]))
