"""What we tried to make TRM competitive: a small sweep selected on the dev split only.

Each variant is trained over the same seeds; the table shows dev AUROC (the selection
criterion) and, for the record, test AUROC. The variant to use is the one with the best dev
mean -- never the best test number.

    python -m benchmarks.trm_sweep --data-root ../shared/data --dataset multioff --seeds 3
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from benchmarks.render.trm_sweep import DATA, render
from memetrm.config import RunConfig
from memetrm.training.runner import run
from memetrm.utils import atomic_write_text

VARIANTS: dict[str, tuple[dict, dict]] = {
    "trm (seed recipe: lr 1e-4, wd 0.05)": ({}, {}),
    "lr 1e-3": ({}, {"lr": 1e-3}),
    "EMA 0.999": ({}, {"ema": 0.999}),
    "dropout 0.2, wd 0.1": ({"dropout": 0.2}, {"weight_decay": 0.1}),
    "hidden 64, n_sup 4": ({"hidden": 64, "n_sup": 4}, {}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--dataset", default="multioff")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, (head_cfg, train) in VARIANTS.items():
        r = run(RunConfig(dataset=args.dataset, head="trm", head_cfg=head_cfg, train=train,
                          seeds=args.seeds, data_root=args.data_root, on_missing_image="skip",
                          bootstrap=0))
        rows.append({"name": name, "dev": r["splits"][r["roles"]["dev"]]["auroc"],
                     "test": r["splits"][r["roles"]["test"]]["auroc"]})
    atomic_write_text(DATA, json.dumps({
        "command": "python -m benchmarks.trm_sweep " + " ".join(sys.argv[1:]),
        "dataset": args.dataset, "seeds": args.seeds, "rows": rows}, indent=2))
    render()


if __name__ == "__main__":
    main()
