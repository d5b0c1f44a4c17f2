"""Tiny Recursive Model heads (Jolicoeur-Martineau 2025, "Less is More").

One tiny shared network ``f`` refines a latent state ``z`` and an answer state ``y`` given the
input ``x``: ``latent_recursion`` applies ``z <- f(z + x + y)`` n times, then ``y <- f(y + z)``.
``deep_recursion`` runs that T times, the first T-1 under ``no_grad``, so the effective depth is
``T * (n + 1) * layers`` while memory is that of one pass. Deep supervision repeats deep
recursion ``n_sup`` times from the previous (detached) state, with a loss and an optimizer step
each time; at inference an optional Q-head (ACT) lets easy examples stop early.

``trm`` reads the pooled embeddings (blocks are SwiGLU MLPs); ``trm-att`` reads token features
and mixes them with self-attention, y and z then being sequences aligned with the tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from memetrm.errors import ConfigError
from memetrm.heads.base import Head, HeadConfig, Prediction, Recursive
from memetrm.heads.registry import register_head
from memetrm.layers import Batch, FieldNorm, FieldTokens, MetricFn, StepFn, masked_mean
from memetrm.layers.recursion import AttentionBlock, MLPBlock, select_rows

#: Thresholds ``calibrate`` tries; 1.0 never halts (sigmoid(q) > 1 is impossible) = full depth.
HALT_GRID = np.round(np.arange(0.05, 1.0001, 0.01), 2)
#: How much dev AUROC halting may cost relative to full depth.
HALT_AUROC_TOLERANCE = 0.01


@dataclass
class TRMConfig(HeadConfig):
    hidden: int = 128
    expansion: float = 4.0
    layers: int = 2
    n: int = 3
    T: int = 3
    n_sup: int = 8
    act: bool = False
    #: with ``act``: halt rows during training once their Q-logit is positive (the reference);
    #: False trains the Q-head but runs every row through all ``n_sup`` steps
    act_train: bool = True
    #: probability that a row gets a random minimum depth in [2, n_sup] before it may halt
    halt_exploration: float = 0.1
    #: weight of the Q-head's BCE in each step's loss (0.5 in the reference)
    q_loss_weight: float = 0.5
    dropout: float = 0.0


@dataclass
class TRMAttConfig(TRMConfig):
    heads: int = 4


# The origin recipe (blog post 000: n=3, T=3 from its write-up, n_sup=8 from its config) and its
# training options, with the reference's AdamW betas; hidden stays at 128 rather than its 512
# so a 30-epoch run fits on a CPU.
ORIGIN_TRAIN = {"lr": 1e-4, "weight_decay": 0.05, "epochs": 30, "betas": (0.9, 0.95)}
#: the reference's optimisation: weights averaged with EMA 0.999, LR warmed up then constant
REFERENCE_TRAIN = {**ORIGIN_TRAIN, "ema": 0.999, "schedule": "constant"}


@register_head("trm", train=ORIGIN_TRAIN)
@register_head("trm-act", train=ORIGIN_TRAIN, act=True, act_train=True)
@register_head("trm-paper", train=ORIGIN_TRAIN, in_all=False, n=6, T=3, n_sup=16)
@register_head("trm-ema", train=REFERENCE_TRAIN, in_all=False)
class TRMHead(Recursive, Head):
    """Tiny Recursive Model over the pooled fields: latent and deep recursion, deep supervision."""

    config_class = TRMConfig
    #: with ACT, the halting probability past which a row stops; 1.0 never halts (full depth)
    #: until ``calibrate`` picks a threshold on dev, so checkpoint selection during training
    #: scores the full-depth answer
    fitted_attrs = ("halt_threshold_",)

    def __init__(self, cfg: TRMConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        for key in ("hidden", "layers", "n", "T", "n_sup"):
            if getattr(cfg, key) < 1:
                raise ConfigError(f"{type(self).__name__}: {key} must be >= 1, got {getattr(cfg, key)}")
        if not 0 <= cfg.halt_exploration <= 1 or cfg.q_loss_weight < 0:
            raise ConfigError(f"{type(self).__name__}: halt_exploration must be in [0, 1] and "
                              f"q_loss_weight >= 0, got {cfg.halt_exploration}, {cfg.q_loss_weight}")
        d = cfg.hidden
        self._build_input()
        # Fixed random starting states, as in the reference implementation (truncated normal,
        # std 1 = the post-norm scale); saved with the weights so a reload predicts the same.
        self.register_buffer("y_init", nn.init.trunc_normal_(torch.empty(d), std=1.0, a=-2, b=2))
        self.register_buffer("z_init", nn.init.trunc_normal_(torch.empty(d), std=1.0, a=-2, b=2))
        self.blocks = nn.ModuleList(self._make_block() for _ in range(cfg.layers))
        self.out = nn.Linear(d, 1)
        self.q_head = nn.Linear(d, 1) if cfg.act else None
        if self.q_head is not None:
            # the reference's init: sigmoid(-5) ~ 0.007, so no row halts before the Q-head learns
            nn.init.zeros_(self.q_head.weight)
            nn.init.constant_(self.q_head.bias, -5.0)
        self.halt_threshold_ = 1.0

    # --- variant hooks (overridden by the token-sequence head) ---------------------------------

    def _build_input(self) -> None:
        self.norm = FieldNorm(self.input_dims)
        self.proj = nn.Linear(self.norm.out_dim, self.cfg.hidden)

    def _make_block(self) -> nn.Module:
        return MLPBlock(self.cfg.hidden, self.cfg.expansion, self.cfg.dropout)

    def embed(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` and its token mask (None for pooled input)."""
        return self.proj(self.norm(batch)), None

    def _pool(self, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return y

    # --- recursion ------------------------------------------------------------------------------

    def net(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The one tiny network ``f`` shared by every z and y update."""
        for blk in self.blocks:
            h = blk(h, mask)
        return h

    def latent_recursion(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
                         mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(self.cfg.n):
            z = self.net(z + x + y, mask)
        y = self.net(y + z, mask)
        return y, z

    def deep_recursion(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
                       mask: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """T latent recursions, only the last one differentiable: ``(y, z, logit, q_logit)``."""
        with torch.no_grad():
            for _ in range(self.cfg.T - 1):
                y, z = self.latent_recursion(x, y, z, mask)
        y, z = self.latent_recursion(x, y, z, mask)
        pooled = self._pool(y, mask)
        q = self.q_head(pooled).squeeze(-1) if self.q_head is not None else None
        return y, z, self.out(pooled).squeeze(-1), q

    def supervision_step(self, batch: Batch, y: torch.Tensor | None, z: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One deep recursion from ``(y, z)`` (None: the initial states): ``(y, z, logit, q)``.

        ``x`` is re-embedded every step because the caller may backprop and step the optimizer
        in between, which frees the previous graph and changes the projection.
        """
        x, mask = self.embed(batch)
        if y is None or z is None:
            y, z = self.y_init.expand_as(x), self.z_init.expand_as(x)
        return self.deep_recursion(x, y, z, mask)

    def supervision_steps(self, batch: Batch) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Yield ``(logit, q_logit)`` after each of the ``n_sup`` deep recursions, every row.

        y and z are detached so no gradient crosses a supervision step.
        """
        y = z = None
        for _ in range(self.cfg.n_sup):
            y, z, logit, q = self.supervision_step(batch, y, z)
            yield logit, q
            y, z = y.detach(), z.detach()

    # --- Head contract --------------------------------------------------------------------------

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits after full depth (all ``n_sup`` steps)."""
        *_, (logit, _) = self.supervision_steps(batch)
        return logit

    @property
    def optimizer_steps_per_batch(self) -> int:
        """``n_sup``; with ACT training an upper bound, as a batch stops once every row halts."""
        return self.cfg.n_sup

    def step_loss(self, logit: torch.Tensor, q: torch.Tensor | None,
                  labels: torch.Tensor) -> torch.Tensor:
        """BCE on the answer, plus weighted BCE teaching the Q-head whether that answer is right."""
        loss = self.loss(logit, labels)
        if q is not None:
            correct = ((logit.detach() > 0) == (labels > 0.5)).float()
            loss = loss + self.cfg.q_loss_weight * F.binary_cross_entropy_with_logits(q, correct)
        return loss

    def min_halt_steps(self, rows: int, device: torch.device) -> torch.Tensor:
        """Halt exploration as in the reference: with probability ``halt_exploration`` a row must
        run a random number of steps in [2, n_sup] before it may halt; otherwise 1 (no minimum)."""
        explore = torch.rand(rows, device=device) < self.cfg.halt_exploration
        depth = torch.randint(2, self.cfg.n_sup + 1, (rows,), device=device)
        return torch.where(explore, depth, torch.ones_like(depth))

    def training_step(self, batch: Batch, step: StepFn) -> float:
        """``n_sup`` supervision steps, each with its optimizer step; the mean loss.

        With ACT training a row halts once its Q-logit is positive (and its exploration minimum
        is reached); later steps run only on the rows still active, and none once all halted.
        """
        halting = self.q_head is not None and self.cfg.act_train
        # drawn only when halting, so training without it consumes the same random numbers
        min_steps = (self.min_halt_steps(batch["label"].shape[0], batch["label"].device)
                     if halting else None)
        losses = []
        y = z = None
        for s in range(1, self.cfg.n_sup + 1):
            y, z, logit, q = self.supervision_step(batch, y, z)
            loss = self.step_loss(logit, q, batch["label"])
            step(loss)
            losses.append(loss.item())
            y, z = y.detach(), z.detach()
            if q is not None and min_steps is not None:
                active = (q.detach() <= 0) | (s < min_steps)
                if not active.any():
                    break
                batch, min_steps = select_rows(batch, active), min_steps[active]
                y, z = y[active], z[active]
        return sum(losses) / len(losses)

    @torch.no_grad()
    def unroll(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hateful prob and halting prob after every step, each (B, n_sup); halting None w/o ACT."""
        probs, halts = [], []
        for logit, q in self.supervision_steps(batch):
            probs.append(torch.sigmoid(logit))
            if q is not None:
                halts.append(torch.sigmoid(q))
        return torch.stack(probs, 1), torch.stack(halts, 1) if halts else None

    def halting_steps(self, halts: torch.Tensor, threshold: float) -> torch.Tensor:
        """Steps used per example: the first step whose halting prob exceeds ``threshold``."""
        over = halts > threshold
        first = over.long().argmax(1) + 1  # argmax returns the first maximal index
        return torch.where(over.any(1), first, torch.full_like(first, self.cfg.n_sup))

    @staticmethod
    def prob_at(trace: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        return trace.gather(1, (steps - 1).unsqueeze(1)).squeeze(1)

    @torch.no_grad()
    def predict(self, batch: Batch) -> Prediction:
        """``prob`` and ``steps`` per row. Without ACT every row runs full depth, so the full
        ``trace`` comes at no cost; with ACT each row stops computing at its first step whose
        halting prob exceeds ``halt_threshold_`` (``reasoning_trace`` gives the full trace)."""
        if self.q_head is None:
            trace, _ = self.unroll(batch)
            steps = torch.full((trace.shape[0],), self.cfg.n_sup, dtype=torch.long,
                               device=trace.device)
            return {"prob": trace[:, -1], "trace": trace, "steps": steps}
        return self.predict_early_exit(batch)

    @torch.no_grad()
    def predict_early_exit(self, batch: Batch) -> Prediction:
        """Supervision steps on the still-active rows only; ``prob`` is each row's answer at its
        halting step, the same as ``prob_at(trace, halting_steps(halts, threshold))``."""
        threshold = self.halt_threshold_
        first = next(iter(batch.values()))
        n = first.shape[0]
        rows = torch.arange(n, device=first.device)
        prob = torch.empty(n, device=rows.device)
        steps = torch.full((n,), self.cfg.n_sup, dtype=torch.long, device=rows.device)
        y = z = None
        for s in range(1, self.cfg.n_sup + 1):
            y, z, logit, q = self.supervision_step(batch, y, z)
            assert q is not None  # an ACT head always has its Q-head
            halted = (torch.sigmoid(q) > threshold) | (s == self.cfg.n_sup)
            prob[rows[halted]] = torch.sigmoid(logit[halted])
            steps[rows[halted]] = s
            active = ~halted
            if not active.any():
                break
            batch, rows, y, z = select_rows(batch, active), rows[active], y[active], z[active]
        return {"prob": prob, "steps": steps}

    def reasoning_trace(self, batch: Batch) -> torch.Tensor:
        """(B, n_sup) hateful probability after every supervision step, always at full depth."""
        return self.unroll(batch)[0]

    def calibrate(self, dev_batch: Batch, metric: MetricFn) -> dict[str, Any]:
        """Pick the halting threshold with the fewest mean dev steps that keeps dev AUROC.

        Only the dev split is seen; without ACT there is nothing to choose. ``metric`` is the
        engine's AUROC; a single-class dev set has none (NaN), so no threshold qualifies and the
        head keeps full depth.
        """
        if self.q_head is None:
            return {}
        labels = dev_batch["label"]
        trace, halts = self.unroll(dev_batch)
        full = metric(labels, trace[:, -1])
        best = (float(self.cfg.n_sup), 1.0, full)  # (mean steps, threshold, auroc)
        for thr in HALT_GRID[::-1]:  # high to low: ties keep the more conservative threshold
            steps = self.halting_steps(halts, float(thr))
            score = metric(labels, self.prob_at(trace, steps))
            mean_steps = steps.float().mean().item()
            if score >= full - HALT_AUROC_TOLERANCE and mean_steps < best[0]:
                best = (mean_steps, float(thr), score)
        mean_steps, thr, score = best
        self.halt_threshold_ = thr
        return {"halt_threshold": thr, "mean_steps": mean_steps, "dev_auroc_halted": score,
                "dev_auroc_full": full, "n_sup": self.cfg.n_sup}


@register_head("trm-att", in_all=False)
class TRMAttHead(TRMHead):
    """TRM-Att over the concatenated token sequences of all fields.

    y and z are sequences aligned with the tokens (as in the paper, where ``x + y + z`` is summed
    position-wise), each initialised from one learned vector; padded tokens are masked out of
    attention and of the mean-pooled answer the classifier reads.
    """

    config_class = TRMAttConfig
    needs_tokens = True

    def __init__(self, cfg: TRMAttConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        if cfg.hidden % cfg.heads:
            raise ConfigError(
                f"trm-att: hidden ({cfg.hidden}) must be divisible by heads ({cfg.heads})")
        super().__init__(cfg, input_dims, token_dims)

    def _build_input(self) -> None:
        # per-field projections plus modality embeddings: the network can tell image from text
        self.tokens = FieldTokens(self.token_dims or self.input_dims, self.cfg.hidden)

    def _make_block(self) -> nn.Module:
        return AttentionBlock(self.cfg.hidden, self.cfg.heads, self.cfg.expansion, self.cfg.dropout)

    def embed(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.tokens(batch)

    def _pool(self, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return masked_mean(y, mask)
