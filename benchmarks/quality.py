"""Quality benchmark: cross-validated small-data selection, the exact linear probe, seed
ensembles and the best dev-selected ensemble across heads, fields and text towers.

Per dataset, every head in ``HEADS`` runs on every field set in ``FIELD_SETS`` (a field may
name its encoder: ``text@mpnet-effnet``) for ``--seeds`` seeds; the ``--ensemble`` best
configurations on dev (out-of-fold predictions on MultiOFF, whose dev split has 149 memes)
are averaged. Nothing is chosen on test. Summaries (metrics only) go to
``docs/data/quality/<dataset>.json``; the tables in ``docs/results.md`` are rendered from them.

    python -m benchmarks.quality --data-root ../shared/data --seeds 5   # train, render
    python -m benchmarks.quality --render-only                          # docs from docs/data
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

import torch

from benchmarks.render.quality import DATA, render
from memetrm.config import RunConfig
from memetrm.evaluation.tables import run_name
from memetrm.progress import console
from memetrm.provenance import provenance
from memetrm.training.ensemble import select_ensemble
from memetrm.training.runner import run_models
from memetrm.utils import atomic_write_text

MPNET = ["text@mpnet-effnet"]
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "multioff": {
        "base": {"on_missing_image": "skip", "cv": 5, "train": {"threshold_metric": "accuracy"}},
        "heads": ["linear-probe", "mlp", "retrieval", "rgcl"],
        "field_sets": [["text"], ["text", *MPNET], ["text", "image"]],
        # the one-line scikit-learn baseline: C=1, text only, no selection at all
        "references": [{"head": "linear-probe", "fields": ["text"], "head_cfg": {"C": 1.0},
                        "seeds": 1, "cv": 0, "label": "logistic regression, C=1, text only"}],
    },
    "hateful_memes": {
        "base": {"eval_splits": ["dev_unseen"], "train": {"batch_size": 256}},
        "heads": ["mlp", "hyperbolic", "retrieval"],
        "field_sets": [["text", "caption"], ["text@mpnet-effnet", "caption@mpnet-effnet"],
                       ["text", "caption", "text@mpnet-effnet", "caption@mpnet-effnet"]],
        "references": [{"head": "linear-probe", "fields": ["text", "caption"], "seeds": 1,
                        "label": "linear-probe (C on dev), text + caption"}],
    },
}


def config(ds: str, data_root: str | None, seeds: int, head: str, fields: list[str],
           **over: Any) -> RunConfig:
    base = EXPERIMENTS[ds]["base"]
    train = {**base.get("train", {}), **over.pop("train", {})}
    kw = {**{k: v for k, v in base.items() if k != "train"}, **over}
    return RunConfig(dataset=ds, head=head, fields=fields, seeds=seeds, data_root=data_root,
                     train=train, **kw)


def summary(results: dict[str, Any], label: str | None = None) -> dict[str, Any]:
    """What the tables need: no ids, labels or predictions."""
    keep = ("dataset", "head", "fields", "seeds", "cv", "roles", "splits", "ensemble",
            "thresholds", "calibration", "train_seconds_per_seed", "config")
    return {**{k: results.get(k) for k in keep}, "name": label or run_name(results)}


def majority_rates(out) -> dict[str, float]:
    return {s: float(max(fs.labels.mean(), 1 - fs.labels.mean())) for s, fs in out.feats.items()}


def run_dataset(ds: str, data_root: str | None, seeds: int, k: int) -> dict[str, Any]:
    exp = EXPERIMENTS[ds]
    outs = []
    for fields in exp["field_sets"]:
        for head in exp["heads"]:
            console.rule(f"{ds}: {head} on {'+'.join(fields)}")
            outs.append(run_models(config(ds, data_root, seeds, head, fields)))
    refs = []
    for ref in exp["references"]:
        ref = dict(ref)
        label = ref.pop("label")
        console.rule(f"{ds}: reference {label}")
        n = ref.pop("seeds", seeds)
        refs.append(summary(run_models(config(ds, data_root, n, **ref)).results, label))
    metric = outs[0].results["config"]["train"]["threshold_metric"]
    sel = select_ensemble(outs, k, metric, outs[0].cfg.bootstrap)
    return {
        "provenance": provenance(seeds=list(range(seeds))),
        "command": f"python -m benchmarks.quality --datasets {ds} --seeds {seeds} --ensemble {k}",
        "majority_rate": majority_rates(outs[0]),
        "runs": [summary(o.results) for o in outs], "references": refs,
        "ensemble": {key: v for key, v in sel.items() if not key.startswith("_")},
        "configs": [dataclasses.asdict(o.cfg) for o in outs],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--ensemble", type=int, default=3)
    ap.add_argument("--datasets", default=",".join(EXPERIMENTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        torch.set_num_threads(args.threads)
        for ds in args.datasets.split(","):
            data = run_dataset(ds, args.data_root, args.seeds, args.ensemble)
            atomic_write_text(DATA / f"{ds}.json", json.dumps(data, indent=2))
    render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
