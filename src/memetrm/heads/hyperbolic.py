"""Hyperbolic prototype head: classify by Lorentz distance to one learned point per class.

The fused embedding is lifted onto the hyperboloid with MERU's recipe (scale by a learned
alpha <= 1, exp map at the origin, learned curvature in log space) and the logit is the
scaled difference of its distances to the "harmless" and "hateful" prototypes. The prototypes
are tangent vectors mapped by the same exp map, so they are on the manifold by construction.
Clamps live in ``forward`` (not in a training hook) so any generic trainer respects them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from memetrm.alignment import lorentz as L
from memetrm.heads.base import Batch, Head, HeadConfig, concat_fields, mlp


@dataclass
class HyperbolicConfig(HeadConfig):
    embed_dim: int = 64
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.2
    curv_init: float = 1.0
    learn_curv: bool = True


class HyperbolicHead(Head):
    name = "hyperbolic"
    config_class = HyperbolicConfig

    def __init__(self, cfg: HyperbolicConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        d = cfg.embed_dim
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.fuse = mlp(sum(input_dims.values()), cfg.hidden, cfg.layers, cfg.dropout, out_dim=d)
        self.log_curv = nn.Parameter(torch.tensor(cfg.curv_init).log(),
                                     requires_grad=cfg.learn_curv)
        self.curv_bounds = (math.log(cfg.curv_init / 10), math.log(cfg.curv_init * 10))
        self.log_alpha = nn.Parameter(torch.tensor(d**-0.5).log())
        # small distinct starting points: equal prototypes would give every input logit 0
        self.prototypes = nn.Parameter(0.1 * torch.randn(2, d))
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(()))

    @property
    def curv(self) -> torch.Tensor:
        return self.log_curv.clamp(*self.curv_bounds).exp()

    def embed(self, batch: Batch) -> torch.Tensor:
        """Space components of the fused embedding on the hyperboloid (fp32)."""
        z = self.fuse(self.input_dropout(concat_fields(batch, self.fields).float()))
        return L.exp_map0(z * self.log_alpha.clamp(max=0.0).exp(), self.curv)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        protos = L.exp_map0(self.prototypes, self.curv)
        d = L.pairwise_dist(x, protos, self.curv)  # (B, 2): harmless, hateful
        return self.log_scale.exp() * (d[:, 0] - d[:, 1]) + self.bias
