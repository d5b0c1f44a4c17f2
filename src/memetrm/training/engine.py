"""The one training engine: every head and every alignment objective trains through ``fit``.

AdamW with parameter groups (no weight decay on tensors with fewer than 2 dimensions or on what
a model names in ``no_weight_decay``), linear warmup then cosine decay or a constant LR, early
stopping and
checkpoint selection on a dev score (AUROC by default), optional EMA (evaluated instead of the
live weights). Models with deep supervision take several optimizer steps per batch through the
``step`` callback of ``training_step``. A model with a memory gets the training memes as its
neighbour context before training, in every copy that trains or is scored (the EMA copy too),
and fits its memory on them afterwards (``Memory.fit_memory``: never on dev).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from memetrm.config import check_type
from memetrm.devices import resolve_device
from memetrm.errors import ConfigError
from memetrm.evaluation.metrics import auroc, parse_threshold_metric
from memetrm.features.featureset import FeatureSet
from memetrm.heads.base import Recursive, memories
from memetrm.layers import Batch, Trainable

#: ``score(model, dev, device) -> float``: higher is better; picks the epoch to keep.
ScoreFn = Callable[[Trainable, FeatureSet, torch.device], float]
#: LR schedules after the linear warmup
SCHEDULES = ("cosine", "constant")
#: (low, high, low allowed) of each number of ``TrainConfig``: finite (NaN is in no range),
#: and within what trains a head
NUMBER_RANGES = {"lr": (0.0, 10.0, False), "weight_decay": (0.0, 10.0, True),
                 "warmup_ratio": (0.0, 1.0, True), "grad_clip": (0.0, 1e6, True)}


@dataclass
class TrainConfig:
    """Optimisation settings shared by every model the engine trains."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    #: AdamW (beta1, beta2); YAML and ``--set`` give a list, which is converted
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.05
    #: after the linear warmup: "cosine" decays to 0, "constant" holds the LR (the TRM reference)
    schedule: str = "cosine"
    #: max gradient norm; 0 disables clipping
    grad_clip: float = 1.0
    #: epochs without dev improvement before stopping (0 = never stop early)
    patience: int = 8
    #: EMA decay (TRM uses 0.999); None disables it
    ema: float | None = None
    seed: int = 0
    #: how the decision threshold is chosen on dev: f1, accuracy, balanced-accuracy,
    #: precision>=P, recall>=R or fpr<=F (see ``evaluation.metrics.choose_threshold``)
    threshold_metric: str = "balanced-accuracy"
    #: torch CPU threads while training; None: ``--threads`` / MEMETRM_THREADS, else 1
    threads: int | None = None
    #: skip a ragged last batch (contrastive objectives need negatives in every batch)
    drop_last: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be a positive integer, got {getattr(self, name)!r}")
        for name, (low, high, closed) in NUMBER_RANGES.items():
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not (number and (low <= value if closed else low < value) and value <= high):
                raise ConfigError(f"train.{name} must be a number in {'[' if closed else '('}"
                                  f"{low:g}, {high:g}], got {value!r}")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise ConfigError(f"train.ema must be a decay in [0, 1) or null, got {self.ema!r}")
        parse_threshold_metric(self.threshold_metric)
        betas = self.betas
        if (not isinstance(betas, list | tuple) or len(betas) != 2
                or not all(isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1
                           for b in betas)):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")


