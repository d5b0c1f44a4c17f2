"""An experiment: features for train/dev/test, N seeds of one head, metrics with CIs.

``run`` is three steps: ``train_seeds`` (fit each seed, choose its threshold on dev),
``summarize_seeds`` (metrics per split with bootstrap CIs) and ``save_best`` (the checkpoint of
the seed with the best dev score).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memetrm.config import RunConfig
from memetrm.data import get_dataset
from memetrm.errors import DataError
from memetrm.evaluation import bootstrap_ci, choose_threshold, compute_metrics, summarize
from memetrm.evaluation.metrics import auroc
from memetrm.features import FeatureSet, load_features
from memetrm.heads import Head, create_head, head_config, head_entry, save_pretrained
from memetrm.progress import console, make_progress
from memetrm.provenance import combined_hash, provenance
from memetrm.training.engine import FitResult, TrainConfig, fit, predict, resolve_train_config
from memetrm.utils import atomic_write_text, seed_everything


def run_train_config(cfg: RunConfig) -> TrainConfig:
    """``TrainConfig`` defaults < the head preset's training options < the run's ``train``."""
    return resolve_train_config(head_entry(cfg.head).train, {"device": cfg.device}, cfg.train)


def resolved_config(cfg: RunConfig) -> dict[str, Any]:
    """The run config with every default filled in: what ``--print-config`` shows and results record."""
    out = dataclasses.asdict(cfg)
    out["head_cfg"] = dataclasses.asdict(head_config(cfg.head, **cfg.head_cfg))
    out["train"] = dataclasses.asdict(run_train_config(cfg))
    return out


def load_run_features(cfg: RunConfig) -> tuple[dict[str, FeatureSet], list[str], dict[str, str]]:
    """Features of every split the run needs, the fields used, and the train/dev/test roles."""
    ds = get_dataset(cfg.dataset, cfg.data_root, on_bad_line=cfg.on_bad_line,
                     allow_outside_images=cfg.allow_outside_images)
    fields = cfg.fields or list(ds.default_fields)
    roles = ds.roles(cfg.train_split, cfg.dev_split, cfg.test_split)
    tokens = head_entry(cfg.head).cls.needs_tokens
    splits = list(dict.fromkeys([*roles.values(), *cfg.eval_splits]))
    feats = {
        s: load_features(cfg.dataset, s, cfg.encoder, fields, tokens=tokens,
                         data_root=cfg.data_root, on_missing_image=cfg.on_missing_image,
                         cache_dir=cfg.cache_dir, device=cfg.device, precision=cfg.precision,
                         on_bad_line=cfg.on_bad_line, allow_outside_images=cfg.allow_outside_images)
        for s in splits
    }
    return feats, fields, roles


#: evaluation splits smaller than this get a warning: their metrics barely mean anything
SMALL_SPLIT = 100


@dataclass
class SeedRun:
    seed: int
    fit: FitResult
    #: decision threshold chosen on dev
    threshold: float
    #: ``predict`` outputs for every evaluated split
    outputs: dict[str, dict[str, torch.Tensor]]
    seconds: float


def train_seeds(cfg: RunConfig, feats: dict[str, FeatureSet], roles: dict[str, str],
                tcfg: TrainConfig) -> list[SeedRun]:
    """Fit one head per seed; its epoch and threshold are chosen on dev, never on test."""
    train_fs, dev_fs = feats[roles["train"]], feats[roles["dev"]]
    eval_splits = [s for s in feats if s != roles["train"]]
    runs = []
    with make_progress() as bar:
        task = bar.add_task(cfg.head, total=cfg.seeds * tcfg.epochs)
        for seed in range(cfg.seeds):
            seed_everything(seed)
            head = create_head(cfg.head, train_fs.input_dims, train_fs.token_dims or None,
                               **cfg.head_cfg)

            def show(row: dict[str, float], seed: int = seed) -> None:
                bar.update(task, advance=1, description=(
                    f"{cfg.head} seed {seed + 1}/{cfg.seeds} epoch {row['epoch'] + 1}: "
                    f"loss {row['loss']:.3f}, dev AUROC {row['dev_score']:.3f}"))

            t0 = time.perf_counter()
            result = fit(head, train_fs, dev_fs, dataclasses.replace(tcfg, seed=seed),
                         on_epoch=show)
            seconds = time.perf_counter() - t0
            bar.update(task, completed=(seed + 1) * tcfg.epochs)  # early stopping skips the rest
            # the full-depth trace too: the report plots it and depth stats score full depth
            outs = {s: predict(result.head, feats[s], trace=True) for s in eval_splits}
            thr = choose_threshold(dev_fs.labels.numpy(), outs[roles["dev"]]["prob"].numpy(),
                                   tcfg.threshold_metric)
            runs.append(SeedRun(seed, result, thr, outs, seconds))
            halted = result.calibration.get("dev_auroc_halted")
            console.print(f"  seed {seed}: best epoch {result.best_epoch}, dev AUROC "
                          f"{result.dev_score:.4f}"
                          + (f" at full depth ({halted:.4f} halted, as reported)"
                             if halted is not None else "")
                          + f", threshold {thr:.3f}")
    return runs


def seed_predictions(feats: dict[str, FeatureSet], runs: list[SeedRun]) -> dict[str, Any]:
    """Per evaluated split: ids, labels and every seed's probabilities (and seed 0's trace)."""
    out = {}
    for s in runs[0].outputs:
        trace = runs[0].outputs[s].get("trace")
        out[s] = {"ids": feats[s].ids, "labels": feats[s].labels.tolist(),
                  "probs": [r.outputs[s]["prob"].tolist() for r in runs],
                  "trace": trace.tolist() if trace is not None else None}
    return out


def summarize_seeds(cfg: RunConfig, feats: dict[str, FeatureSet],
                    runs: list[SeedRun]) -> dict[str, Any]:
    """Per evaluated split: metrics over seeds (mean, std, bootstrap CI) and halting depth."""
    thresholds = [r.threshold for r in runs]
    splits_out = {}
    for s in runs[0].outputs:
        y = feats[s].labels.numpy()
        probs = [r.outputs[s]["prob"].numpy() for r in runs]
        per_seed = [compute_metrics(y, p, t) for p, t in zip(probs, thresholds, strict=True)]
        ci = bootstrap_ci(y, probs, thresholds, n_boot=cfg.bootstrap) if cfg.bootstrap else None
        splits_out[s] = summarize(per_seed, ci)
        depth = _depth_stats(y, [r.outputs[s] for r in runs])
        if depth:
            splits_out[s]["depth"] = depth
    return splits_out


def check_splits(cfg: RunConfig, feats: dict[str, FeatureSet], roles: dict[str, str]) -> list[str]:
    """Refuse, before any training, splits that cannot give the metrics asked of them; return
    the ids shared by train and an evaluated split (reported, since they inflate scores)."""
    for split, fs in feats.items():
        role = next((r for r, s in roles.items() if s == split), "eval")
        where = f"{cfg.dataset}/{split} ({role} split)"
        unlabelled = [i for i, y in zip(fs.ids, fs.labels.tolist(), strict=True) if y != y]
        if unlabelled:
            raise DataError(f"{where}: {len(unlabelled)} record(s) have no label, ids: "
                            f"{', '.join(unlabelled[:10])}; training and metrics need labels")
        counts = [int((fs.labels == c).sum()) for c in (0, 1)]
        if min(counts) == 0:
            only = 1 if counts[1] else 0
            raise DataError(f"{where}: all {len(fs)} record(s) have label {only}; training, "
                            "AUROC and thresholds need both classes (use a larger split, or "
                            "merge splits and cross-validate)")
        if role != "train" and len(fs) < SMALL_SPLIT:
            console.print(f"[yellow]warning:[/] {where} has only {len(fs)} examples: its AUROC, "
                          "threshold and epoch choice are mostly noise (see the 95% CI); use "
                          f"at least {SMALL_SPLIT}, or merge splits and cross-validate",
                          soft_wrap=True)
    train_ids = set(feats[roles["train"]].ids)
    return sorted({i for s, fs in feats.items() if s != roles["train"] for i in fs.ids} & train_ids)


def best_run(runs: list[SeedRun]) -> SeedRun:
    """The seed with the best dev score (the first one on ties)."""
    return max(runs, key=lambda r: r.fit.dev_score)


def save_best(cfg: RunConfig, runs: list[SeedRun], results: dict[str, Any],
              labels: tuple[str, str]) -> Path:
    """The best-dev seed's head, with everything needed to use it and a model card."""
    best = best_run(runs)
    head: Head = best.fit.head  # type: ignore[assignment]
    config = {**results["config"], "train": {**results["config"]["train"], "seed": best.seed}}
    return save_pretrained(
        head, cfg.save, card=model_card(results, best, labels), encoder=cfg.encoder,
        fields=results["fields"], tokens=bool(head.token_dims), threshold=best.threshold,
        dataset=cfg.dataset, labels=list(labels), dev_auroc=best.fit.dev_score, seed=best.seed,
        run_config=config, provenance=results["provenance"])


