"""Contrastive tuning of a sentence-transformers text tower on labelled memes (SetFit-style).

Training goes through sentence-transformers' own trainer and losses: each meme is one
``(sentence, label)`` row and a batch triplet loss pulls same-label memes together and pushes
the others apart (``batch-all``, ``batch-hard`` or ``batch-semi-hard``), or SetFit's recipe of
labelled pairs (``contrastive``: each meme with a random same-label and a random other-label
partner, online contrastive loss). LoRA (through ``peft``) or freezing all but the top layers
cuts the cost on a CPU; texts are padded per batch.

Selection is on dev only: after each epoch a logistic probe fitted on (a sample of) the
training memes' embeddings is scored by dev AUROC, and the best epoch is kept. The result is a
sentence-transformers folder plus ``tuning.json`` (settings, per-epoch dev AUROC, seconds per
epoch, the ids it was tuned on); use it as ``--encoder tuned:PATH``.

A head fitted on features of the very memes the tower was tuned on sees them better separated
than unseen memes will be. ``fraction`` < 1 tunes on a stratified part of the training split
only, so a head can be fitted on the held-out part (``held_out_ids`` in ``tuning.json``).
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memetrm.data import get_dataset
from memetrm.data.fields import join_texts, joined_parts
from memetrm.data.records import MemeRecord
from memetrm.errors import ConfigError, DataError
from memetrm.provenance import provenance
from memetrm.utils import atomic_write_dir

LOSSES = ("batch-all", "batch-hard", "batch-semi-hard", "contrastive")


@dataclass
class TuneConfig:
    """What ``memetrm tune`` trains; every field lands in ``tuning.json``."""

    #: packaged name (all-MiniLM-L6-v2, all-mpnet-base-v2) or a sentence-transformers folder
    tower: str = "all-MiniLM-L6-v2"
    #: the field the tower reads: ``text``, ``caption`` or a joined ``text+caption``
    field: str = "text+caption"
    loss: str = "batch-all"
    epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    #: LoRA rank (0: full fine-tuning)
    lora_rank: int = 0
    #: train only the top N transformer layers (0: all)
    train_layers: int = 0
    #: share of the training split tuned on (stratified); the rest is held out for heads
    fraction: float = 1.0
    max_seq_length: int = 64
    #: training memes the dev probe is fitted on each epoch (0: all)
    probe_sample: int = 2000
    #: stop after this many optimizer steps (-1: the full epochs); benchmarks and tests
    max_steps: int = -1
    #: score the dev probe (False: a speed benchmark, dev AUROC not measured)
    probe: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"--loss must be one of {LOSSES}, got {self.loss!r}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.batch_size < 4:
            raise ConfigError("--batch-size must be at least 4 (a batch needs both labels twice)")


def tune_split(records: Sequence[MemeRecord], fraction: float, seed: int
               ) -> tuple[list[MemeRecord], list[MemeRecord]]:
    """(tuned on, held out): a stratified ``fraction`` of the labelled records."""
    if fraction >= 1:
        return list(records), []
    rng = random.Random(seed)
    tuned, held = [], []
    for label in (0, 1):
        group = [r for r in records if r.label == label]
        rng.shuffle(group)
        n = round(fraction * len(group))
        tuned += group[:n]
        held += group[n:]
    order = {r.id: i for i, r in enumerate(records)}
    return sorted(tuned, key=lambda r: order[r.id]), sorted(held, key=lambda r: order[r.id])


def _texts(records: Sequence[MemeRecord], field: str, where: str) -> list[str]:
    missing = [r.id for r in records if not all(r.texts.get(p, "").strip() for p in joined_parts(field))]
    if missing:
        raise DataError(f"{where}: {len(missing)} record(s) lack field {field!r}, ids: "
                        f"{', '.join(missing[:10])}")
    return [join_texts(r.texts, field) for r in records]


def contrastive_pairs(texts: list[str], labels: list[int], seed: int) -> dict[str, list]:
    """SetFit's pairs: each text with a random same-label and a random other-label partner."""
    rng = random.Random(seed)
    by_label = {c: [i for i, y in enumerate(labels) if y == c] for c in (0, 1)}
    a, b, same = [], [], []
    for i, y in enumerate(labels):
        for partner_label in (y, 1 - y):
            j = rng.choice(by_label[partner_label])
            a.append(texts[i])
            b.append(texts[j])
            same.append(int(partner_label == y))
    return {"sentence1": a, "sentence2": b, "label": same}


