"""Learning the space on Hateful Memes: caption views, contrastive heads, a tuned text tower.

Every configuration in ``CONFIGS`` trains ``--seeds`` seeds with the epoch (and each head's
calibrated settings) selected on dev_seen, and reports test_seen and dev_unseen. Runs are
incremental (``--only`` names configurations; the others keep their stored numbers), because
on a 2-core CPU they are measured one by one. The dev-selected ensemble averages the seed
ensembles of the configurations with the best dev_seen AUROC among those measured (how many,
up to ``--ensemble``, also by dev_seen AUROC); nothing is chosen on test. Summaries go to
``docs/data/learned_space.json`` and the tables of ``docs/learned_space.md`` are rendered
from it.

    python -m benchmarks.learned_space --data-root ../shared/data --only mlp-tc,rgcl-tc
    python -m benchmarks.learned_space --tuned ~/tuned/minilm --only tuned-mlp
    python -m benchmarks.learned_space                  # the ensemble from stored predictions
    python -m benchmarks.learned_space --render-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.render.learned_space import DATA, DEV, TEST, UNSEEN, render
from memetrm.config import RunConfig
from memetrm.evaluation.metrics import auroc
from memetrm.progress import console
from memetrm.training.runner import dev_threshold, ensemble_metrics, run_models
from memetrm.utils import atomic_write_text, default_cache_dir

TC = ["text", "caption"]
CMEAN = ["text", "caption_mean"]
#: rgcl settings tried on dev_seen only (text + caption_mean, ``SWEEP_SEEDS`` seeds, 20
#: epochs); rows whose ``head_cfg`` is ``{swept}`` use the one with the best dev_seen AUROC
RGCL_GRID: dict[str, dict[str, Any]] = {
    "lam0": {"lam": 0.0},
    "lam0.3": {"lam": 0.3},
    "lam1": {"lam": 1.0},
    "lam3": {"lam": 3.0},
    "lam1-tau0.05": {"lam": 1.0, "tau": 0.05},
    "lam1-tau0.3": {"lam": 1.0, "tau": 0.3},
    "lam1-d64": {"lam": 1.0, "embed_dim": 64},
}
SWEEP_SEEDS, SWEEP_TRAIN = 2, {"epochs": 20}
#: the TRM rows' budget on this CPU (the preset trains 30 epochs at lr 1e-4): fewer epochs,
#: smaller batches and a higher LR, the same for every TRM row
TRM_TRAIN = {"epochs": 8, "batch_size": 64, "lr": 3e-4}
#: key -> (group, label, run settings); ``{tuned}`` is replaced by ``tuned:<--tuned>``
#: rows of the heads whose memory votes (their vote calibration changed: see ``--baseline``)
VOTING = ("retrieval-", "rgcl-")
CONFIGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "mlp-tc": ("heads", "mlp, text + caption", {"head": "mlp", "fields": TC}),
    "retrieval-tc": ("heads", "retrieval, text + caption", {"head": "retrieval", "fields": TC}),
    "rgcl-tc": ("heads", "rgcl, text + caption", {"head": "rgcl", "fields": TC}),
    "mlp-cmean": ("captions", "mlp, text + caption_mean (mean of 5 captions)",
                  {"head": "mlp", "fields": ["text", "caption_mean"]}),
    "mlp-crandom": ("captions", "mlp, text + caption_random (a random caption per epoch)",
                    {"head": "mlp", "fields": ["text", "caption_random"]}),
    "rgcl-crandom": ("captions", "rgcl, text + caption_random",
                     {"head": "rgcl", "fields": ["text", "caption_random"]}),
    "rgcl-cmean": ("captions", "rgcl, text + caption_mean (λ, τ, width chosen on dev_seen)",
                   {"head": "rgcl", "fields": CMEAN, "head_cfg": "{swept}"}),
    "retrieval-cmean": ("captions", "retrieval, text + caption_mean",
                        {"head": "retrieval", "fields": CMEAN}),
    "tuned-mlp": ("tuned", "mlp, tuned MiniLM, text+caption as one sequence",
                  {"head": "mlp", "fields": ["text+caption"], "encoder": "{tuned}"}),
    "tuned-mlp-3": ("tuned", "mlp, tuned MiniLM, text+caption, text, caption",
                    {"head": "mlp", "fields": ["text+caption", "text", "caption"],
                     "encoder": "{tuned}"}),
    "tuned-rgcl": ("tuned", "rgcl, tuned MiniLM, text+caption as one sequence",
                   {"head": "rgcl", "fields": ["text+caption"], "encoder": "{tuned}"}),
    "tuned-half-mlp-heldout": ("tuned", "mlp, MiniLM tuned on half of train, fitted on the "
                               "other half (memes the tower never saw)",
                               {"head": "mlp", "fields": ["text+caption"], "encoder": "{tuned}",
                                "train_ids": "{held_out}"}),
    "tuned-half-rgcl-heldout": ("tuned", "rgcl, MiniLM tuned on half of train, fitted on the "
                                "other half",
                                {"head": "rgcl", "fields": ["text+caption"], "encoder": "{tuned}",
                                 "train_ids": "{held_out}", "head_cfg": "{swept}"}),
    "tuned-half-mlp-all": ("tuned", "mlp, MiniLM tuned on half of train, fitted on all of train",
                           {"head": "mlp", "fields": ["text+caption"], "encoder": "{tuned}"}),
    "frozen-mlp-joined-half": ("tuned", "mlp, frozen MiniLM, text+caption as one sequence, "
                               "fitted on the same held-out half",
                               {"head": "mlp", "fields": ["text+caption"],
                                "train_ids": "{held_out}"}),
    "frozen-mlp-joined": ("tuned", "mlp, frozen MiniLM, text+caption as one sequence",
                          {"head": "mlp", "fields": ["text+caption"]}),
    "trm-retrieval-tc": ("trm", "trm-retrieval (k 8, labels, recursion), text + caption",
                         {"head": "trm-retrieval", "fields": TC, "train": TRM_TRAIN}),
    "trm-retrieval-1pass-tc": ("trm", "trm-retrieval, one pass (n = T = n_sup = 1)",
                               {"head": "trm-retrieval-1pass", "fields": TC, "train": TRM_TRAIN}),
    "trm-retrieval-nolabels-tc": ("trm", "trm-retrieval, neighbours without labels",
                                  {"head": "trm-retrieval", "fields": TC, "train": TRM_TRAIN,
                                   "head_cfg": {"labels": False}}),
    "trm-retrieval-k0-tc": ("trm", "trm-retrieval, k 0 (the meme alone)",
                            {"head": "trm-retrieval", "fields": TC, "train": TRM_TRAIN,
                             "head_cfg": {"k": 0}}),
    "trm-retrieval-k16-tc": ("trm", "trm-retrieval, k 16",
                             {"head": "trm-retrieval", "fields": TC, "train": TRM_TRAIN,
                              "head_cfg": {"k": 16}}),
}


def run_config(key: str, data_root: str | None, seeds: int, tuned: str | None,
               swept: dict[str, Any] | None = None) -> RunConfig:
    settings = dict(CONFIGS[key][2])
    if settings.get("encoder") == "{tuned}":
        if not tuned:
            raise SystemExit(f"{key} needs --tuned PATH (a folder from memetrm tune)")
        settings["encoder"] = f"tuned:{tuned}"
    if settings.get("train_ids") == "{held_out}":
        if not tuned:
            raise SystemExit(f"{key} needs --tuned PATH (its tuning.json lists the held-out ids)")
        settings["train_ids"] = str(Path(tuned) / "tuning.json")
    if settings.get("head_cfg") == "{swept}":
        if swept is None:
            raise SystemExit(f"{key} uses the rgcl sweep's choice: run --sweep first")
        settings["head_cfg"] = swept
    train = {"batch_size": 256, **settings.pop("train", {})}
    return RunConfig(dataset="hateful_memes", seeds=seeds, data_root=data_root,
                     eval_splits=[UNSEEN], train=train, out_dir=str(prediction_dir() / key),
                     **settings)


def sweep(data_root: str | None) -> dict[str, Any]:
    """Each ``RGCL_GRID`` point's dev_seen AUROC (its other splits are not kept), and the best."""
    points = {}
    for name, head_cfg in RGCL_GRID.items():
        console.rule(f"rgcl sweep: {name} {head_cfg}")
        cfg = RunConfig(dataset="hateful_memes", head="rgcl", fields=CMEAN, head_cfg=head_cfg,
                        seeds=SWEEP_SEEDS, data_root=data_root,
                        train={"batch_size": 256, **SWEEP_TRAIN},
                        out_dir=str(prediction_dir() / "rgcl-sweep" / name))
        auroc = run_models(cfg).results["splits"][DEV]["auroc"]
        points[name] = {"head_cfg": head_cfg, "dev_auroc": auroc}
    best = max(points, key=lambda n: points[n]["dev_auroc"]["mean"])
    return {"fields": CMEAN, "seeds": SWEEP_SEEDS, "train": SWEEP_TRAIN, "points": points,
            "chosen": best}


