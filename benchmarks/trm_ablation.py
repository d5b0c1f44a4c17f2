"""TRM ablation on Hateful Memes (text + caption), selected on dev only.

One factor at a time from the ``trm`` defaults (n=3, T=3, N_sup=8, hidden 128, pooled input,
no ACT): the recursion depth n, the deep-recursion count T, the supervision steps N_sup, the
width, ACT halting during training (``trm-act``), token input through resampled latents
(``trm-latent``), and the same network applied once with no recursion at all (n=1, T=1,
N_sup=1). ``mlp`` is the reference. Every variant trains with the same seeds and epoch budget;
the table's ranking is by dev AUROC, and test_seen / dev_unseen are shown for the record.

``--confirm-seeds N`` then trains the TRM variant that ranked first on dev, and ``mlp``, for N
seeds under the head benchmark's budget (early stopping on dev_seen), and reports both with their
seed ensembles; ``--confirm-only`` does that from the ablation already in the JSON.

    python -m benchmarks.trm_ablation --data-root ../shared/data --seeds 2 --epochs 6
    python -m benchmarks.trm_ablation --data-root ../shared/data --confirm-only --confirm-seeds 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

from benchmarks.render.trm_ablation import BASE, DATA, ONCE, REFERENCE, best_variant, render
from memetrm.config import RunConfig
from memetrm.progress import console
from memetrm.provenance import provenance
from memetrm.training.runner import run
from memetrm.utils import atomic_write_text

SPLITS = ("dev_seen", "test_seen", "dev_unseen")
#: name -> (head, head options); everything else is the head's preset
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    BASE: ("trm", {}),
    "n=1": ("trm", {"n": 1}),
    "n=6": ("trm", {"n": 6}),
    "T=1": ("trm", {"T": 1}),
    "N_sup=1": ("trm", {"n_sup": 1}),
    "N_sup=4": ("trm", {"n_sup": 4}),
    "hidden 64": ("trm", {"hidden": 64}),
    "hidden 256": ("trm", {"hidden": 256}),
    "ACT on (trm-act: halting in training and inference)": ("trm-act", {}),
    "token input (trm-latent: 8 resampled latents)": ("trm-latent", {}),
    ONCE: ("trm", {"n": 1, "T": 1, "n_sup": 1}),
    REFERENCE: ("mlp", {}),
}


def hm_config(head: str, head_cfg: dict[str, Any], seeds: int, data_root: str | None,
              train: dict[str, Any]) -> RunConfig:
    return RunConfig(dataset="hateful_memes", head=head, head_cfg=head_cfg,
                     fields=["text", "caption"], eval_splits=["dev_unseen"], seeds=seeds,
                     data_root=data_root, train={"batch_size": 256, **train})


def confirm(rows: list[dict[str, Any]], seeds: int, epochs: int, data_root: str | None
            ) -> dict[str, Any]:
    """The dev-best variant and ``mlp`` at ``seeds`` seeds, each with its seed ensemble."""
    best = best_variant(rows)
    out = []
    for name, head, head_cfg in [(best["name"], best["head"], best["head_cfg"]),
                                 (REFERENCE, "mlp", {})]:
        console.rule(f"confirm: {name}")
        r = run(hm_config(head, head_cfg, seeds, data_root, {"epochs": epochs}))
        out.append({"name": name, "head": head, "head_cfg": head_cfg,
                    "splits": {s: r["splits"][s]["auroc"] for s in SPLITS},
                    "ensemble": {s: r["ensemble"]["splits"][s]["auroc"] for s in SPLITS},
                    "seconds_per_epoch": r["train_seconds_per_epoch"]})
    return {"seeds": seeds, "epochs": epochs, "rows": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=None, help="comma-separated names (default: all)")
    ap.add_argument("--confirm-seeds", type=int, default=0,
                    help="then train the dev-best variant and mlp for this many seeds")
    ap.add_argument("--confirm-epochs", type=int, default=10)
    ap.add_argument("--confirm-only", action="store_true",
                    help="skip the ablation; confirm from the one in the JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    command = "python -m benchmarks.trm_ablation " + " ".join(sys.argv[1:])
    if args.confirm_only:
        data = json.loads(DATA.read_text())
    else:
        names = args.variants.split(",") if args.variants else list(VARIANTS)
        rows = []
        for name in names:
            head, head_cfg = VARIANTS[name]
            console.rule(name)
            t0 = time.perf_counter()
            r = run(hm_config(head, head_cfg, args.seeds, args.data_root,
                              {"epochs": args.epochs, "patience": 0}))
            epochs = args.epochs * r["seeds"]  # patience 0: every epoch runs
            rows.append({"name": name, "head": head, "head_cfg": head_cfg,
                         **{s: r["splits"][s]["auroc"] for s in SPLITS},
                         "seconds_per_epoch": r["train_seconds"] / epochs,
                         "wall_seconds": time.perf_counter() - t0})
        data = {"command": command, "seeds": args.seeds, "epochs": args.epochs,
                "provenance": provenance(), "rows": rows}
    if args.confirm_seeds:
        data["confirm"] = {**confirm(data["rows"], args.confirm_seeds, args.confirm_epochs,
                                     args.data_root), "command": command,
                           "provenance": provenance()}
    atomic_write_text(DATA, json.dumps(data, indent=2))
    render()


if __name__ == "__main__":
    main()
