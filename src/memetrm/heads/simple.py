"""Baselines on pooled features: a linear probe and the seed's concat + MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from memetrm.heads.base import Batch, FieldNorm, Head, HeadConfig, mlp


@dataclass
class LinearConfig(HeadConfig):
    dropout: float = 0.0


class LinearHead(Head):
    """Logistic regression on the concatenated (LayerNorm'd) embeddings."""

    name = "linear"
    config_class = LinearConfig

    def __init__(self, cfg: LinearConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        self.norm = FieldNorm(input_dims)
        self.net = mlp(self.norm.out_dim, 0, 0, cfg.dropout, norm=False)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.net(self.norm(batch)).squeeze(-1)


@dataclass
class MLPConfig(HeadConfig):
    hidden: int = 512
    layers: int = 2
    dropout: float = 0.2


class MLPHead(Head):
    """Concat of modality embeddings -> MLP, as in seed 000's CLIP + MLP baseline."""

    name = "mlp"
    config_class = MLPConfig

    def __init__(self, cfg: MLPConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        self.norm = FieldNorm(input_dims)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.net = mlp(self.norm.out_dim, cfg.hidden, cfg.layers, cfg.dropout, norm=False)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.net(self.input_dropout(self.norm(batch))).squeeze(-1)
