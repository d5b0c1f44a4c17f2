"""Perceiver Resampler head (Flamingo): a few learned latents read every token of the meme.

M latents cross-attend to all fields' tokens (image patches, text and caption tokens, with
modality embeddings), then attend to each other; after a few such layers a classifier reads
the mean of the latents. Cost grows with M x tokens, not tokens squared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from memetrm.heads.base import Head, TokenFusionConfig
from memetrm.heads.registry import register_head
from memetrm.layers import Batch, Resampler, mlp


@dataclass
class PerceiverConfig(TokenFusionConfig):
    latents: int = 8


@register_head("perceiver", in_all=False)
class PerceiverHead(Head):
    """Perceiver Resampler: M learned latents cross-attend to all tokens; MLP on their mean."""

    config_class = PerceiverConfig
    needs_tokens = True

    def __init__(self, cfg: PerceiverConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        self.resampler = Resampler(token_dims or input_dims, cfg.d_model, cfg.heads, cfg.layers,
                                   cfg.latents, cfg.dropout, cfg.ffn_mult)
        self.classifier = mlp(cfg.d_model, cfg.hidden, 1, cfg.dropout)

    def no_weight_decay(self) -> set[str]:
        return {"resampler.latents"}

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.classifier(self.resampler(batch).mean(1)).squeeze(-1)
