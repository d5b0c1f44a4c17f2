"""Retrieval-augmented head, after retrieval-guided contrastive learning (RGCL, ACL 2024).

A memory holds the training memes' embeddings (per-field LayerNorm without learned gains,
concatenated, L2-normalised: a fixed function of the frozen features, so memes can be added
later without retraining). The logit is a learned MLP scorer's plus ``alpha`` times the
label-weighted vote of the k most similar memes in memory, softmax-weighted by similarity /
temperature; k, temperature and alpha are chosen on dev after training. ``predict`` also
returns the neighbours, so a moderator sees which labelled memes drove a score.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from memetrm.heads.base import HeadConfig, Memory, Prediction
from memetrm.heads.registry import register_head
from memetrm.heads.simple import MLPConfig, MLPHead
from memetrm.layers import Batch, MemoryBank, MetricFn

K_GRID = (5, 10, 20, 50)
TEMPERATURE_GRID = (0.02, 0.05, 0.1)
ALPHA_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def field_key(batch: Batch, fields: list[str]) -> torch.Tensor:
    """Per-field LayerNorm without gains, concatenated, unit length: a fixed function of the
    frozen features, under which memes are stored and looked up."""
    parts = [F.layer_norm(batch[f].float(), (batch[f].shape[-1],)) for f in fields]
    return F.normalize(torch.cat(parts, -1), dim=-1)


def vote(labels: torch.Tensor, sims: torch.Tensor, idx: torch.Tensor, k: int,
         temperature: float) -> torch.Tensor:
    """Similarity-weighted label of the k nearest, in [-1, 1] (``labels``: the memory's)."""
    w = torch.softmax(sims[:, :k] / temperature, dim=1)
    return (w * (2 * labels[idx[:, :k]] - 1)).sum(1)


def calibrate_vote(scorer: torch.Tensor, neighbours: tuple[torch.Tensor, torch.Tensor],
                   labels: torch.Tensor, y: torch.Tensor, metric: MetricFn,
                   vote_alone: bool = False) -> dict[str, Any]:
    """The k, temperature and vote weight alpha (0: the scorer alone) whose
    ``scorer + alpha * vote`` has the best dev ``metric``; with ``vote_alone`` the vote without
    the scorer competes too (``logit_weight`` 0)."""
    sims, idx = neighbours
    best = (-1.0, (K_GRID[0], TEMPERATURE_GRID[0], 0.0, 1.0))
    for k, t in itertools.product(K_GRID, TEMPERATURE_GRID):
        v = vote(labels, sims, idx, k, t)
        options = [(a, 1.0) for a in ALPHA_GRID] + ([(1.0, 0.0)] if vote_alone else [])
        for a, w in options:
            score = metric(y, w * scorer + a * v)
            if score > best[0]:
                best = (score, (k, t, a, w))
    k, t, a, w = best[1]
    return {"k": k, "temperature": t, "alpha": a, "logit_weight": w,
            "dev_auroc_retrieval": best[0], "dev_auroc_scorer": metric(y, scorer)}


@dataclass
class VoteConfig(HeadConfig):
    #: the vote's k, temperature and weight (0: the scorer alone) until ``calibrate`` chooses
    #: them on dev from the grids above
    k: int = 10
    temperature: float = 0.05
    alpha: float = 1.0


class Voting(Memory):
    """A memory whose k nearest memes vote: the fitted ``k_``, ``temperature_`` and
    ``alpha_``, and predictions that name the neighbours."""

    k_: int
    temperature_: float
    alpha_: float

    def start_vote(self, cfg: VoteConfig) -> None:
        self.k_, self.temperature_, self.alpha_ = cfg.k, cfg.temperature, cfg.alpha

    @torch.no_grad()
    def predict(self, batch: Batch) -> Prediction:
        out: Prediction = {"prob": torch.sigmoid(self(batch))}  # type: ignore[operator]
        if len(self.bank):
            sims, idx = self.neighbours(batch, self.k_)
            out.update(neighbours=idx, neighbour_similarity=sims)
        return out


@dataclass
class RetrievalConfig(MLPConfig, VoteConfig):
    pass


@register_head("retrieval")
class RetrievalHead(Voting, MLPHead):
    """MLP scorer + similarity-weighted labels of the k nearest training memes (RGCL-style)."""

    config_class = RetrievalConfig
    fitted_attrs = ("k_", "temperature_", "alpha_")

    def __init__(self, cfg: RetrievalConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        self.bank = MemoryBank(sum(input_dims.values()))
        self.start_vote(cfg)

    def memory_key(self, batch: Batch) -> torch.Tensor:
        return field_key(batch, self.fields)

    def forward(self, batch: Batch) -> torch.Tensor:
        logit = super().forward(batch)
        if self.training or not len(self.bank) or not self.alpha_:
            return logit  # training fits the scorer alone: its own memes would vote for it
        sims, idx = self.neighbours(batch, self.k_)
        return logit + self.alpha_ * vote(self.bank.labels, sims, idx, self.k_, self.temperature_)

    @torch.no_grad()
    def calibrate(self, dev_batch: Batch, metric: MetricFn) -> dict[str, Any]:
        """k, temperature and alpha with the best dev AUROC (alpha 0 = the scorer alone)."""
        if not len(self.bank):
            return {}
        chosen = calibrate_vote(MLPHead.forward(self, dev_batch),
                                self.neighbours(dev_batch, max(K_GRID)), self.bank.labels,
                                dev_batch["label"], metric)
        del chosen["logit_weight"]  # the scorer always counts here
        self.k_, self.temperature_, self.alpha_ = chosen["k"], chosen["temperature"], chosen["alpha"]
        return chosen