def model_card(results: dict[str, Any], best: SeedRun, labels: tuple[str, str]) -> str:
    """README.md of a saved model: data, metrics, threshold policy, intended use and limits."""
    roles, tcfg = results["roles"], results["config"]["train"]
    rows = [f"| {split} | {m['auroc']['mean']:.3f} ± {m['auroc']['std']:.3f} | "
            f"{m['accuracy']['mean']:.3f} | {m['f1']['mean']:.3f} |"
            for split, m in results["splits"].items()]
    return "\n".join([
        f"# memetrm model: `{results['head']}` on `{results['dataset']}`", "",
        f"Predicts p({labels[1]}) for a meme from frozen `{results['encoder']}` features of "
        f"{', '.join(results['fields'])}. Trained on `{roles['train']}`; the epoch and the "
        f"decision threshold ({best.threshold:.3f}, maximising {tcfg['threshold_metric']}) "
        f"were chosen on `{roles['dev']}` only. This is seed {best.seed}, the best of "
        f"{results['seeds']} on dev (AUROC {best.fit.dev_score:.3f}).", "",
        f"## Metrics over the {results['seeds']} seeds (mean ± std)", "",
        "| split | AUROC | accuracy | F1 |", "|---|---|---|---|", *rows, "",
        "## Intended use", "",
        "Research on multimodal hateful-content detection, and triage that puts memes in front "
        "of a human moderator. Not for automated enforcement without review: the score reflects "
        "the training data's labels and their biases, and it drops on memes unlike them "
        "(other languages, eras, communities or image styles).", "",
        "## Provenance", "",
        *(f"- {k}: `{v}`" for k, v in results["provenance"].items()), "",
    ])


