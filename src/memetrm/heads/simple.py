"""Baselines on pooled features: a linear probe and the seed's concat + MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from memetrm.heads.base import Head, HeadConfig
from memetrm.heads.registry import register_head
from memetrm.layers import Batch, FieldNorm, mlp


@register_head("linear")
class LinearHead(Head):
    """Logistic regression on the concatenated, per-field LayerNorm'd embeddings."""

    def __init__(self, cfg: HeadConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        self.norm = FieldNorm(input_dims)
        self.net = nn.Linear(self.norm.out_dim, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.net(self.norm(batch)).squeeze(-1)


@dataclass
class MLPConfig(HeadConfig):
    hidden: int = 512
    layers: int = 2
    dropout: float = 0.2


@register_head("mlp")
class MLPHead(Head):
    """Concat of modality embeddings -> MLP, as in seed 000's CLIP + MLP baseline."""

    config_class = MLPConfig

    def __init__(self, cfg: MLPConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        self.norm = FieldNorm(input_dims)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.net = mlp(self.norm.out_dim, cfg.hidden, cfg.layers, cfg.dropout, norm=False)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.net(self.input_dropout(self.norm(batch))).squeeze(-1)
