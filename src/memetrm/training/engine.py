"""The one training engine every head goes through.

AdamW with linear warmup + cosine decay, early stopping and checkpoint selection on dev AUROC,
optional EMA (evaluated instead of the live weights). Heads with deep supervision take several
optimizer steps per batch through the ``step`` callback of ``Head.training_step``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from memetrm.evaluation.metrics import auroc
from memetrm.features.featureset import FeatureSet
from memetrm.heads.base import Head


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    grad_clip: float = 1.0
    #: epochs without dev-AUROC improvement before stopping (0 = never stop early)
    patience: int = 8
    #: EMA decay (TRM uses 0.999); None disables it
    ema: float | None = None
    seed: int = 0
    #: dev metric for the decision threshold: "f1" or "accuracy"
    threshold_metric: str = "f1"
    #: torch CPU threads while training; heads are tiny, so more threads only add
    #: synchronisation (3x slower with 2 threads on a loaded 2-core machine). None = leave as is
    threads: int | None = 1


@dataclass
class FitResult:
    head: Head  # the model to evaluate: the EMA copy when EMA is on, best dev epoch loaded
    best_epoch: int
    dev_auroc: float
    history: list[dict[str, float]] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    live_head: Head | None = None  # the raw trained weights (differs from ``head`` under EMA)


@torch.no_grad()
def predict(head: Head, fs: FeatureSet, batch_size: int = 512) -> dict[str, torch.Tensor]:
    """Concatenated ``head.predict`` outputs over a feature set, in eval mode."""
    was_training = head.training
    head.eval()
    outs: dict[str, list[torch.Tensor]] = {}
    for b in fs.batches(batch_size):
        for k, v in head.predict(b).items():
            outs.setdefault(k, []).append(v.detach().cpu())
    head.train(was_training)
    return {k: torch.cat(v) for k, v in outs.items()}


@contextlib.contextmanager
def torch_threads(n: int | None):
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(head: Head, train: FeatureSet, dev: FeatureSet, cfg: TrainConfig,
        on_epoch=None) -> FitResult:
    with torch_threads(cfg.threads):
        return _fit(head, train, dev, cfg, on_epoch)


def _fit(head: Head, train: FeatureSet, dev: FeatureSet, cfg: TrainConfig,
         on_epoch=None) -> FitResult:
    from transformers import get_cosine_schedule_with_warmup  # heavy import: only when training

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size) * head.optimizer_steps_per_batch
    total = max(1, cfg.epochs * steps_per_epoch)
    sched = get_cosine_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    ema = (AveragedModel(head, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
           if cfg.ema else None)
    eval_model: Head = ema.module if ema else head

    def step(loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(head.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(head)

    y_dev = dev.labels.numpy()
    best, best_epoch, best_state, bad = -math.inf, -1, None, 0
    history = []
    for epoch in range(cfg.epochs):
        head.train()
        losses = [head.training_step(b, step) for b in train.batches(cfg.batch_size, True, gen)]
        score = auroc(y_dev, predict(eval_model, dev)["prob"].numpy())
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "dev_auroc": score})
        if on_epoch:
            on_epoch(history[-1])
        if score > best:
            best, best_epoch, bad = score, epoch, 0
            best_state = copy.deepcopy(eval_model.state_dict())
            live_state = copy.deepcopy(head.state_dict())
        else:
            bad += 1
            if cfg.patience and bad >= cfg.patience:
                break
    if best_state is not None:
        eval_model.load_state_dict(best_state)
        head.load_state_dict(live_state)
    eval_model.eval()
    calibration = eval_model.calibrate(dev.batch())
    return FitResult(eval_model, best_epoch, best, history, calibration, live_head=head)