def run(cfg: RunConfig) -> dict[str, Any]:
    """Train ``cfg.seeds`` seeds; select epoch and threshold on dev; report every split."""
    t0 = time.perf_counter()
    config = resolved_config(cfg)
    tcfg = run_train_config(cfg)
    feats, fields, roles = load_run_features(cfg)
    overlap = check_splits(cfg, feats, roles)
    if overlap:
        console.print(f"[yellow]warning:[/] {len(overlap)} id(s) of the train split also appear in "
                      f"an evaluated split: {', '.join(overlap[:10])}", soft_wrap=True)
    runs = train_seeds(cfg, feats, roles, tcfg)
    if cfg.out_dir:  # written first: a metric error later must not lose the predictions
        atomic_write_text(Path(cfg.out_dir) / "predictions.json",
                          json.dumps(seed_predictions(feats, runs)))
    splits_out = summarize_seeds(cfg, feats, runs)
    best = best_run(runs)
    train_seconds = sum(r.seconds for r in runs)
    config["train"]["seed"] = [r.seed for r in runs]
    labels = tuple(feats[roles["train"]].meta["label_names"])
    results = {
        "provenance": provenance(
            data_hash=combined_hash({s: f.meta["data_hash"] for s, f in feats.items()}),
            seeds=[r.seed for r in runs]),
        "dataset": cfg.dataset, "encoder": cfg.encoder, "head": cfg.head, "seeds": cfg.seeds,
        "label_names": list(labels),
        "fields": fields, "roles": roles, "splits": splits_out,
        "thresholds": [r.threshold for r in runs], "best_epochs": [r.fit.best_epoch for r in runs],
        "best_seed": best.seed, "calibration": [r.fit.calibration for r in runs],
        "params": sum(p.numel() for p in best.fit.head.parameters() if p.requires_grad),
        "config": config,
        "train_overlap_ids": overlap,
        "skipped_missing_images": sorted({i for f in feats.values()
                                          for i in f.meta["skipped_missing_images"]}),
        "extract_seconds": sum(f.meta["extract_seconds"] for f in feats.values()),
        "train_seconds": train_seconds, "train_seconds_per_seed": train_seconds / cfg.seeds,
        "total_seconds": time.perf_counter() - t0,
    }
    if cfg.out_dir:
        atomic_write_text(Path(cfg.out_dir) / "results.json", json.dumps(results, indent=2))
    if cfg.save:
        save_best(cfg, runs, results, labels)
    return results


def _depth_stats(y: np.ndarray, outs: list[dict]) -> dict[str, float] | None:
    """For heads that halt early: steps used vs full depth, and AUROC at both.

    ``prob`` is the early-exit answer at ``steps``; the full-depth answer is the last column of
    the separately computed full-depth ``trace``.
    """
    if "steps" not in outs[0] or "trace" not in outs[0]:
        return None
    steps = [o["steps"].float().mean().item() for o in outs]
    full = [auroc(y, o["trace"][:, -1].numpy()) for o in outs]
    halted = [auroc(y, o["prob"].numpy()) for o in outs]
    return {
        "mean_steps": float(np.mean(steps)), "max_steps": int(outs[0]["trace"].shape[1]),
        "auroc_halted": float(np.mean(halted)), "auroc_full_depth": float(np.mean(full)),
    }
