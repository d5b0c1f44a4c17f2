"""An experiment: features for train/dev/test, N seeds of one head, metrics with CIs.

``run`` is three steps: ``train_seeds`` (fit each seed, choose its threshold on dev),
``summarize_seeds`` (metrics per split with bootstrap CIs) and ``save_best`` (the checkpoint of
the seed with the best dev score).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memetrm.config import RunConfig, read_config_text
from memetrm.data import MemeDataset, get_dataset
from memetrm.encoders import DEFAULT_ENCODER
from memetrm.encoders.saved import saved_encoder_meta
from memetrm.errors import DataError
from memetrm.evaluation import (
    bootstrap_ci,
    choose_threshold,
    compute_metrics,
    majority_share,
    summarize,
)
from memetrm.evaluation.calibration import (
    CONFIG_KEY,
    Calibrator,
    check_calibration,
    expected_calibration_error,
)
from memetrm.evaluation.metrics import METRICS, ONE_CLASS_SHARE, auroc
from memetrm.evaluation.tables import fmt
from memetrm.features import FeatureSet, load_features
from memetrm.heads import Head, create_head, head_config, head_entry, save_pretrained
from memetrm.progress import console, make_progress, warn
from memetrm.provenance import combined_hash, provenance
from memetrm.training.engine import FitResult, TrainConfig, fit, predict, resolve_train_config
from memetrm.utils import atomic_write_text, plural, seed_everything


def run_train_config(cfg: RunConfig) -> TrainConfig:
    """``TrainConfig`` defaults < the head preset's training options < the run's ``train``."""
    return resolve_train_config(head_entry(cfg.head).train, cfg.train)


def with_defaults(cfg: RunConfig) -> RunConfig:
    """The run config with the default encoder named (``None`` in the config means it)."""
    return dataclasses.replace(cfg, encoder=cfg.encoder or DEFAULT_ENCODER)


def resolved_config(cfg: RunConfig) -> dict[str, Any]:
    """The run config with every default filled in: what ``--print-config`` shows and results record."""
    out = dataclasses.asdict(with_defaults(cfg))
    out["head_cfg"] = dataclasses.asdict(head_config(cfg.head, **cfg.head_cfg))
    out["train"] = dataclasses.asdict(run_train_config(cfg))
    return out


def load_run_features(cfg: RunConfig) -> tuple[dict[str, FeatureSet], list[str], dict[str, str]]:
    """Features of every split the run needs, the fields used, and the train/dev/test roles."""
    cfg = with_defaults(cfg)
    ds = run_dataset(cfg)
    fields = cfg.fields or list(ds.default_fields)
    roles = ds.roles(cfg.train_split, cfg.dev_split, cfg.test_split)
    tokens = head_entry(cfg.head).cls.needs_tokens
    splits = list(dict.fromkeys([*roles.values(), *cfg.eval_splits]))
    feats = {
        s: load_features(cfg.dataset, s, cfg.encoder, fields, tokens=tokens, data=cfg.data,
                         device=cfg.device, precision=cfg.precision)
        for s in splits
    }
    if cfg.train_ids:
        feats[roles["train"]] = only_ids(feats[roles["train"]], Path(cfg.train_ids))
    return feats, fields, roles


#: a training-ids file above this is refused before it is read (100,000 ids are about 2 MB)
MAX_IDS_BYTES = 64 * 2**20


def only_ids(fs: FeatureSet, path: Path) -> FeatureSet:
    """The rows of ``fs`` whose ids ``path`` lists: one per line, or a ``tuning.json``'s
    ``held_out_ids``. An id the split lacks is an error naming it, not a silent drop."""
    text = read_config_text(path, "training-ids file", MAX_IDS_BYTES)
    try:
        ids = (json.loads(text)["held_out_ids"] if path.suffix == ".json"
               else [line.strip() for line in text.splitlines() if line.strip()])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: cannot read training ids ({e})") from e
    row = {i: r for r, i in enumerate(fs.ids)}
    unknown = [i for i in ids if i not in row]
    if unknown:
        raise DataError(f"{path}: {plural(len(unknown), 'id')} not in the training split, e.g. "
                        f"{', '.join(map(str, unknown[:5]))}")
    if not ids:
        raise DataError(f"{path}: lists no training ids")
    return fs.subset([row[i] for i in dict.fromkeys(ids)])


def run_dataset(cfg: RunConfig) -> MemeDataset:
    """The run's dataset, read with the run's bad-line and image-path policies."""
    return get_dataset(cfg.dataset, cfg.data_root, on_bad_line=cfg.on_bad_line,
                       allow_outside_images=cfg.allow_outside_images)


def check_buildable(cfg: RunConfig) -> None:
    """Build the run's head on stand-in feature widths, so options or fields it cannot take
    fail before any run of a sweep trains, not an hour into it; raises ``ConfigError``."""
    fields = cfg.fields or list(run_dataset(cfg).default_fields)
    dims = {f: 16 for f in fields}
    create_head(cfg.head, dims, dims if head_entry(cfg.head).cls.needs_tokens else None,
                **cfg.head_cfg)


#: dev splits smaller than this get a note suggesting cross-validation
SUGGEST_CV = 300
#: evaluation splits smaller than this get a warning: their metrics barely mean anything
SMALL_SPLIT = 100


@dataclass
class SeedRun:
    seed: int
    fit: FitResult
    #: decision threshold chosen on dev
    threshold: float
    #: ``predict`` outputs for every evaluated split; ``prob`` calibrated, ``prob_raw`` the head's
    outputs: dict[str, dict[str, torch.Tensor]]
    seconds: float
    #: fitted on dev (or out-of-fold) raw probabilities, before the threshold is chosen
    calibrator: Calibrator = dataclasses.field(default_factory=Calibrator)


def _fit_seed(cfg: RunConfig, seed: int, train_fs: FeatureSet, dev_fs: FeatureSet | None,
              tcfg: TrainConfig, on_epoch, fitted: dict[str, Any] | None = None) -> FitResult:
    seed_everything(seed)
    head = create_head(cfg.head, train_fs.input_dims, train_fs.token_dims or None,
                       **cfg.head_cfg)
    head.set_fitted(**(fitted or {}))
    return fit(head, train_fs, dev_fs, dataclasses.replace(tcfg, seed=seed), on_epoch=on_epoch,
               device=cfg.device)


def dev_threshold(y: np.ndarray, p: np.ndarray, metric: str, where: str) -> float:
    """The decision threshold from dev (or out-of-fold) predictions, with a warning when it
    puts nearly everything in one class (a threshold a moderator cannot use)."""
    thr = choose_threshold(y, p, metric)
    share = majority_share(p, thr)
    if share > ONE_CLASS_SHARE:
        warn(f"the {metric} threshold {thr:.3f} chosen on {where} labels {share:.0%} of it as "
             "one class; consider --threshold-metric "
             + ("precision>=P or fpr<=F" if metric == "balanced-accuracy"
                else "balanced-accuracy (or precision>=P)")
             + ("" if where.startswith("the out-of-fold") else ", or --cv 5"))
    return thr


def calibrate_outputs(method: str, y: np.ndarray, fit_on: str,
                      outs: dict[str, dict[str, torch.Tensor]], where: str) -> Calibrator:
    """Fit a calibrator on the labels ``y`` and the raw probabilities of ``outs[fit_on]``, then
    make every split's ``prob`` (and per-step ``trace``) calibrated, the head's own kept as
    ``prob_raw``: the threshold is chosen, and every metric computed, on the calibrated scale
    the saved model answers on."""
    cal = Calibrator.fit(method, y, outs[fit_on]["prob"].cpu().numpy(), where)
    for out in outs.values():
        out["prob_raw"] = out["prob"]
        out["prob"] = torch.from_numpy(cal(out["prob_raw"].cpu().numpy()))
        if "trace" in out:
            out["trace"] = torch.from_numpy(cal(out["trace"].cpu().numpy()))
    return cal


def train_seeds(cfg: RunConfig, feats: dict[str, FeatureSet], roles: dict[str, str],
                tcfg: TrainConfig) -> list[SeedRun]:
    """Fit one head per seed; its epoch and threshold are chosen on dev, never on test."""
    train_fs, dev_fs = feats[roles["train"]], feats[roles["dev"]]
    eval_splits = [s for s in feats if s != roles["train"]]
    seeds = cfg.seeds if head_entry(cfg.head).cls.seeded else 1
    if seeds < cfg.seeds:
        console.print(f"  {cfg.head} is fitted exactly: one fit stands for all {cfg.seeds} seeds")
    runs = []
    with make_progress() as bar:
        task = bar.add_task(cfg.head, total=seeds * tcfg.epochs)
        for seed in range(seeds):
            t0 = time.perf_counter()
            result = _fit_seed(cfg, seed, train_fs, dev_fs, tcfg,
                               _epoch_display(bar, task, f"{cfg.head} seed {seed + 1}/{seeds}"))
            seconds = time.perf_counter() - t0
            bar.update(task, completed=(seed + 1) * tcfg.epochs)  # early stopping skips the rest
            # the full-depth trace too: the report plots it and depth stats score full depth
            outs = {s: predict(result.head, feats[s], trace=True) for s in eval_splits}
            y_dev = dev_fs.labels.cpu().numpy()
            cal = calibrate_outputs(cfg.calibration, y_dev, roles["dev"], outs, roles["dev"])
            thr = dev_threshold(y_dev, outs[roles["dev"]]["prob"].cpu().numpy(),
                                tcfg.threshold_metric, roles["dev"])
            runs.append(SeedRun(seed, result, thr, outs, seconds, cal))
            halted = result.calibration.get("dev_auroc_halted")
            console.print(f"  seed {seed + 1}/{seeds}: best epoch {result.best_epoch + 1}, "
                          f"dev AUROC {result.dev_score:.4f}"
                          + (f" at full depth ({halted:.4f} halted, as reported)"
                             if halted is not None else "")
                          + f", calibration {cal.describe()}, threshold {thr:.3f}")
    return runs


def _epoch_display(bar, task, label: str):
    def show(row: dict[str, float]) -> None:
        dev = f", dev AUROC {row['dev_score']:.3f}" if "dev_score" in row else ""
        line = f"{label} epoch {row['epoch'] + 1}: loss {row.get('loss', math.nan):.3f}{dev}"
        bar.update(task, advance=1, description=line)  # in a log: one line per epoch
    return show


#: the split name under which cross-validated runs report their out-of-fold predictions
CV_SPLIT = "cv"


def train_seeds_cv(cfg: RunConfig, feats: dict[str, FeatureSet], roles: dict[str, str],
                   tcfg: TrainConfig) -> list[SeedRun]:
    """Stratified K-fold over train + dev, per seed.

    Each fold trains on K-1 parts and picks its epoch (and any hyperparameter the head
    chooses on dev, such as the probe's C) on the held part. The decision threshold is chosen
    on the pooled out-of-fold predictions, whose AUROC is the dev estimate; the head is then
    refit on all of train + dev for the folds' median epoch count, starting from the fitted
    values of the fold that scored best on its held part (one tuple some fold evaluated,
    never a mix of folds), and scored on the other splits. A memory head refits its vote on
    train + dev, leave-one-out. Test labels are not read before that final score.
    """
    from sklearn.model_selection import StratifiedKFold

    pool = FeatureSet.concat([feats[roles["train"]], feats[roles["dev"]]])
    y = pool.labels.cpu().numpy()
    eval_splits = [s for s in feats if s not in (roles["train"], roles["dev"])]
    runs = []
    with make_progress() as bar:
        task = bar.add_task(cfg.head, total=cfg.seeds * (cfg.cv + 1) * tcfg.epochs)
        for seed in range(cfg.seeds):
            t0 = time.perf_counter()
            oof = np.zeros(len(pool))
            epochs, chosen, held_scores = [], [], []
            folds = StratifiedKFold(cfg.cv, shuffle=True, random_state=seed).split(y, y)
            for k, (tr, held) in enumerate(folds):
                label = f"{cfg.head} seed {seed + 1}/{cfg.seeds} fold {k + 1}/{cfg.cv}"
                r = _fit_seed(cfg, seed, pool.subset(tr), pool.subset(held), tcfg,
                              _epoch_display(bar, task, label))
                bar.update(task, completed=(seed * (cfg.cv + 1) + k + 1) * tcfg.epochs)
                oof[held] = predict(r.head, pool.subset(held))["prob"].cpu().numpy()
                epochs.append(r.best_epoch + 1)
                chosen.append(r.head.fitted())
                held_scores.append(r.dev_score)
            hparams = chosen[int(np.argmax(held_scores))]
            refit = dataclasses.replace(tcfg, epochs=int(np.median(epochs)), patience=0)
            final = _fit_seed(cfg, seed, pool, None, refit,
                              _epoch_display(bar, task, f"{cfg.head} seed {seed + 1} refit"),
                              fitted=hparams)
            final.best_epoch, final.dev_score = refit.epochs - 1, auroc(y, oof)
            fitted = final.head.fitted()
            final.calibration = {**final.calibration, "fitted": fitted, "fold_fitted": chosen,
                                 "fold_epochs": epochs}
            bar.update(task, completed=(seed + 1) * (cfg.cv + 1) * tcfg.epochs)
            outs = {CV_SPLIT: {"prob": torch.from_numpy(oof).float()},
                    **{s: predict(final.head, feats[s], trace=True) for s in eval_splits}}
            cal = calibrate_outputs(cfg.calibration, y, CV_SPLIT, outs,
                                    "the out-of-fold predictions")
            thr = dev_threshold(y, outs[CV_SPLIT]["prob"].cpu().numpy(), tcfg.threshold_metric,
                                "the out-of-fold predictions")
            runs.append(SeedRun(seed, final, thr, outs, time.perf_counter() - t0, cal))
            console.print(f"  seed {seed + 1}/{cfg.seeds}: out-of-fold AUROC "
                          f"{final.dev_score:.4f}, fold epochs {epochs}, refit {refit.epochs} epochs"
                          + (f" with {fitted}" if fitted else "")
                          + f", calibration {cal.describe()}, threshold {thr:.3f}")
    feats[CV_SPLIT] = pool
    return runs


def seed_predictions(feats: dict[str, FeatureSet], runs: list[SeedRun]) -> dict[str, Any]:
    """Per evaluated split: ids, labels and every seed's calibrated and raw probabilities (and
    seed 0's trace)."""
    out = {}
    for s in runs[0].outputs:
        trace = runs[0].outputs[s].get("trace")
        out[s] = {"ids": feats[s].ids, "labels": feats[s].labels.tolist(),
                  "probs": [r.outputs[s]["prob"].tolist() for r in runs],
                  "probs_raw": [r.outputs[s]["prob_raw"].tolist() for r in runs],
                  "trace": trace.tolist() if trace is not None else None}
    return out


def summarize_seeds(cfg: RunConfig, feats: dict[str, FeatureSet],
                    runs: list[SeedRun]) -> dict[str, Any]:
    """Per evaluated split: metrics over seeds (mean, std, bootstrap CI), the expected
    calibration error of the calibrated and the raw probabilities, and halting depth."""
    thresholds = [r.threshold for r in runs]
    splits_out = {}
    for s in runs[0].outputs:
        y = feats[s].labels.cpu().numpy()
        probs = [r.outputs[s]["prob"].cpu().numpy() for r in runs]
        per_seed = [compute_metrics(y, p, t) for p, t in zip(probs, thresholds, strict=True)]
        ci = bootstrap_ci(y, probs, thresholds, n_boot=cfg.bootstrap) if cfg.bootstrap else None
        splits_out[s] = summarize(per_seed, ci)
        for key, name in (("prob", "ece"), ("prob_raw", "ece_raw")):
            vals = [expected_calibration_error(y, r.outputs[s][key].cpu().numpy()) for r in runs]
            splits_out[s][name] = {"mean": float(np.mean(vals)), "values": vals,
                                   "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}
        depth = _depth_stats(y, [r.outputs[s] for r in runs])
        if depth:
            splits_out[s]["depth"] = depth
    return splits_out


def seed_ensemble(cfg: RunConfig, feats: dict[str, FeatureSet], runs: list[SeedRun],
                  dev_split: str, metric: str) -> dict[str, Any]:
    """The seeds' mean probability as one model: its threshold on dev, its metrics (with a
    bootstrap CI) on every evaluated split. No spread over seeds, so ``std`` is None."""
    mean = {s: np.mean([r.outputs[s]["prob"].numpy() for r in runs], axis=0) for s in runs[0].outputs}
    thr = choose_threshold(feats[dev_split].labels.cpu().numpy(), mean[dev_split], metric)
    return {"threshold": thr, "seeds": len(runs),
            "splits": {s: ensemble_metrics(feats[s].labels.cpu().numpy(), p, thr, cfg.bootstrap)
                       for s, p in mean.items()}}


def ensemble_metrics(y: np.ndarray, p: np.ndarray, thr: float, n_boot: int) -> dict[str, Any]:
    """One model's metrics in the per-seed summary's shape (``std`` None: nothing to spread)."""
    ci = bootstrap_ci(y, [p], [thr], n_boot=n_boot) if n_boot else None
    return {m: {"mean": v, "std": None, "ci95": list(ci[m]) if ci else None}
            for m, v in compute_metrics(y, p, thr).items() if m in METRICS}


def check_splits(cfg: RunConfig, feats: dict[str, FeatureSet], roles: dict[str, str]) -> list[str]:
    """Refuse, before any training, splits that cannot give the metrics asked of them; return
    the ids shared by train and an evaluated split (reported, since they inflate scores)."""
    for split, fs in feats.items():
        role = next((r for r, s in roles.items() if s == split), "eval")
        where = f"{cfg.dataset}/{split} ({role} split)"
        unlabelled = [i for i, y in zip(fs.ids, fs.labels.tolist(), strict=True) if y != y]
        if unlabelled:
            raise DataError(f"{where}: {plural(len(unlabelled), 'record')} with no label, ids: "
                            f"{', '.join(unlabelled[:10])}; training and metrics need labels")
        counts = [int((fs.labels == c).sum()) for c in (0, 1)]
        if min(counts) == 0:
            only = 1 if counts[1] else 0
            raise DataError(f"{where}: every record ({len(fs)}) has label {only}; training, "
                            "AUROC and thresholds need both classes (use a larger split, or "
                            "merge splits and cross-validate)")
        if role != "train" and len(fs) < SMALL_SPLIT:
            warn(f"{where} has only {len(fs)} examples: its AUROC, threshold and epoch choice "
                 f"are mostly noise (see the 95% CI); use at least {SMALL_SPLIT}, or merge "
                 "splits and cross-validate")
    train_ids = set(feats[roles["train"]].ids)
    return sorted({i for s, fs in feats.items() if s != roles["train"] for i in fs.ids} & train_ids)


def best_run(runs: list[SeedRun]) -> SeedRun:
    """The seed with the best dev score (the first one on ties)."""
    return max(runs, key=lambda r: r.fit.dev_score)


def save_best(cfg: RunConfig, runs: list[SeedRun], results: dict[str, Any],
              labels: tuple[str, str], dev_labels: torch.Tensor) -> Path:
    """The best-dev seed's head, with everything needed to use it (its calibrator, and its dev
    scores for choosing operating points) and a model card."""
    best = best_run(runs)
    head: Head = best.fit.head  # type: ignore[assignment]
    config = {**results["config"], "train": {**results["config"]["train"], "seed": best.seed}}
    dev = results["roles"]["dev"]
    return save_pretrained(
        head, cfg.save, card=model_card(results, best, labels),
        fields=results["fields"], tokens=bool(head.token_dims), threshold=best.threshold,
        dataset=cfg.dataset, labels=list(labels), dev_auroc=best.fit.dev_score, seed=best.seed,
        # what share of dev any threshold flags: scoring commands warn on a one-class one
        dev_quantiles=np.quantile(best.outputs[dev]["prob"].cpu().numpy(),
                                  np.linspace(0, 1, 101)).tolist(),
        **{CONFIG_KEY: best.calibrator.to_dict()},
        dev_scores=dev_scores(dev, dev_labels.int().tolist(), best.outputs[dev]["prob_raw"]),
        run_config=config, provenance=results["provenance"],
        **saved_encoder_meta(cfg.encoder, results["fields"], cfg.save))


def dev_scores(split: str, labels: list[int], raw: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """What a saved model keeps of its dev split (or out-of-fold predictions): labels and raw
    probabilities, from which a serving policy chooses its operating points on the
    calibrated scale (``memetrm.serving.policy``)."""
    return {"split": split, "labels": labels, "prob_raw": np.asarray(raw, dtype=float).tolist()}


def model_card(results: dict[str, Any], best: SeedRun, labels: tuple[str, str]) -> str:
    """README.md of a saved model: data, metrics, threshold policy, intended use and limits."""
    roles, tcfg = results["roles"], results["config"]["train"]
    rows = [f"| {split} | {fmt(m['auroc'])} | {m['accuracy']['mean']:.3f} | "
            f"{m['f1']['mean']:.3f} | {m['ece']['mean']:.3f} ({m['ece_raw']['mean']:.3f}) |"
            for split, m in results["splits"].items()]
    return "\n".join([
        f"# memetrm model: `{results['head']}` on `{results['dataset']}`", "",
        f"Predicts p({labels[1]}) for a meme from frozen `{results['encoder']}` features of "
        f"{', '.join(results['fields'])}. Trained on `{roles['train']}`; the epoch and the "
        f"decision threshold ({best.threshold:.3f}, by {tcfg['threshold_metric']}) were chosen "
        + (f"by {results['cv']}-fold cross-validation on train + dev (out-of-fold predictions)"
           if results.get("cv") else f"on `{roles['dev']}` only")
        # seeds counted from 1, as the training log counts them; train.seed is the value
        + f". This is seed {best.seed + 1} of {results['seeds']} (train.seed={best.seed}), the "
        f"best on dev (AUROC {best.fit.dev_score:.3f}). Its probabilities are calibrated on the "
        f"same predictions by {best.calibrator.describe()}; the threshold is on that scale.", "",
        f"## Metrics over {plural(results['seeds'], 'seed')} (mean ± std)", "",
        "| split | AUROC | accuracy | F1 | ECE, 15 bins (raw) |", "|---|---|---|---|---|", *rows,
        "",
        "## Intended use", "",
        "Research on multimodal hateful-content detection, and triage that puts memes in front "
        "of a human moderator. Not for automated enforcement without review: the score reflects "
        "the training data's labels and their biases, and it drops on memes unlike them "
        "(other languages, eras, communities or image styles).", "",
        "## Provenance", "",
        *(f"- {k}: `{v}`" for k, v in results["provenance"].items()), "",
    ])


@dataclass
class RunOutput:
    """A run's results (as written to results.json) and what an ensemble needs of it."""

    cfg: RunConfig
    results: dict[str, Any]
    runs: list[SeedRun]
    feats: dict[str, FeatureSet]


def run(cfg: RunConfig) -> dict[str, Any]:
    """Train ``cfg.seeds`` seeds; select epoch and threshold on dev; report every split."""
    return run_models(cfg).results


def run_models(cfg: RunConfig) -> RunOutput:
    """``run``, also returning the trained seeds and their features."""
    t0 = time.perf_counter()
    cfg = with_defaults(cfg)
    config = resolved_config(cfg)
    tcfg = run_train_config(cfg)
    feats, fields, roles = load_run_features(cfg)
    overlap = check_splits(cfg, feats, roles)
    check_calibration(cfg.calibration, len(feats[roles["dev"]]) + (
        len(feats[roles["train"]]) if cfg.cv else 0),
        "the out-of-fold predictions of train + dev" if cfg.cv else f"{cfg.dataset}/{roles['dev']}")
    if overlap:
        warn(f"the train split shares {plural(len(overlap), 'id')} with an evaluated split: "
             f"{', '.join(overlap[:10])}")
    if cfg.cv:
        runs = train_seeds_cv(cfg, feats, roles, tcfg)
        roles = {"train": f"{roles['train']}+{roles['dev']}", "dev": CV_SPLIT, "test": roles["test"]}
    else:
        if len(feats[roles["dev"]]) < SUGGEST_CV:
            warn(f"the dev split has {len(feats[roles['dev']])} examples; an epoch or threshold "
                 "chosen on it is close to a coin toss: consider --cv 5 (train + dev, stratified "
                 "5-fold)", kind="note")
        runs = train_seeds(cfg, feats, roles, tcfg)
    if cfg.out_dir:  # written first: a metric error later must not lose the predictions
        atomic_write_text(Path(cfg.out_dir) / "predictions.json",
                          json.dumps(seed_predictions(feats, runs)))
    splits_out = summarize_seeds(cfg, feats, runs)
    best = best_run(runs)
    train_seconds = sum(r.seconds for r in runs)
    config["train"]["seed"] = [r.seed for r in runs]
    labels = tuple(feats[roles["test"]].meta["label_names"])
    results = {
        "provenance": provenance(
            data_hash=combined_hash({s: f.meta["data_hash"] for s, f in feats.items()}),
            seeds=[r.seed for r in runs]),
        "dataset": cfg.dataset, "encoder": cfg.encoder, "head": cfg.head, "seeds": len(runs),
        "label_names": list(labels),
        "fields": fields, "roles": roles, "cv": cfg.cv, "splits": splits_out,
        "ensemble": seed_ensemble(cfg, feats, runs, roles["dev"], tcfg.threshold_metric),
        "majority_rate": {s: majority_share(feats[s].labels.cpu().numpy(), 0.5)
                          for s in runs[0].outputs},
        "thresholds": [r.threshold for r in runs], "best_epochs": [r.fit.best_epoch for r in runs],
        "best_seed": best.seed, "calibration": [r.fit.calibration for r in runs],
        "calibrators": [r.calibrator.to_dict() for r in runs],
        "params": sum(p.numel() for p in best.fit.head.parameters() if p.requires_grad),
        "config": config,
        "train_overlap_ids": overlap,
        "skipped_missing_images": sorted({i for f in feats.values()
                                          for i in f.meta["skipped_missing_images"]}),
        "extract_seconds": sum(f.meta["extract_seconds"] for f in feats.values()),
        "train_seconds": train_seconds, "train_seconds_per_seed": train_seconds / len(runs),
        # epochs actually run (early stopping ends some); CV's fold fits are not counted
        "train_seconds_per_epoch": None if cfg.cv else
        train_seconds / max(1, sum(len(r.fit.history) for r in runs)),
        "total_seconds": time.perf_counter() - t0,
    }
    if cfg.out_dir:
        atomic_write_text(Path(cfg.out_dir) / "results.json", json.dumps(results, indent=2))
    if cfg.save:
        save_best(cfg, runs, results, labels, feats[roles["dev"]].labels)
    return RunOutput(cfg, results, runs, feats)


def _depth_stats(y: np.ndarray, outs: list[dict]) -> dict[str, float] | None:
    """For heads that halt early: steps used vs full depth, and AUROC at both.

    ``prob`` is the early-exit answer at ``steps``; the full-depth answer is the last column of
    the separately computed full-depth ``trace``.
    """
    if "steps" not in outs[0] or "trace" not in outs[0]:
        return None
    steps = [o["steps"].float().mean().item() for o in outs]
    full = [auroc(y, o["trace"][:, -1].cpu().numpy()) for o in outs]
    halted = [auroc(y, o["prob"].cpu().numpy()) for o in outs]
    return {
        "mean_steps": float(np.mean(steps)), "max_steps": int(outs[0]["trace"].shape[1]),
        "auroc_halted": float(np.mean(halted)), "auroc_full_depth": float(np.mean(full)),
    }