class DevProbe:
    """sentence-transformers evaluator: dev AUROC of a logistic probe on the tower's embeddings."""

    def __init__(self, train: tuple[list[str], list[int]], dev: tuple[list[str], list[int]],
                 batch_size: int = 128) -> None:
        from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

        self.train, self.dev, self.batch_size = train, dev, batch_size
        self.history: list[dict[str, float]] = []
        #: time spent scoring, so the training cost per epoch can leave it out
        self.seconds = 0.0
        # a subclass made here, so importing this module does not import sentence-transformers
        probe = self

        class _Evaluator(BaseEvaluator):
            def __init__(self) -> None:
                super().__init__()
                self.primary_metric = "dev_auroc"

            def __call__(self, model, output_path=None, epoch: float = -1, steps: int = -1,
                         **_: Any) -> dict[str, float]:
                score = probe.score(model)
                probe.history.append({"epoch": float(epoch), "steps": float(steps),
                                      "dev_auroc": score})
                return {"dev_auroc": score}

        self.evaluator = _Evaluator()

    def score(self, model: Any) -> float:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score

        def embed(texts: list[str]) -> np.ndarray:
            return model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                show_progress_bar=False)

        t0 = time.perf_counter()
        clf = LogisticRegression(max_iter=2000).fit(embed(self.train[0]), self.train[1])
        score = float(roc_auc_score(self.dev[1], clf.decision_function(embed(self.dev[0]))))
        self.seconds += time.perf_counter() - t0
        return score


def _loss(name: str, model: Any) -> Any:
    from sentence_transformers.sentence_transformer import losses

    return {"batch-all": losses.BatchAllTripletLoss,
            "batch-hard": losses.BatchHardSoftMarginTripletLoss,
            "batch-semi-hard": losses.BatchSemiHardTripletLoss,
            "contrastive": losses.OnlineContrastiveLoss}[name](model)


def _prepare_model(cfg: TuneConfig) -> Any:
    """The tower with LoRA adapters or its lower layers frozen, as ``cfg`` asks."""
    from memetrm.encoders.towers import text_tower

    model = text_tower(cfg.tower)
    model.max_seq_length = cfg.max_seq_length
    backbone = model[0].auto_model
    if cfg.lora_rank:
        from peft import LoraConfig, get_peft_model

        model[0].model = get_peft_model(backbone, LoraConfig(
            r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, lora_dropout=0.1,
            target_modules="all-linear"))
    elif cfg.train_layers:
        layers = _encoder_layers(backbone)
        if cfg.train_layers > len(layers):
            raise ConfigError(f"--train-layers {cfg.train_layers}: the tower has {len(layers)}")
        backbone.requires_grad_(False)
        for layer in layers[-cfg.train_layers:]:
            layer.requires_grad_(True)
    return model


def _encoder_layers(backbone: Any) -> Sequence[Any]:
    for name in ("encoder.layer", "encoder.layers", "layers"):
        obj = backbone
        for part in name.split("."):
            obj = getattr(obj, part, None)
        if obj is not None:
            return obj
    raise ConfigError(f"--train-layers: cannot find the layers of {type(backbone).__name__}")


