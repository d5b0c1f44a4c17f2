"""Retrieval-augmented head, after retrieval-guided contrastive learning (RGCL, ACL 2024).

A memory holds the training memes' embeddings (per-field LayerNorm without learned gains,
concatenated, L2-normalised: a fixed function of the frozen features, so memes can be added
later without retraining). The logit is a learned MLP scorer's plus ``alpha`` times the
label-weighted vote of the k most similar memes in memory, softmax-weighted by similarity /
temperature. k, temperature and alpha are fitted after training on the training memes, each
scored by its neighbours among the others (leave-one-out), never on dev: dev chooses the
epoch and the threshold and ranks configurations, so it must not also have tuned the vote.
``predict`` also returns the neighbours, so a moderator sees which labelled memes drove a score.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, ClassVar

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
                   labels: torch.Tensor, y: torch.Tensor, metric: MetricFn, cfg: VoteConfig,
                   vote_alone: bool = False) -> dict[str, Any]:
    """The k, temperature and vote weight alpha (0: the scorer alone) whose
    ``scorer + alpha * vote`` has the best ``metric`` over memes whose ``neighbours`` never
    include themselves; with ``vote_alone`` the vote without the scorer competes too
    (``logit_weight`` 0). A setting ``cfg`` fixes is not searched."""
    sims, idx = neighbours
    grids = [(getattr(cfg, name),) if getattr(cfg, name) is not None else grid
             for name, grid in (("k", K_GRID), ("temperature", TEMPERATURE_GRID),
                                ("alpha", ALPHA_GRID))]
    best = (-1.0, (grids[0][0], grids[1][0], grids[2][0], 1.0))
    for k, t in itertools.product(grids[0], grids[1]):
        v = vote(labels, sims, idx, k, t)
        options = ([(a, 1.0) for a in grids[2]]
                   + ([(1.0, 0.0)] if vote_alone and cfg.alpha is None else []))
        for a, w in options:
            score = metric(y, w * scorer + a * v)
            if score > best[0]:
                best = (score, (k, t, a, w))
    k, t, a, w = best[1]
    return {"k": k, "temperature": t, "alpha": a, "logit_weight": w,
            "loo_auroc": best[0], "train_auroc_scorer": metric(y, scorer)}


@dataclass
class VoteConfig(HeadConfig):
    #: the vote's k, temperature and weight (0: the scorer alone); None (the default): fitted
    #: after training from the grids above, on the training memes scored leave-one-out
    k: int | None = None
    temperature: float | None = None
    alpha: float | None = None


class Voting(Memory):
    """A memory whose k nearest memes vote. ``fit_memory`` fits ``k_``, ``temperature_`` and
    ``alpha_`` on the training memes, each scored by its neighbours among the others; until
    then the head scores with its scorer alone. Predictions name the neighbours."""

    cfg: VoteConfig
    fitted_attrs: ClassVar[tuple[str, ...]] = ("k_", "temperature_", "alpha_")
    #: whether the vote alone (the scorer's weight 0) competes with the scorer plus the vote
    vote_alone: ClassVar[bool] = False

    def scorer(self, batch: Batch) -> torch.Tensor:
        """The learned scorer's logits, (B,), without the vote."""
        raise NotImplementedError

    def scorer_weight(self) -> float:
        """The scorer's weight beside ``alpha_`` times the vote."""
        return 1.0

    def vote_inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The scorer's logits (B,) and the memory key (B, D), from one pass of the layers."""
        return self.scorer(batch), self.memory_key(batch)

    def voted(self, batch: Batch) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Logits weighed with the vote of the nearest memes, and those memes (similarities,
        rows); the scorer alone and None while training (its own memes would vote for it) or
        before the vote is fitted."""
        logit, key = self.vote_inputs(batch)
        if self.training or not len(self.bank) or not self.is_fitted() or not self.alpha_:
            return logit, None
        sims, idx = self.bank.search(key, self.k_)
        return (self.scorer_weight() * logit
                + self.alpha_ * vote(self.bank.labels, sims, idx, self.k_, self.temperature_),
                (sims, idx))

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.voted(batch)[0]

    @torch.no_grad()
    def fit_memory(self, train: Batch, ids: list[str], metric: MetricFn) -> dict[str, Any]:
        """Remember the training memes, then choose how they vote on themselves: every meme's
        score from its neighbours among the others, never itself."""
        self.remember(train, ids)
        if len(self.bank) < 2:
            return {}
        was = self.training
        self.eval()
        chosen = calibrate_vote(self.scorer(train), self.bank.own_neighbours(max(K_GRID)),
                                self.bank.labels, train["label"], metric, self.cfg,
                                self.vote_alone)
        self.train(was)
        self.set_fitted(**{a: chosen[a.rstrip("_")] for a in self.fitted_attrs})
        return chosen

    @torch.no_grad()
    def predict(self, batch: Batch) -> Prediction:
        """Probabilities and the neighbours that voted (searched once for both)."""
        logit, found = self.voted(batch)
        out: Prediction = {"prob": torch.sigmoid(logit)}
        if len(self.bank) and self.is_fitted():
            sims, idx = found or self.neighbours(batch, self.k_)
            out.update(neighbours=idx, neighbour_similarity=sims)
        return out


@dataclass
class RetrievalConfig(MLPConfig, VoteConfig):
    pass


@register_head("retrieval")
class RetrievalHead(Voting, MLPHead):
    """MLP scorer + similarity-weighted labels of the k nearest training memes (RGCL-style)."""

    config_class = RetrievalConfig

    def __init__(self, cfg: RetrievalConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        self.bank = MemoryBank(sum(input_dims.values()))

    def memory_key(self, batch: Batch) -> torch.Tensor:
        return field_key(batch, self.fields)

    def scorer(self, batch: Batch) -> torch.Tensor:
        return MLPHead.forward(self, batch)
