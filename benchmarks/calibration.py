"""Calibration before and after: ECE (15 equal-width bins) and AUROC on test, raw and calibrated.

The default ``mlp`` is trained over N seeds on Hateful Memes (``text,caption_mean``) and
MultiOFF, each on the dataset registry's splits. Every calibrator is fitted on each seed's dev
predictions only (epoch and threshold were chosen there too); test is scored once, raw and
through each calibrator. Isotonic regression is refused on a dev split under 1,000 memes, as
``train`` refuses it. The numbers go to ``docs/data/calibration.json``; the table in
docs/calibration.md is rendered from it (``python -m benchmarks.render_docs``).

    python -m benchmarks.calibration --data-root ../shared/data --seeds 5
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

from benchmarks.render.calibration import DATA, render
from memetrm.config import RunConfig
from memetrm.evaluation.calibration import ISOTONIC_MIN, Calibrator, expected_calibration_error
from memetrm.evaluation.metrics import auroc
from memetrm.progress import console
from memetrm.provenance import provenance
from memetrm.training.runner import run_models
from memetrm.utils import atomic_write_text

#: per dataset: the run's settings over ``RunConfig``'s defaults
DATASETS = {
    "hateful_memes": {"fields": ["text", "caption_mean"], "train": {"batch_size": 256}},
    "multioff": {"on_missing_image": "skip"},
}
#: the calibrators compared with the raw scores, fitted on dev
METHODS = ("temperature", "platt", "isotonic")


def _stat(values: list[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None, "values": values}


def score_methods(y_dev: np.ndarray, dev: list[np.ndarray], y_test: np.ndarray,
                  test: list[np.ndarray]) -> dict[str, Any]:
    """Per method (``raw`` first): test ECE, AUROC and mean probability over seeds; a method
    the dev split is too small for is recorded as refused."""
    out: dict[str, Any] = {}
    for method in ("raw", *METHODS):
        if method == "isotonic" and len(y_dev) < ISOTONIC_MIN:
            out[method] = {"refused": f"dev has {len(y_dev)} memes (< {ISOTONIC_MIN:,})"}
            continue
        probs = [p_test if method == "raw" else Calibrator.fit(method, y_dev, p_dev)(p_test)
                 for p_dev, p_test in zip(dev, test, strict=True)]
        out[method] = {"ece": _stat([expected_calibration_error(y_test, p) for p in probs]),
                       "auroc": _stat([auroc(y_test, p) for p in probs]),
                       "mean_prob": _stat([float(np.mean(p)) for p in probs])}
    return out


def run_one(ds: str, seeds: int, data_root: str | None) -> dict[str, Any]:
    base = DATASETS[ds]
    cfg = RunConfig(dataset=ds, head="mlp", seeds=seeds, data_root=data_root, bootstrap=0,
                    train={**base.get("train", {}), "threads": 1},
                    **{k: v for k, v in base.items() if k != "train"})
    t0 = time.perf_counter()
    out = run_models(cfg)
    roles = out.results["roles"]
    y = {r: out.feats[roles[r]].labels.numpy() for r in ("train", "dev", "test")}
    raw = {r: [s.outputs[roles[r]]["prob_raw"].numpy().astype(float) for s in out.runs]
           for r in ("dev", "test")}
    return {
        "dataset": ds, "head": "mlp", "seeds": len(out.runs), "fields": out.results["fields"],
        "dev": roles["dev"], "test": roles["test"], "n_dev": int(len(y["dev"])),
        "n_test": int(len(y["test"])),
        "label_1_rate": {r: float(y[r].mean()) for r in ("train", "dev", "test")},
        "methods": score_methods(y["dev"], raw["dev"], y["test"], raw["test"]),
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--datasets", default="hateful_memes,multioff")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for ds in args.datasets.split(","):
        console.rule(f"{ds}: mlp")
        rows.append(run_one(ds, args.seeds, args.data_root))
    record = {"provenance": provenance(threads=1), "methods": ["raw", *METHODS],
              "machine": f"{platform.machine()}, torch {torch.__version__}", "rows": rows}
    atomic_write_text(DATA, json.dumps(record, indent=2))
    console.print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