def tune_text_tower(dataset: str, out: str | Path, cfg: TuneConfig,
                    data_root: str | Path | None = None,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Tune ``cfg.tower`` on the dataset's training split, select the epoch on its dev split,
    and write the tuned tower to ``out`` (atomically). Returns what ``tuning.json`` holds."""
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    ds = get_dataset(dataset, data_root)
    train_all = [r for r in ds.records(ds.train_split) if r.label is not None]
    dev = [r for r in ds.records(ds.dev_split) if r.label is not None]
    tuned, held_out = tune_split(train_all, cfg.fraction, cfg.seed)
    x = _texts(tuned, cfg.field, f"{ds.identity}/{ds.train_split}")
    y = [int(r.label) for r in tuned]
    if min(sum(y), len(y) - sum(y)) < 2:
        raise DataError(f"{ds.identity}: tuning needs at least 2 memes of each label")
    rng = random.Random(cfg.seed)
    probe_idx = (sorted(rng.sample(range(len(x)), cfg.probe_sample))
                 if 0 < cfg.probe_sample < len(x) else list(range(len(x))))
    probe = DevProbe(([x[i] for i in probe_idx], [y[i] for i in probe_idx]),
                     (_texts(dev, cfg.field, f"{ds.identity}/{ds.dev_split}"),
                      [int(r.label) for r in dev]))
    torch.manual_seed(cfg.seed)
    model = _prepare_model(cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dev_before = probe.score(model) if cfg.probe else None
    if dev_before is not None:
        log(f"dev AUROC before tuning (logistic probe): {dev_before:.4f} ({probe.seconds:.0f} s)")
    data = (Dataset.from_dict(contrastive_pairs(x, y, cfg.seed)) if cfg.loss == "contrastive"
            else Dataset.from_dict({"sentence": x, "label": y}))
    select = cfg.max_steps < 0 and cfg.probe
    with tempfile.TemporaryDirectory() as checkpoints, atomic_write_dir(Path(out)) as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=checkpoints, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr,
            warmup_ratio=cfg.warmup_ratio, seed=cfg.seed,
            eval_strategy="epoch" if select else "no", save_strategy="epoch" if select else "no",
            load_best_model_at_end=select, metric_for_best_model="dev_auroc",
            greater_is_better=True, save_total_limit=1, logging_steps=10, report_to="none",
            use_cpu=not torch.cuda.is_available(), dataloader_drop_last=True, disable_tqdm=True)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                             loss=_loss(cfg.loss, model),
                                             evaluator=probe.evaluator if select else None)
        scoring_before = probe.seconds
        t0 = time.perf_counter()
        train_out = trainer.train()
        seconds = time.perf_counter() - t0 - (probe.seconds - scoring_before)
        if cfg.lora_rank:
            model[0].model = model[0].auto_model.merge_and_unload()
        if cfg.probe and not probe.history:
            probe.history.append({"epoch": -1.0, "steps": float(train_out.global_step),
                                  "dev_auroc": probe.score(model)})
        model.save(str(tmp))
        steps = train_out.global_step
        epochs_done = steps * cfg.batch_size / len(data)
        summary = {
            "config": asdict(cfg), "dataset": ds.identity, "trainable_params": trainable,
            "train_memes": len(tuned), "rows": len(data), "steps": steps,
            "dev_auroc_before": dev_before, "history": probe.history,
            "dev_auroc": max((h["dev_auroc"] for h in probe.history), default=None),
            "train_seconds": seconds, "probe_seconds": probe.seconds,
            "seconds_per_epoch": seconds / epochs_done if epochs_done else math.nan,
            "rows_per_second": steps * cfg.batch_size / max(seconds, 1e-9),
            "tuned_ids": [r.id for r in tuned] if held_out else "all",
            "held_out_ids": [r.id for r in held_out],
            "provenance": provenance(threads=torch.get_num_threads()),
        }
        (tmp / "tuning.json").write_text(json.dumps(summary, indent=1))
    log(f"dev AUROC after tuning: {summary['dev_auroc']}; {steps} steps in {seconds:.0f} s")
    return summary
