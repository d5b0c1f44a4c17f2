"""What ACT buys in compute: TRM training epochs with and without halting, and early exit.

On cached Hateful Memes features (text + caption), in one process and at one thread count:
seconds per training epoch for ``mlp``, ``trm`` (every row runs every supervision step),
``trm-act`` trained without halting (its Q-head learns, but every row runs every step) and
``trm-act`` (rows halt during training once the Q-head is confident), each next to the MLP; then,
after that short ``trm-act`` training and a halting threshold calibrated on dev_seen, the time of
early-exit inference (halted rows are not computed further) against full depth on the held-out
test_seen, with the mean steps and the AUROC of both.

    python -m benchmarks.trm_speed --data-root ../shared/data [--epochs 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.render.trm_speed import DATA, NO_HALT, render
from memetrm.config import RunConfig
from memetrm.features import FeatureSet
from memetrm.heads import create_head
from memetrm.heads.trm import TRMHead
from memetrm.provenance import combined_hash, provenance
from memetrm.training import TrainConfig, fit
from memetrm.training.engine import tensor_auroc
from memetrm.training.runner import load_run_features, run_train_config
from memetrm.utils import atomic_write_text

#: label -> (head, head options); NO_HALT is the ACT head as it trained before halting took
#: effect in training: every row runs all N_sup steps.
HEADS: dict[str, tuple[str, dict[str, Any]]] = {
    "mlp": ("mlp", {}),
    "trm": ("trm", {}),
    NO_HALT: ("trm-act", {"act_train": False}),
    "trm-act": ("trm-act", {}),
}
#: rows per inference batch, as ``memetrm.training.predict`` uses
BATCH = 512


def train_epoch(label: str, train: FeatureSet, epochs: int, threads: int
                ) -> tuple[dict[str, Any], Any]:
    """Seconds per epoch of the head's preset recipe (no dev scoring, so training alone), the
    share of the full ``rows x n_sup`` supervision work done, the optimizer steps per batch
    (each costs the same however few rows are left), and the trained head."""
    name, options = HEADS[label]
    torch.manual_seed(0)
    head = create_head(name, train.input_dims, **options)
    cfg = dataclasses.replace(run_train_config(RunConfig(dataset="hateful_memes", head=name)),
                              epochs=epochs, patience=0, threads=threads, seed=0)
    rows: list[int] = []  # rows of every supervision step (a TRM embeds x once per step)
    hook = (head.proj.register_forward_hook(lambda m, i, o: rows.append(len(o)))
            if isinstance(head, TRMHead) else None)
    t0 = time.perf_counter()
    result = fit(head, train, None, cfg, device="cpu")
    seconds = (time.perf_counter() - t0) / epochs
    if hook is None:
        return {"head": label, "seconds_per_epoch": seconds, "work_fraction": 1.0,
                "steps_per_batch": 1.0}, result.head
    hook.remove()
    batches = epochs * math.ceil(len(train) / cfg.batch_size)
    return {"head": label, "seconds_per_epoch": seconds,
            "work_fraction": sum(rows) / (len(train) * epochs * head.cfg.n_sup),
            "steps_per_batch": len(rows) / batches}, result.head


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The fastest of ``repeats`` runs (the least disturbed by other load) and its output."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


@torch.no_grad()
def inference(head: TRMHead, dev: FeatureSet, test: FeatureSet, repeats: int) -> dict[str, Any]:
    """Early exit vs full depth on held-out ``test`` after calibrating the halting threshold on
    ``dev``: the AUROCs are not those of the split that chose the threshold."""
    head.eval()
    calibration = head.calibrate(dev.batch(), tensor_auroc)
    batches = list(test.batches(BATCH))

    def early() -> dict[str, torch.Tensor]:
        outs = [head.predict(b) for b in batches]
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

    def full() -> torch.Tensor:
        return torch.cat([head.unroll(b)[0] for b in batches])

    early_s, out = best_time(early, repeats)
    full_s, trace = best_time(full, repeats)
    return {
        "split": test.meta.get("split", "test"), "rows": len(test),
        "threshold": head.halt_threshold_,
        "calibration": calibration, "n_sup": head.cfg.n_sup,
        "mean_steps": out["steps"].float().mean().item(),
        "early_exit_seconds": early_s, "full_depth_seconds": full_s,
        "speedup": full_s / early_s,
        "auroc_early_exit": tensor_auroc(test.labels, out["prob"]),
        "auroc_full_depth": tensor_auroc(test.labels, trace[:, -1]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs per head")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3, help="inference timings, the best kept")
    ap.add_argument("--json", type=Path, default=DATA, help="where the numbers are kept")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    feats, _, roles = load_run_features(RunConfig(
        dataset="hateful_memes", head="trm", fields=["text", "caption"],
        data_root=args.data_root))
    train, dev, test = feats[roles["train"]], feats[roles["dev"]], feats[roles["test"]]
    # warm-up: the first fit imports the LR schedules, which must not count as mlp time
    warm = FeatureSet(train.ids[:64], {k: v[:64] for k, v in train.tensors.items()},
                      train.labels[:64])
    fit(create_head("mlp", train.input_dims), warm, None, TrainConfig(epochs=1))
    load = os.getloadavg()[0]

    rows, trained = [], {}
    for name in HEADS:
        row, trained[name] = train_epoch(name, train, args.epochs, args.threads)
        rows.append(row)
        print(f"{name:32s} {row['seconds_per_epoch']:8.2f} s/epoch  {row['work_fraction']:5.0%} "
              f"of the supervision work, {row['steps_per_batch']:.2f} optimizer steps per batch",
              flush=True)
    for row in rows:
        row["ratio_to_mlp"] = row["seconds_per_epoch"] / rows[0]["seconds_per_epoch"]
        print(f"{row['head']:32s} {row['ratio_to_mlp']:6.1f}x mlp")
    inf = inference(trained["trm-act"], dev, test, args.repeats)
    print(f"trm-act on {inf['split']}: early exit {inf['early_exit_seconds']:.3f} s "
          f"({inf['mean_steps']:.2f} of {inf['n_sup']} steps, AUROC {inf['auroc_early_exit']:.4f})"
          f" vs full depth {inf['full_depth_seconds']:.3f} s (AUROC {inf['auroc_full_depth']:.4f})")
    atomic_write_text(args.json, json.dumps({
        "command": "python -m benchmarks.trm_speed " + " ".join(sys.argv[1:]),
        "provenance": provenance(data_hash=combined_hash(
            {s: feats[s].meta["data_hash"] for s in (roles["train"], roles["dev"])})),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} "
                   "at the start",
        "threads": args.threads, "epochs": args.epochs, "train_rows": len(train),
        "train": rows, "inference": inf}, indent=2))
    print(render(args.json))


if __name__ == "__main__":
    main()
