"""Perceiver Resampler head (Flamingo): a few learned latents read every token of the meme.

M latents cross-attend to all fields' tokens (image patches, text and caption tokens, with
modality embeddings), then attend to each other; after a few such layers a classifier reads
the mean of the latents. Cost grows with M x tokens, not tokens squared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from memetrm.heads.base import Head, TokenFusionConfig
from memetrm.heads.registry import register_head
from memetrm.layers import Attention, Batch, FeedForward, FieldTokens, mlp


@dataclass
class PerceiverConfig(TokenFusionConfig):
    latents: int = 8


class Resampler(nn.Module):
    """``latents`` learned queries, refined by cross-attention to tokens and self-attention."""

    def __init__(self, token_dims: dict[str, int], cfg: PerceiverConfig):
        super().__init__()
        d = cfg.d_model
        self.tokens = FieldTokens(token_dims, d)
        self.latents = nn.Parameter(0.02 * torch.randn(cfg.latents, d))
        self.blocks = nn.ModuleList(nn.ModuleList([
            Attention(d, cfg.heads, cfg.dropout), Attention(d, cfg.heads, cfg.dropout),
            FeedForward(d, cfg.ffn_mult, cfg.dropout)]) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, batch: Batch) -> torch.Tensor:
        """(B, M, d) latents summarising the meme."""
        x, mask = self.tokens(batch)
        z = self.latents.expand(x.shape[0], -1, -1)
        for cross, self_attn, ffn in self.blocks:
            z = ffn(self_attn(cross(z, x, mask)))
        return self.norm(z)


@register_head("perceiver", in_all=False)
class PerceiverHead(Head):
    """Perceiver Resampler: M learned latents cross-attend to all tokens; MLP on their mean."""

    config_class = PerceiverConfig
    needs_tokens = True

    def __init__(self, cfg: PerceiverConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        self.resampler = Resampler(token_dims or input_dims, cfg)
        self.classifier = mlp(cfg.d_model, cfg.hidden, 1, cfg.dropout)

    def no_weight_decay(self) -> set[str]:
        return {"resampler.latents"}

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.classifier(self.resampler(batch).mean(1)).squeeze(-1)