def prediction_dir() -> Path:
    """Per-seed predictions stay in the cache (they hold ids), not in docs/data."""
    return default_cache_dir() / "learned_space"


def summary(results: dict[str, Any]) -> dict[str, Any]:
    keep = ("head", "fields", "encoder", "seeds", "roles", "splits", "ensemble", "calibration",
            "train_seconds_per_seed")
    return {k: results.get(k) for k in keep}


def mean_probs(key: str) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    preds = json.loads((prediction_dir() / key / "predictions.json").read_text())
    return {s: (p["ids"], np.asarray(p["labels"]), np.mean(p["probs"], axis=0))
            for s, p in preds.items()}


def dev_ensemble(runs: dict[str, Any], most: int, stored: dict[str, Any] | None,
                 n_boot: int = 1000) -> dict[str, Any] | None:
    """The best dev_seen seed ensembles, averaged: the k measured configurations with the best
    dev_seen AUROC, k in 2..``most`` also chosen by the dev_seen AUROC of their mean.

    The candidates are ranked over every stored run; when any of them has no cached per-seed
    predictions (a fresh machine), the ``stored`` ensemble is kept rather than one built from
    whichever runs happen to be cached."""
    ranked = sorted(runs, key=lambda c: -runs[c]["ensemble"]["splits"][DEV]["auroc"]["mean"])[:most]
    missing = [c for c in ranked if not (prediction_dir() / c / "predictions.json").is_file()]
    if missing:
        console.print(f"ensemble kept as stored: no cached predictions for {', '.join(missing)} "
                      f"(rerun them with --only)")
        return stored
    if len(ranked) < 2:
        return None
    per = {c: mean_probs(c) for c in ranked}
    for s in (DEV, TEST, UNSEEN):
        ids = per[ranked[0]][s][0]
        if any(p[s][0] != ids for p in per.values()):
            raise SystemExit(f"{s}: the measured configurations scored different memes")

    def mean(chosen: list[str], s: str) -> tuple[np.ndarray, np.ndarray]:
        return per[chosen[0]][s][1], np.mean([per[c][s][2] for c in chosen], axis=0)

    dev_by_size = {k: auroc(*mean(ranked[:k], DEV)) for k in range(2, len(ranked) + 1)}
    chosen = ranked[:max(dev_by_size, key=lambda k: (dev_by_size[k], -k))]
    splits = {s: mean(chosen, s) for s in (DEV, TEST, UNSEEN)}
    thr = dev_threshold(*splits[DEV], "f1", f"{DEV} (ensemble)")
    return {"members": chosen, "threshold": thr, "dev_auroc_by_size": dev_by_size,
            "splits": {s: ensemble_metrics(y, p, thr, n_boot) for s, (y, p) in splits.items()}}


