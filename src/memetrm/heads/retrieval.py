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
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from memetrm.heads.registry import register_head
from memetrm.heads.simple import MLPConfig, MLPHead
from memetrm.layers import Batch, MetricFn

K_GRID = (5, 10, 20, 50)
TEMPERATURE_GRID = (0.02, 0.05, 0.1)
ALPHA_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass
class RetrievalConfig(MLPConfig):
    k: int = 10
    temperature: float = 0.05
    #: weight of the neighbours' vote in the logit (0: the scorer alone)
    alpha: float = 1.0
    #: ids of the memes in memory, in row order (the explanation names them)
    memory_ids: list[str] = field(default_factory=list)


@register_head("retrieval")
class RetrievalHead(MLPHead):
    """MLP scorer + similarity-weighted labels of the k nearest training memes (RGCL-style)."""

    config_class = RetrievalConfig

    def __init__(self, cfg: RetrievalConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        n, d = len(cfg.memory_ids), sum(input_dims.values())
        self.register_buffer("memory", torch.zeros(n, d))
        self.register_buffer("memory_labels", torch.zeros(n))

    def embed(self, batch: Batch) -> torch.Tensor:
        parts = [F.layer_norm(batch[f].float(), (batch[f].shape[-1],)) for f in self.fields]
        return F.normalize(torch.cat(parts, -1), dim=-1)

    def remember(self, train: Batch, ids: list[str]) -> None:
        self.memory = self.embed(train).detach()
        self.memory_labels = train["label"].float().detach()
        self.cfg.memory_ids = list(ids)

    def add_memory(self, batch: Batch, ids: list[str]) -> None:
        """Append labelled memes (``batch["label"]``); the scorer is untouched."""
        self.memory = torch.cat([self.memory, self.embed(batch).to(self.memory)])
        self.memory_labels = torch.cat([self.memory_labels, batch["label"].float().to(self.memory)])
        self.cfg.memory_ids = [*self.cfg.memory_ids, *ids]

    def neighbours(self, batch: Batch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarities and memory rows of the k nearest memes, (B, k) each."""
        sims = self.embed(batch) @ self.memory.T
        return sims.topk(min(k, sims.shape[1]), dim=1)

    def vote(self, sims: torch.Tensor, idx: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
        """Similarity-weighted label of the k nearest, in [-1, 1]."""
        w = torch.softmax(sims[:, :k] / temperature, dim=1)
        return (w * (2 * self.memory_labels[idx[:, :k]] - 1)).sum(1)

    def forward(self, batch: Batch) -> torch.Tensor:
        logit = super().forward(batch)
        if self.training or not len(self.memory) or not self.cfg.alpha:
            return logit  # training fits the scorer alone: its own memes would vote for it
        sims, idx = self.neighbours(batch, self.cfg.k)
        return logit + self.cfg.alpha * self.vote(sims, idx, self.cfg.k, self.cfg.temperature)

    @torch.no_grad()
    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = {"prob": torch.sigmoid(self(batch))}
        if len(self.memory):
            sims, idx = self.neighbours(batch, self.cfg.k)
            out.update(neighbours=idx, neighbour_similarity=sims)
        return out

    @torch.no_grad()
    def calibrate(self, dev_batch: Batch, metric: MetricFn) -> dict[str, Any]:
        """k, temperature and alpha with the best dev AUROC (alpha 0 = the scorer alone)."""
        if not len(self.memory):
            return {}
        scorer = MLPHead.forward(self, dev_batch)
        sims, idx = self.neighbours(dev_batch, max(K_GRID))
        best = (-1.0, None)
        for k, t, a in itertools.product(K_GRID, TEMPERATURE_GRID, ALPHA_GRID):
            score = metric(dev_batch["label"], scorer + a * self.vote(sims, idx, k, t))
            if score > best[0]:
                best = (score, (k, t, a))
        self.cfg.k, self.cfg.temperature, self.cfg.alpha = best[1]
        return {"k": self.cfg.k, "temperature": self.cfg.temperature, "alpha": self.cfg.alpha,
                "dev_auroc_retrieval": best[0], "dev_auroc_scorer": metric(dev_batch["label"], scorer)}
