"""Baselines on pooled features: a linear probe and the seed's concat + MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from memetrm.heads.base import Batch, Head, HeadConfig, concat_fields, mlp


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
        self.net = mlp(sum(input_dims.values()), 0, 0, cfg.dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.net(concat_fields(batch, self.fields)).squeeze(-1)


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
        self.net = mlp(sum(input_dims.values()), cfg.hidden, cfg.layers, cfg.dropout)
        self.input_dropout = nn.Dropout(cfg.dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.net(self.input_dropout(concat_fields(batch, self.fields))).squeeze(-1)
