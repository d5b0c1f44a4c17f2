"""Hyperbolic prototype head: classify by Lorentz distance to one learned point per class.

The fused embedding is lifted onto the hyperboloid with MERU's recipe (``LorentzLift``: a learned
alpha <= 1, then the exp map at the origin; ``Curvature``: learned in log space) and the logit is
the scaled difference of its distances to the "harmless" and "hateful" prototypes. The
prototypes are tangent vectors mapped by the same exp map, so they are on the manifold by
construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from memetrm.heads.base import Head, HeadConfig
from memetrm.heads.registry import register_head
from memetrm.layers import Batch, Curvature, LorentzLift, concat_fields, mlp
from memetrm.layers import lorentz as L


@dataclass
class HyperbolicConfig(HeadConfig):
    embed_dim: int = 64
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.2
    curv_init: float = 1.0
    learn_curv: bool = True


@register_head("hyperbolic")
class HyperbolicHead(Head):
    """Distances to a hateful and a harmless prototype on a learned-curvature hyperboloid (MERU)."""

    config_class = HyperbolicConfig

    def __init__(self, cfg: HyperbolicConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        d = cfg.embed_dim
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.fuse = mlp(sum(input_dims.values()), cfg.hidden, cfg.layers, cfg.dropout, out_dim=d)
        self.curvature = Curvature(cfg.curv_init, cfg.learn_curv)
        self.lift = LorentzLift(d)
        # small distinct starting points: equal prototypes would give every input logit 0
        self.prototypes = nn.Parameter(0.1 * torch.randn(2, d))
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(()))

    def no_weight_decay(self) -> set[str]:
        return {"prototypes"}

    def embed(self, batch: Batch) -> torch.Tensor:
        """Space components of the fused embedding on the hyperboloid (fp32)."""
        return self.lift(self.fuse(self.input_dropout(concat_fields(batch, self.fields).float())),
                         self.curvature())

    def forward(self, batch: Batch) -> torch.Tensor:
        x, curv = self.embed(batch), self.curvature()
        d = L.pairwise_dist(x, L.exp_map0(self.prototypes, curv), curv)  # (B, 2): harmless, hateful
        return self.log_scale.exp() * (d[:, 0] - d[:, 1]) + self.bias