def baseline(rev: str) -> dict[str, Any]:
    """The memory-head rows as stored at ``rev`` (their votes were then chosen on dev_seen)."""
    stored = json.loads(subprocess.run(["git", "show", f"{rev}:{DATA}"], capture_output=True,
                                       text=True, check=True).stdout)
    commit = subprocess.run(["git", "rev-parse", rev], capture_output=True, text=True,
                            check=True).stdout.strip()
    return {"commit": commit, "runs": {
        k: {"seeds": r["seeds"], "label": r["label"], "splits": r["splits"]}
        for k, r in stored["runs"].items() if k.startswith(VOTING)}}


def read() -> dict[str, Any]:
    return json.loads(DATA.read_text()) if DATA.is_file() else {"runs": {}, "commands": []}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--only", default="", help=f"comma-separated keys of {list(CONFIGS)}")
    ap.add_argument("--tuned", default=None, help="folder written by memetrm tune")
    ap.add_argument("--ensemble", type=int, default=5,
                    help="largest dev-selected ensemble (its size is chosen on dev_seen)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sweep", action="store_true",
                    help="first choose rgcl's settings on dev_seen over RGCL_GRID")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--baseline", metavar="REV", default=None,
                    help="keep the memory-head rows (retrieval, rgcl) stored at git revision REV "
                         "as the 'before' of the vote-calibration table, and stop")
    args = ap.parse_args()
    if args.baseline:
        data = read()
        data["vote_before"] = baseline(args.baseline)
        data["commands"] = [c for c in data["commands"] if "--baseline" not in c] + [
            f"python -m benchmarks.learned_space --baseline {args.baseline}"]
        atomic_write_text(DATA, json.dumps(data, indent=1))
        render()
        return 0
    if not args.render_only:
        torch.set_num_threads(args.threads)
        if args.sweep:
            chosen = sweep(args.data_root)
            data = read()
            data["rgcl_sweep"] = chosen
            data["commands"] = [c for c in data["commands"] if "--sweep" not in c] + [
                "python -m benchmarks.learned_space --sweep"]
            atomic_write_text(DATA, json.dumps(data, indent=1))
        for key in filter(None, args.only.split(",")):
            console.rule(f"{key}: {CONFIGS[key][1]}")
            swept = read().get("rgcl_sweep")
            out = run_models(run_config(key, args.data_root, args.seeds, args.tuned,
                                        swept and swept["points"][swept["chosen"]]["head_cfg"]))
            # read afresh: other configurations may have been measured meanwhile
            data = read()
            group, label, _ = CONFIGS[key]
            data["runs"][key] = {**summary(out.results), "group": group, "label": label,
                                 "provenance": out.results["provenance"]}
            command = " ".join(["python -m benchmarks.learned_space", "--seeds", str(args.seeds),
                                "--only", key] + (["--tuned", args.tuned] if args.tuned else []))
            data["commands"] = [c for c in data["commands"] if f"--only {key}" not in c] + [command]
            atomic_write_text(DATA, json.dumps(data, indent=1))
        data = read()
        data["ensemble"] = dev_ensemble(data["runs"], args.ensemble, data.get("ensemble"))
        atomic_write_text(DATA, json.dumps(data, indent=1))
    render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
