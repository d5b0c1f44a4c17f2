"""Threshold policies a moderator could get by default, on Hateful Memes and MultiOFF.

Each head is trained over N seeds on cached features (``--threads 1``); for every seed each
policy picks its threshold on the dev split only, and the test split is scored at it. Test
accuracy is shown beside the majority-class rate of test (what always answering the larger
class scores), with balanced accuracy, the false-positive rate and the share of memes flagged.
Nothing is selected on test. The numbers go to ``docs/data/thresholds.json``; the table in
docs/thresholds.md is rendered from it (``python -m benchmarks.render_docs``).

    python -m benchmarks.thresholds --data-root ../shared/data --seeds 5
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any

import numpy as np
import torch

from benchmarks.heads import DATASETS
from benchmarks.render import load
from benchmarks.render.thresholds import DATA, render
from memetrm.config import RunConfig
from memetrm.evaluation.metrics import choose_threshold, compute_metrics
from memetrm.progress import console
from memetrm.training.runner import run_models
from memetrm.utils import atomic_write_text

#: the candidate policies: a ``--threshold-metric`` chosen on dev, or a fixed threshold
POLICIES = ("f1", "accuracy", "balanced-accuracy", "fpr<=0.1", "fixed 0.5")
#: test metrics reported per policy (mean and std over seeds)
REPORTED = ("accuracy", "balanced_accuracy", "fpr", "recall", "flagged")


def policy_threshold(policy: str, y_dev: np.ndarray, p_dev: np.ndarray) -> float:
    return 0.5 if policy == "fixed 0.5" else choose_threshold(y_dev, p_dev, policy)


def score_policies(y_dev: np.ndarray, dev: list[np.ndarray], y_test: np.ndarray,
                   test: list[np.ndarray]) -> dict[str, Any]:
    """Per policy: each seed's dev-chosen threshold and its test metrics, mean and std."""
    out = {}
    for policy in POLICIES:
        per_seed = []
        for p_dev, p_test in zip(dev, test, strict=True):
            thr = policy_threshold(policy, y_dev, p_dev)
            m = compute_metrics(y_test, p_test, thr)
            per_seed.append({"threshold": thr, **m, "flagged": float((p_test >= thr).mean())})
        out[policy] = {k: {"mean": float(np.mean([s[k] for s in per_seed])),
                           "std": float(np.std([s[k] for s in per_seed], ddof=1))
                           if len(per_seed) > 1 else None}
                       for k in ("threshold", *REPORTED)}
    return out


def run_one(ds: str, head: str, seeds: int, data_root: str | None) -> dict[str, Any]:
    base = DATASETS[ds]
    cfg = RunConfig(dataset=ds, head=head, seeds=seeds, data_root=data_root, bootstrap=0,
                    train={**base.get("train", {}), "threads": 1},
                    **{k: v for k, v in base.items() if k not in ("train", "eval_splits")})
    t0 = time.perf_counter()
    out = run_models(cfg)
    roles = out.results["roles"]
    y_dev, y_test = (out.feats[roles[r]].labels.numpy() for r in ("dev", "test"))
    probs = {r: [s.outputs[roles[r]]["prob"].numpy() for s in out.runs] for r in ("dev", "test")}
    return {
        "dataset": ds, "head": head, "seeds": len(out.runs), "fields": out.results["fields"],
        "dev": roles["dev"], "test": roles["test"], "n_test": int(len(y_test)),
        "test_majority_rate": float(max(y_test.mean(), 1 - y_test.mean())),
        "test_auroc": out.results["splits"][roles["test"]]["auroc"]["mean"],
        "policies": score_policies(y_dev, probs["dev"], y_test, probs["test"]),
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--heads", default="mlp", help="comma-separated")
    ap.add_argument("--datasets", default="hateful_memes,multioff")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for ds in args.datasets.split(","):
        for head in args.heads.split(","):
            console.rule(f"{ds}: {head}")
            rows.append(run_one(ds, head, args.seeds, args.data_root))
    command = "python -m benchmarks.thresholds " + " ".join(argv or sys.argv[1:])
    old = load(DATA) or {}
    # rows of heads this run did not train stay, so heads can be added by later runs
    done = {(r["dataset"], r["head"]) for r in rows}
    kept = [r for r in old.get("rows", []) if (r["dataset"], r["head"]) not in done]
    record = {"commands": [*(c for c in old.get("commands", []) if c != command), command],
              "policies": list(POLICIES), "threads": 1,
              "machine": f"{platform.machine()}, torch {torch.__version__}",
              "rows": sorted([*kept, *rows], key=lambda r: (r["dataset"], r["head"]))}
    atomic_write_text(DATA, json.dumps(record, indent=2))
    console.print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
