"""An experiment: features for train/dev/test, N seeds of one head, metrics with CIs."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from memetrm.config import RunConfig
from memetrm.data import get_dataset
from memetrm.errors import ConfigError
from memetrm.evaluation import bootstrap_ci, choose_threshold, compute_metrics, summarize
from memetrm.evaluation.metrics import auroc
from memetrm.features import FeatureSet, load_features
from memetrm.heads import create_head, head_entry, save_pretrained
from memetrm.progress import console
from memetrm.training.engine import TrainConfig, fit, predict
from memetrm.utils import atomic_write_text, seed_everything


def resolve_train_config(cfg: RunConfig) -> TrainConfig:
    """TrainConfig defaults < the head preset's training overrides < the user's."""
    merged = {**head_entry(cfg.head).train, **cfg.train}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    if set(merged) - known:
        raise ConfigError(f"unknown train option(s) {sorted(set(merged) - known)}; known: {sorted(known)}")
    return TrainConfig(**merged)


def load_run_features(cfg: RunConfig) -> tuple[dict[str, FeatureSet], list[str], dict[str, str]]:
    ds = get_dataset(cfg.dataset, cfg.data_root)
    fields = cfg.fields or list(ds.default_fields)
    roles = {"train": cfg.train_split or ds.train_split, "dev": cfg.dev_split or ds.dev_split,
             "test": cfg.test_split or ds.test_split}
    tokens = head_entry(cfg.head).cls.needs_tokens
    splits = list(dict.fromkeys([*roles.values(), *cfg.eval_splits]))
    feats = {
        s: load_features(cfg.dataset, s, cfg.encoder, fields, tokens=tokens,
                         data_root=cfg.data_root, on_missing_image=cfg.on_missing_image,
                         cache_dir=cfg.cache_dir)
        for s in splits
    }
    return feats, fields, roles


def run(cfg: RunConfig) -> dict[str, Any]:
    """Train ``cfg.seeds`` seeds; select epoch and threshold on dev; report every split."""
    t0 = time.perf_counter()
    feats, fields, roles = load_run_features(cfg)
    extract_seconds = sum(f.meta["extract_seconds"] for f in feats.values())
    tcfg_base = resolve_train_config(cfg)
    train_fs, dev_fs = feats[roles["train"]], feats[roles["dev"]]
    eval_splits = [s for s in feats if s != roles["train"]]

    seeds_out: list[dict[str, Any]] = []
    train_seconds = 0.0
    best_dev, best_head, best_thr = -np.inf, None, 0.5
    for seed in range(cfg.seeds):
        seed_everything(seed)
        tcfg = dataclasses.replace(tcfg_base, seed=seed)
        head = create_head(cfg.head, train_fs.input_dims, train_fs.token_dims or None, **cfg.head_cfg)
        ts = time.perf_counter()
        result = fit(head, train_fs, dev_fs, tcfg)
        train_seconds += time.perf_counter() - ts
        outs = {s: predict(result.head, feats[s]) for s in eval_splits}
        thr = choose_threshold(dev_fs.labels.numpy(), outs[roles["dev"]]["prob"].numpy(),
                               tcfg.threshold_metric)
        seeds_out.append({"seed": seed, "threshold": thr, "best_epoch": result.best_epoch,
                          "calibration": result.calibration, "outputs": outs})
        console.print(f"  seed {seed}: best epoch {result.best_epoch}, dev AUROC {result.dev_auroc:.4f}")
        if result.dev_auroc > best_dev:
            best_dev, best_head, best_thr = result.dev_auroc, result.head, thr

    n_params = sum(p.numel() for p in best_head.parameters() if p.requires_grad)
    thresholds = [s["threshold"] for s in seeds_out]
    splits_out, predictions = {}, {}
    for s in eval_splits:
        y = feats[s].labels.numpy()
        probs = [so["outputs"][s]["prob"].numpy() for so in seeds_out]
        per_seed = [compute_metrics(y, p, t) for p, t in zip(probs, thresholds, strict=True)]
        ci = bootstrap_ci(y, probs, thresholds, n_boot=cfg.bootstrap) if cfg.bootstrap else None
        splits_out[s] = summarize(per_seed, ci)
        extra = _depth_stats(y, [so["outputs"][s] for so in seeds_out])
        if extra:
            splits_out[s]["depth"] = extra
        predictions[s] = {
            "ids": feats[s].ids, "labels": y.tolist(), "probs": [p.tolist() for p in probs],
            "trace": (seeds_out[0]["outputs"][s]["trace"].tolist()
                      if "trace" in seeds_out[0]["outputs"][s] else None),
        }
    results = {
        "dataset": cfg.dataset, "encoder": cfg.encoder, "head": cfg.head, "seeds": cfg.seeds,
        "fields": fields, "roles": roles, "splits": splits_out,
        "thresholds": thresholds, "best_epochs": [s["best_epoch"] for s in seeds_out],
        "calibration": [s["calibration"] for s in seeds_out],
        "params": n_params, "train_config": dataclasses.asdict(tcfg_base),
        "head_config": dataclasses.asdict(best_head.cfg),
        "skipped_missing_images": sorted({i for f in feats.values()
                                          for i in f.meta["skipped_missing_images"]}),
        "extract_seconds": extract_seconds, "train_seconds": train_seconds,
        "train_seconds_per_seed": train_seconds / cfg.seeds,
        "total_seconds": time.perf_counter() - t0,
    }
    if cfg.out_dir:
        out = Path(cfg.out_dir)
        atomic_write_text(out / "results.json", json.dumps(results, indent=2))
        atomic_write_text(out / "predictions.json", json.dumps(predictions))
    if cfg.save:
        save_pretrained(best_head, cfg.save, encoder=cfg.encoder, fields=fields,
                        tokens=bool(train_fs.token_dims), threshold=best_thr,
                        dataset=cfg.dataset, dev_auroc=best_dev)
    return results


def _depth_stats(y: np.ndarray, outs: list[dict]) -> dict[str, float] | None:
    """For heads that halt early: steps used vs full depth, and AUROC at both."""
    if "steps" not in outs[0] or "trace" not in outs[0]:
        return None
    steps = [o["steps"].float().mean().item() for o in outs]
    full = [auroc(y, o["trace"][:, -1].numpy()) for o in outs]
    halted = [auroc(y, o["prob"].numpy()) for o in outs]
    return {
        "mean_steps": float(np.mean(steps)), "max_steps": int(outs[0]["trace"].shape[1]),
        "auroc_halted": float(np.mean(halted)), "auroc_full_depth": float(np.mean(full)),
    }
