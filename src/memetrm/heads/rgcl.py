"""Retrieval-guided contrastive learning (RGCL; Mei et al., ACL 2024) over frozen fields.

An MLP maps the per-field LayerNorm'd features to an embedding; a linear classifier reads it.
Training adds to the cross-entropy the RGCL term: for every meme, the nearest same-label
training meme (the pseudo-gold positive) and the nearest opposite-label one (the hard
negative), found in an index over the current embeddings rebuilt each epoch, plus the other
memes of the batch (same label: positives, other label: negatives), with cosine similarity over
a temperature. The retrieved memes pass through the current network, so both sides of every
pair get gradients; a meme is never its own positive.

The memory holds the training memes' embeddings (``Memory``), so at inference the nearest
labelled memes can vote: the logistic output alone, the similarity-weighted vote alone, or
their sum with a weight, whichever scores the training memes best leave-one-out (each meme's
neighbours never include itself; ``fit_memory``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from memetrm.errors import ConfigError
from memetrm.heads.base import Head
from memetrm.heads.registry import register_head
from memetrm.heads.retrieval import VoteConfig, Voting
from memetrm.layers import Batch, FieldNorm, InnerProductIndex, MemoryBank, MetricFn, StepFn, mlp


@dataclass
class RGCLConfig(VoteConfig):
    hidden: int = 512
    #: width of the learned embedding the memory and the contrastive term use
    embed_dim: int = 256
    #: hidden layers of the embedding MLP
    layers: int = 1
    dropout: float = 0.2
    #: weight of the contrastive term (0: cross-entropy alone)
    lam: float = 1.0
    #: temperature of the contrastive softmax over cosine similarities
    tau: float = 0.1
    #: nearest same-label training memes used as positives (RGCL: 1)
    pseudo_gold: int = 1
    #: nearest opposite-label training memes used as negatives (RGCL: 1)
    hard_negatives: int = 1
    #: the batch's other memes as positives / negatives
    in_batch: bool = True


@register_head("rgcl")
class RGCLHead(Voting, Head):
    """Embedding MLP trained with cross-entropy + retrieval-guided contrastive loss (RGCL)."""

    config_class = RGCLConfig
    #: ``logit_weight_`` 0 is the vote alone, 1 the classifier (plus ``alpha_`` times the vote)
    fitted_attrs = (*Voting.fitted_attrs, "logit_weight_")
    vote_alone = True

    def __init__(self, cfg: RGCLConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        if cfg.embed_dim < 1 or cfg.tau <= 0 or cfg.lam < 0 or min(cfg.pseudo_gold,
                                                                   cfg.hard_negatives) < 0:
            raise ConfigError("rgcl: embed_dim >= 1, tau > 0, lam >= 0 and pseudo_gold, "
                              f"hard_negatives >= 0 required, got {cfg}")
        self.norm = FieldNorm(input_dims)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.embedder = mlp(self.norm.out_dim, cfg.hidden, cfg.layers, cfg.dropout,
                            out_dim=cfg.embed_dim, norm=False)
        self.classifier = nn.Linear(cfg.embed_dim, 1)
        self.bank = MemoryBank(cfg.embed_dim)
        #: the training set and its label-wise rows while training, set by ``begin_epoch``
        #: (never saved: only the live model trains, and ``fit_memory`` ends it)
        self._train: Batch | None = None
        self._index: dict[int, tuple[InnerProductIndex, torch.Tensor]] = {}

    def embedding(self, batch: Batch) -> torch.Tensor:
        return self.embedder(self.input_dropout(self.norm(batch)))

    def memory_key(self, batch: Batch) -> torch.Tensor:
        return F.normalize(self.embedding(batch), dim=-1)

    def scorer(self, batch: Batch) -> torch.Tensor:
        return self.classifier(self.embedding(batch)).squeeze(-1)

    def scorer_weight(self) -> float:
        return self.logit_weight_

    def vote_inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embedding(batch)
        return self.classifier(e).squeeze(-1), F.normalize(e, dim=-1)

    # --- training -------------------------------------------------------------------------------

    @torch.no_grad()
    def begin_epoch(self, train: Batch) -> None:
        """Index the training memes under the current embeddings, one index per label."""
        self._train = train
        was = self.training
        self.eval()
        keys = torch.cat([self.memory_key({f: train[f][i:i + 4096] for f in self.fields})
                          for i in range(0, len(train["label"]), 4096)])
        self.train(was)
        rows = torch.arange(len(keys), device=keys.device)
        # rebuilt every epoch: exact search, never a graph whose build costs more than the epoch
        self._index = {c: (InnerProductIndex(keys[train["label"] == c], approximate_after=len(keys)),
                           rows[train["label"] == c]) for c in (0, 1)}

    def _retrieved(self, z: torch.Tensor, batch: Batch, same: bool, k: int) -> torch.Tensor:
        """(B, k) training rows: the nearest of the anchor's label (itself excluded) or of the
        other label; fewer columns if a label has too few training memes."""
        labels = batch["label"].long()
        k = min([k] + [len(self._index[c][0]) - int(same) for c in (0, 1)])
        out = torch.zeros(len(z), max(k, 0), dtype=torch.long, device=z.device)
        if k <= 0:
            return out
        for c in (0, 1):
            anchors = (labels == c) if same else (labels != c)
            if not anchors.any():
                continue
            index, rows = self._index[c]
            _, idx = index.search(z[anchors], k + int(same))
            found = rows[idx]
            if same:  # drop the anchor itself, keep the k nearest others
                own = batch["row"][anchors].unsqueeze(1)
                order = torch.argsort((found == own).to(torch.int8), dim=1, stable=True)
                found = found.gather(1, order)[:, :k]
            out[anchors] = found
        return out

    def contrastive_loss(self, z: torch.Tensor, batch: Batch) -> torch.Tensor:
        """-log(sum over positives / sum over positives and negatives) of exp(cos / tau)."""
        cfg = self.cfg
        y = batch["label"]
        logits, positive = [], []
        train = self._train
        for same, k in ((True, cfg.pseudo_gold), (False, cfg.hard_negatives)):
            rows = self._retrieved(z, batch, same, k) if k and train is not None else None
            if rows is None or not rows.shape[1]:
                continue
            partner = {f: train[f][rows.flatten()] for f in self.fields}
            zp = F.normalize(self.embedding(partner), dim=-1).view(*rows.shape, -1)
            logits.append((z.unsqueeze(1) * zp).sum(-1) / cfg.tau)
            positive.append(torch.full_like(logits[-1], same, dtype=torch.bool))
        if cfg.in_batch:
            others = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
            logits.append(z @ z.T / cfg.tau)
            positive.append((y.unsqueeze(0) == y.unsqueeze(1)) & others)
        if not logits:
            return z.sum() * 0
        valid = [torch.ones_like(p) for p in positive]
        if cfg.in_batch:
            valid[-1] = others
        s, pos, ok = torch.cat(logits, 1), torch.cat(positive, 1), torch.cat(valid, 1)
        has_pos = pos.any(1)
        num = torch.logsumexp(s.masked_fill(~pos, float("-inf")), 1)
        den = torch.logsumexp(s.masked_fill(~ok, float("-inf")), 1)
        return -(num - den)[has_pos].mean() if has_pos.any() else s.sum() * 0

    def training_step(self, batch: Batch, step: StepFn) -> float:
        e = self.embedding(batch)
        loss = self.loss(self.classifier(e).squeeze(-1), batch["label"])
        if self.cfg.lam and "row" in batch:
            loss = loss + self.cfg.lam * self.contrastive_loss(F.normalize(e, dim=-1), batch)
        step(loss)
        return loss.item()

    # --- inference ------------------------------------------------------------------------------

    def fit_memory(self, train: Batch, ids: list[str], metric: MetricFn) -> dict[str, Any]:
        """Training is over: drop its index, key the memory under the final embeddings, and
        choose the classifier, the vote or their mix on the training memes leave-one-out."""
        self._train, self._index = None, {}
        return super().fit_memory(train, ids, metric)