@dataclass
class FitResult:
    #: the model to evaluate: the EMA copy when EMA is on, with the best dev epoch loaded
    head: Trainable
    best_epoch: int
    dev_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    #: the raw trained weights (differs from ``head`` under EMA)
    live_head: Trainable | None = None


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay for weight matrices only (nanoGPT's ``configure_optimizers`` rule),
    never for biases, norm gains, embeddings of one vector, scalars, or what the model names."""
    named = model.no_weight_decay() if isinstance(model, Trainable) else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name in named else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def predict(head: Any, fs: FeatureSet, batch_size: int = 512,
            device: str | torch.device | None = None, trace: bool = False
            ) -> dict[str, torch.Tensor]:
    """Concatenated ``head.predict`` outputs over a feature set, in eval mode, on the CPU.

    ``trace`` adds the full-depth ``reasoning_trace`` (B, S) of a head that has one but does not
    return it from ``predict`` (an early-exit head): a second pass, paid only when asked.
    """
    device = next(head.parameters()).device if device is None else resolve_device(device)
    was_training = head.training
    head.eval()
    outs: dict[str, list[torch.Tensor]] = {}
    for b in fs.batches(batch_size, device=device):
        out = head.predict(b)
        if trace and "trace" not in out and isinstance(head, Recursive):
            out["trace"] = head.reasoning_trace(b)
        for k, v in out.items():
            outs.setdefault(k, []).append(v.detach().cpu())
    head.train(was_training)
    return {k: torch.cat(v) for k, v in outs.items()}


def tensor_auroc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """AUROC of tensors on any device (the metric models get for dev-only calibration)."""
    return auroc(labels.detach().cpu().numpy(), scores.detach().float().cpu().numpy())


def auroc_score(model: Trainable, dev: FeatureSet, device: torch.device) -> float:
    """Dev AUROC of a head's probabilities: the default selection score."""
    return tensor_auroc(dev.labels, predict(model, dev, device=device)["prob"])


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` CPU threads inside the block (None: leave as is), then restore the count."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: CPU threads for head training unless asked otherwise: the heads are tiny, so more threads
#: mostly wait on each other, and on a shared CPU they slow every process down
DEFAULT_TRAIN_THREADS = 1


def train_threads(cfg: TrainConfig) -> int:
    """``cfg.threads``, else ``--threads`` / MEMETRM_THREADS, else ``DEFAULT_TRAIN_THREADS``."""
    env = os.environ.get("MEMETRM_THREADS", "").strip()
    if cfg.threads:
        return cfg.threads
    if env.isdigit() and int(env) > 0:
        return int(env)
    return DEFAULT_TRAIN_THREADS


def fit(model: Trainable, train: FeatureSet, dev: FeatureSet | None, cfg: TrainConfig,
        score: ScoreFn = auroc_score,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        device: str | torch.device = "auto") -> FitResult:
    """Train ``model`` on ``train`` on ``device`` (auto: CUDA, then MPS, then CPU); keep the
    epoch with the best ``score`` on ``dev``.

    Without a dev set the last epoch is kept and nothing is calibrated.
    """
    device = resolve_device(device)
    with torch_threads(train_threads(cfg)):
        return _fit(model.to(device), train, dev, cfg, score, on_epoch, device)


def _fit(model: Trainable, train: FeatureSet, dev: FeatureSet | None, cfg: TrainConfig,
         score: ScoreFn, on_epoch: Callable[[dict[str, float]], None] | None,
         device: torch.device) -> FitResult:
    # heavy import: only when training
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    torch.manual_seed(cfg.seed)
    dev_batch = dev.batch(device=device) if dev is not None else None
    solved = (model.solve(train.batch(device=device), dev_batch, tensor_auroc)
              if _overrides(model, "solve") else None)
    if solved is not None:
        model.eval()
        dev_score = score(model, dev, device) if dev is not None else math.nan
        return FitResult(model, 0, dev_score, [{"epoch": 0, "dev_score": dev_score}], solved,
                         live_head=model)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    n_batches = (len(train) // cfg.batch_size if cfg.drop_last and len(train) >= cfg.batch_size
                 else math.ceil(len(train) / cfg.batch_size))
    total = max(1, cfg.epochs * n_batches * model.optimizer_steps_per_batch)
    warmup = int(cfg.warmup_ratio * total)
    sched = (get_constant_schedule_with_warmup(opt, warmup) if cfg.schedule == "constant"
             else get_cosine_schedule_with_warmup(opt, warmup, total))
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
           if cfg.ema else None)
    eval_model: Trainable = ema.module if ema else model
    begins = _overrides(model, "begin_epoch")
    train_batch: Batch = train.batch(device=device) if begins or memories(model) else {}
    for memory in (m for c in ([model, eval_model] if ema else [model]) for m in memories(c)):
        memory.remember(train_batch, train.ids)  # the neighbour context of training and scoring

    def step(loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(model)

    best, best_epoch, bad = -math.inf, -1, 0
    best_state = live_state = None
    history: list[dict[str, float]] = []
    for epoch in range(cfg.epochs):
        model.train()
        if begins:
            model.begin_epoch(train_batch)
        losses = [model.training_step(b, step)
                  for b in train.batches(cfg.batch_size, True, gen, device, cfg.drop_last)]
        row = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else math.nan}
        if dev is not None:
            eval_model.eval()
            row["dev_score"] = score(eval_model, dev, device)
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if dev is None:
            continue
        if row["dev_score"] > best:
            best, best_epoch, bad = row["dev_score"], epoch, 0
            best_state = copy.deepcopy(eval_model.state_dict())
            live_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if cfg.patience and bad >= cfg.patience:
                break
    if best_state is not None:
        eval_model.load_state_dict(best_state)
        model.load_state_dict(live_state)
    eval_model.eval()
    calibration: dict[str, Any] = {}
    for memory in memories(eval_model):
        calibration.update(memory.fit_memory(train_batch, train.ids, tensor_auroc))
    if dev_batch is not None:
        calibration.update(eval_model.calibrate(dev_batch, tensor_auroc))
    if dev is None:
        best_epoch = len(history) - 1
    return FitResult(eval_model, best_epoch, best, history, calibration, live_head=model)


def _overrides(model: Trainable, hook: str) -> bool:
    """Whether ``model`` implements an optional hook (``solve``, ``begin_epoch``); the full
    train batch is built only then."""
    return getattr(type(model), hook) is not getattr(Trainable, hook)


def resolve_train_config(*layers: dict[str, Any]) -> TrainConfig:
    """``TrainConfig`` defaults < each mapping in turn; unknown keys are named."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(merged) - known
    if unknown:
        raise ConfigError(f"unknown train option(s) {sorted(unknown)}; known: {sorted(known)}")
    hints = typing.get_type_hints(TrainConfig)
    for key, value in merged.items():
        check_type(f"train.{key}", value, hints[key])
    return TrainConfig(**merged)
