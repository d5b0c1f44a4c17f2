"""Head benchmark: every head of ``--heads all`` on MultiOFF and Hateful Memes (text + caption).

Selection (epoch, threshold, ACT halting threshold, logistic-regression C) uses the dev split
only. Each run's summary (metrics only: no ids, labels or predictions) is kept in
``docs/data/heads/<dataset>/<head>.json``; ``docs/results.md`` and the README's results table
are rendered from those files alone, so ``make docs`` rebuilds them without training.

    python -m benchmarks.heads --data-root ../shared/data --seeds 5   # train, plot, render
    python -m benchmarks.heads --render-only                          # docs from docs/data

Every run (``--render-only`` too) first exports the head registry to
``docs/data/heads/_registry.json``, where the README's head counts come from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.render.heads import ASSETS, DATA, REGISTRY, render
from memetrm.config import RunConfig
from memetrm.evaluation.metrics import auroc
from memetrm.evaluation.report import write_plots
from memetrm.heads import list_heads
from memetrm.progress import console
from memetrm.training.runner import load_run_features, run
from memetrm.utils import atomic_write_text

DATASETS = {
    "multioff": {"on_missing_image": "skip"},
    "hateful_memes": {"fields": ["text", "caption"], "eval_splits": ["dev_unseen"],
                      "train": {"batch_size": 256}},
}
#: CPU budget. TRM (hidden 128, n=3, T=3, N_sup=8) costs ~1 TFLOP per Hateful Memes epoch
#: (~30-40 s on 2 cores) and cross-attention runs over 64 tokens per meme, so on Hateful
#: Memes they run 10 epochs x 3 seeds instead of 30 x 5.
_HM_BUDGET = {"seeds": 3, "train": {"epochs": 10}}
BUDGET = {("hateful_memes", h): _HM_BUDGET for h in ("trm", "trm-act", "cross-attention")}
#: the token-level fusion heads keep 5 seeds on Hateful Memes, at 10 epochs each
BUDGET.update({("hateful_memes", h): {"train": {"epochs": 10}}
               for h in ("perceiver", "qformer", "gated-xattn")})
#: keys of results.json that list example ids; the committed summaries keep only their count
ID_KEYS = ("train_overlap_ids",)


def run_config(ds: str, head: str, seeds: int, data_root: str | None, out: Path) -> RunConfig:
    base, budget = DATASETS[ds], BUDGET.get((ds, head), {})
    train = {**base.get("train", {}), **budget.get("train", {})}
    extra = {k: v for k, v in base.items() if k != "train"}
    return RunConfig(dataset=ds, head=head, seeds=budget.get("seeds", seeds),
                     data_root=data_root, out_dir=str(out), train=train, **extra)


def logreg_reference(cfg: RunConfig) -> dict[str, Any]:
    """sklearn logistic regression on the same pooled features; C chosen on dev AUROC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    feats, fields, roles = load_run_features(cfg)

    def xy(split: str) -> tuple[np.ndarray, np.ndarray]:
        fs = feats[split]
        return np.concatenate([fs.tensors[f].numpy() for f in fields], 1), fs.labels.numpy()

    (xtr, ytr), (xdev, ydev), (xte, yte) = (xy(roles[r]) for r in ("train", "dev", "test"))
    scaler = StandardScaler().fit(xtr)
    fits = [(c, LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(xtr), ytr))
            for c in (0.001, 0.01, 0.1, 1.0)]
    dev_scores = [auroc(ydev, m.predict_proba(scaler.transform(xdev))[:, 1]) for _, m in fits]
    best = int(np.argmax(dev_scores))
    return {"dataset": cfg.dataset, "C": fits[best][0], "dev_auroc": dev_scores[best],
            "test_auroc": auroc(yte, fits[best][1].predict_proba(scaler.transform(xte))[:, 1])}


def export(run_dir: Path, ds: str) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    summary = {k: len(v) if k in ID_KEYS else v for k, v in results.items()}
    # where this machine cached features says nothing about the result, and names a local path
    summary["config"] = {k: v for k, v in summary["config"].items() if k != "cache_dir"}
    atomic_write_text(DATA / ds / f"{results['head']}.json", json.dumps(summary, indent=2))


def export_registry() -> None:
    """Which heads ``--heads all`` runs and which run only when named, for the README's counts
    (the renderer reads this file: it imports no head, hence no torch)."""
    in_all = list_heads(all_only=True)
    atomic_write_text(REGISTRY, json.dumps({
        "command": "python -m benchmarks.heads --render-only", "all": in_all,
        "by_name": [h for h in list_heads() if h not in in_all]}, indent=2) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--heads", default="all", help="comma-separated, or all")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--runs", default="runs/bench", help="Where per-head results are kept.")
    ap.add_argument("--report-only", action="store_true",
                    help="Skip training; plot and export the runs already in --runs.")
    ap.add_argument("--render-only", action="store_true",
                    help="Only render the docs from docs/data/heads.")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; tiny heads gain nothing from more and lose under load")
    args = ap.parse_args()
    export_registry()
    if args.render_only:
        render()
        return 0
    torch.set_num_threads(args.threads)
    heads = list_heads(all_only=True) if args.heads == "all" else args.heads.split(",")
    unknown = set(heads) - set(list_heads())
    if unknown:
        ap.error(f"unknown heads {sorted(unknown)}")
    for ds in args.datasets.split(","):
        dirs = []
        for head in heads:
            out = Path(args.runs) / ds / head
            if not args.report_only:
                console.rule(f"{ds}: {head}")
                run(run_config(ds, head, args.seeds, args.data_root, out))
            dirs.append(out)
        for d in dirs:
            export(d, ds)
        order = {h: i for i, h in enumerate(list_heads())}
        every_run = sorted((d for d in (Path(args.runs) / ds).iterdir()
                            if (d / "results.json").is_file() and d.name in order),
                           key=lambda d: order[d.name])
        write_plots(every_run, ASSETS)  # plots show every head run so far, not just these
        ref = logreg_reference(run_config(ds, "linear", 1, args.data_root, Path()))
        atomic_write_text(DATA / ds / "_reference.json", json.dumps(ref, indent=2))
    render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
