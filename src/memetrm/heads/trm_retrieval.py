"""A Tiny Recursive Model that compares: the meme and its nearest labelled memes as tokens.

A pooled vector gives the recursion nothing to weigh against anything. Here the input is a
small token set: the meme, then its k nearest labelled training memes, each neighbour token
carrying its vector, its label (a learned embedding; off in the no-label ablation) and its
similarity to the meme. TRM-Att's recursion (self-attention blocks, latent and deep recursion,
deep supervision) refines the meme's token while attending over its precedents; the answer is
read at the meme's position.

Memes are keyed as in ``retrieval`` (per-field LayerNorm without gains, concatenated, unit
length): a fixed function of the frozen features, so the memory can grow (``memory add``)
without retraining, and it holds the training memes from the start of training (the engine
hands them to whichever copy it trains or scores, an EMA copy included). A training meme's
neighbours never include itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from memetrm.errors import ConfigError
from memetrm.heads.base import Memory, Prediction
from memetrm.heads.registry import register_head
from memetrm.heads.retrieval import field_key
from memetrm.heads.trm import ORIGIN_TRAIN, TRMAttConfig, TRMAttHead
from memetrm.layers import Batch, MemoryBank


@dataclass
class TRMRetrievalConfig(TRMAttConfig):
    #: neighbours per meme (0: the meme alone, the no-retrieval ablation)
    k: int = 8
    #: give each neighbour token its label (False: the no-label ablation)
    labels: bool = True
    n: int = 2
    T: int = 2
    n_sup: int = 4


@register_head("trm-retrieval", train=ORIGIN_TRAIN, in_all=False)  # costly: not in --heads all
@register_head("trm-retrieval-1pass", train=ORIGIN_TRAIN, in_all=False, n=1, T=1, n_sup=1)
class TRMRetrievalHead(Memory, TRMAttHead):
    """TRM over the meme and its k nearest labelled memes (vectors, labels, similarities)."""

    config_class = TRMRetrievalConfig
    needs_tokens = False

    def __init__(self, cfg: TRMRetrievalConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        if cfg.k < 0:
            raise ConfigError(f"trm-retrieval: k must be >= 0, got {cfg.k}")
        super().__init__(cfg, input_dims, token_dims)
        self.bank = MemoryBank(sum(input_dims.values()))

    def _build_input(self) -> None:
        d = self.cfg.hidden
        self.key_proj = nn.Linear(sum(self.input_dims.values()), d)
        self.label_emb = nn.Embedding(2, d)
        self.sim_proj = nn.Linear(1, d)
        #: what a token is: the meme (0) or a neighbour (1)
        self.role_emb = nn.Parameter(torch.zeros(2, d))

    def memory_key(self, batch: Batch) -> torch.Tensor:
        return field_key(batch, self.fields)

    def _lookup(self, q: torch.Tensor, batch: Batch
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(sims, keys, labels) of the k nearest memes in memory; None while it is empty (the
        meme alone). While training, the memory holds the training set in row order, and a
        training meme's neighbours are the others (``own_neighbours``)."""
        if not len(self.bank):
            return None
        if self.training:
            sims, idx = (t[batch["row"]] for t in self.bank.own_neighbours(self.cfg.k))
        else:
            sims, idx = self.bank.search(q, self.cfg.k)
        return sims, self.bank.embeddings[idx], self.bank.labels[idx]

    def embed(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        q = self.memory_key(batch)
        meme = (self.key_proj(q) + self.role_emb[0]).unsqueeze(1)
        found = self._lookup(q, batch) if self.cfg.k else None
        if found is None:
            return meme, None
        sims, keys, labels = found
        nb = self.key_proj(keys) + self.role_emb[1] + self.sim_proj(sims.unsqueeze(-1))
        if self.cfg.labels:
            nb = nb + self.label_emb(labels.long())
        return torch.cat([meme, nb], 1), None

    def _pool(self, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return y[:, 0]

    @torch.no_grad()
    def predict(self, batch: Batch) -> Prediction:
        out = super().predict(batch)
        if len(self.bank) and self.cfg.k:
            sims, idx = self.neighbours(batch, self.cfg.k)
            out.update(neighbours=idx, neighbour_similarity=sims)
        return out
