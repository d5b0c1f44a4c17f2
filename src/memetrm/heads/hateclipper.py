"""Hate-CLIPper (Kumar & Nandakumar 2022): explicit image-text interaction features.

Each modality is projected to ``map_dim`` and L2-normalised. ``align`` fusion takes the
element-wise product (the diagonal of the feature-interaction matrix, whose sum is the cosine
similarity); ``cross`` takes the full outer product, flattened (``map_dim**2`` features, hence
the small default map_dim of its preset). An MLP reads the fused features.

With more than two fields the image side is the anchor: ``image`` (or the first field if there
is none) is fused with every other field (text, caption, ...) and the pairs are concatenated.
Text-vs-caption products are left out on purpose: the signal the paper targets is the
cross-modal one, and each extra pair multiplies the classifier input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memetrm.errors import ConfigError
from memetrm.heads.base import Head, HeadConfig
from memetrm.heads.registry import register_head
from memetrm.layers import Batch, mlp

FUSIONS = ("align", "cross")


@dataclass
class HateCLIPperConfig(HeadConfig):
    fusion: str = "align"
    map_dim: int = 256
    hidden: int = 512
    layers: int = 1
    dropout: float = 0.2


@register_head("hateclipper-align", fusion="align")
@register_head("hateclipper-cross", fusion="cross", map_dim=32)
class HateCLIPperHead(Head):
    """Hate-CLIPper: MLP over image-text interaction features (element-wise or outer product)."""

    config_class = HateCLIPperConfig

    def __init__(self, cfg: HateCLIPperConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        if cfg.fusion not in FUSIONS:
            raise ConfigError(f"hateclipper: fusion must be one of {FUSIONS}, got {cfg.fusion!r}")
        if len(self.fields) < 2:
            raise ConfigError("hateclipper needs at least two fields (an image and a text side)")
        self.anchor = "image" if "image" in self.fields else self.fields[0]
        self.partners = [f for f in self.fields if f != self.anchor]
        self.proj = nn.ModuleDict({f: nn.Linear(d, cfg.map_dim) for f, d in input_dims.items()})
        self.input_dropout = nn.Dropout(cfg.dropout)
        per_pair = cfg.map_dim if cfg.fusion == "align" else cfg.map_dim**2
        self.classifier = mlp(per_pair * len(self.partners), cfg.hidden, cfg.layers, cfg.dropout)

    def project(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Unit-norm projections, so products measure agreement rather than magnitude."""
        return {f: F.normalize(self.proj[f](self.input_dropout(batch[f].float())), dim=-1)
                for f in self.fields}

    def fuse(self, batch: Batch) -> torch.Tensor:
        """(B, n_pairs * map_dim) for align, (B, n_pairs * map_dim**2) for cross."""
        p = self.project(batch)
        a = p[self.anchor]
        if self.cfg.fusion == "align":
            pairs = [a * p[f] for f in self.partners]
        else:
            pairs = [torch.einsum("bi,bj->bij", a, p[f]).flatten(1) for f in self.partners]
        return torch.cat(pairs, -1)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.classifier(self.fuse(batch)).squeeze(-1)
