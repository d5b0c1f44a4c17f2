"""TRM ablation on Hateful Memes (text + caption), selected on dev only.

One factor at a time from the ``trm`` defaults (n=3, T=3, N_sup=8, hidden 128, pooled input,
no ACT): the recursion depth n, the deep-recursion count T, the supervision steps N_sup, the
width, ACT halting during training (``trm-act``), token input through resampled latents
(``trm-latent``), and the same network applied once with no recursion at all (n=1, T=1,
N_sup=1). ``mlp`` is the reference. Every variant trains with the same seeds and epoch budget;
the table's ranking is by dev AUROC, and test_seen / dev_unseen are shown for the record.

    python benchmarks/trm_ablation.py --data-root ../shared/data --seeds 2 --epochs 6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from memetrm.config import RunConfig
from memetrm.evaluation.report import fmt, markdown_table, replace_block
from memetrm.progress import console
from memetrm.provenance import provenance
from memetrm.training.runner import run
from memetrm.utils import atomic_write_text

#: name -> (head, head options); everything else is the head's preset
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "trm (n=3, T=3, N_sup=8, hidden 128)": ("trm", {}),
    "n=1": ("trm", {"n": 1}),
    "n=6": ("trm", {"n": 6}),
    "T=1": ("trm", {"T": 1}),
    "N_sup=1": ("trm", {"n_sup": 1}),
    "N_sup=4": ("trm", {"n_sup": 4}),
    "hidden 64": ("trm", {"hidden": 64}),
    "hidden 256": ("trm", {"hidden": 256}),
    "ACT on (trm-act: halting in training and inference)": ("trm-act", {}),
    "token input (trm-latent: 8 resampled latents)": ("trm-latent", {}),
    "no recursion (n=1, T=1, N_sup=1: the network once)": ("trm", {"n": 1, "T": 1, "n_sup": 1}),
    "reference: mlp": ("mlp", {}),
}
DATA, DOC = Path("docs/data/trm_ablation.json"), Path("docs/trm.md")


def render(data: Path = DATA) -> None:
    """The ablation table in docs/trm.md, from the JSON the last run wrote."""
    if not data.is_file():
        return
    r = json.loads(data.read_text())
    rows_in = sorted(r["rows"], key=lambda row: -row["dev_seen"]["mean"])
    best = next(row["name"] for row in rows_in if not row["name"].startswith("reference"))
    rows = [[row["name"] + (" **(best TRM on dev)**" if row["name"] == best else ""),
             fmt(row["dev_seen"]), fmt(row["test_seen"], ci=True), fmt(row["dev_unseen"]),
             f"{row['seconds_per_epoch']:.1f}"] for row in rows_in]
    header = [f"variant ({r['seeds']} seeds x {r['epochs']} epochs)", "dev_seen AUROC (selects)",
              "test_seen AUROC [95% CI]", "dev_unseen AUROC", "train s/epoch"]
    replace_block(DOC, "trm-ablation", f"`{r['command']}`:\n\n" + markdown_table(header, rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=None, help="comma-separated names (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    rows = []
    for name in names:
        head, head_cfg = VARIANTS[name]
        console.rule(name)
        t0 = time.perf_counter()
        r = run(RunConfig(dataset="hateful_memes", head=head, head_cfg=head_cfg,
                          fields=["text", "caption"], eval_splits=["dev_unseen"],
                          seeds=args.seeds, data_root=args.data_root,
                          train={"epochs": args.epochs, "batch_size": 256, "patience": 0}))
        epochs = args.epochs * r["seeds"]  # patience 0: every epoch runs
        rows.append({"name": name, "head": head, "head_cfg": head_cfg,
                     **{s: r["splits"][s]["auroc"] for s in ("dev_seen", "test_seen", "dev_unseen")},
                     "seconds_per_epoch": r["train_seconds"] / epochs,
                     "wall_seconds": time.perf_counter() - t0})
    atomic_write_text(DATA, json.dumps({
        "command": "python benchmarks/trm_ablation.py " + " ".join(sys.argv[1:]),
        "seeds": args.seeds, "epochs": args.epochs, "provenance": provenance(),
        "rows": rows}, indent=2))
    render()


if __name__ == "__main__":
    main()
