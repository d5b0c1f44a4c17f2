"""Flamingo-style gated cross-attention head: the text reads the image through tanh gates.

The meme text's tokens go through layers of [gated cross-attention to the other fields'
tokens, gated feed-forward, self-attention]. The gates are ``tanh(alpha)`` with alpha starting
at 0, so at initialisation the image path contributes nothing and the head is a text-only
transformer; training opens the gates as far as the image helps.
"""

from __future__ import annotations

import torch
from torch import nn

from memetrm.errors import ConfigError
from memetrm.heads.base import Head, TokenFusionConfig
from memetrm.heads.registry import register_head
from memetrm.layers import Attention, Batch, FeedForward, FieldTokens, masked_mean, mlp


class GatedCrossAttention(nn.Module):
    """``x + tanh(a) * xattn(x, media)`` then ``x + tanh(b) * ffn(x)``, gates at 0 at init."""

    def __init__(self, d: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.attn = Attention(d, heads, dropout)
        self.ffn = FeedForward(d, ffn_mult, dropout)
        self.attn_gate = nn.Parameter(torch.zeros(()))
        self.ffn_gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, media: torch.Tensor, media_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn_gate.tanh() * self.attn.update(x, media, media_mask)
        return x + self.ffn_gate.tanh() * self.ffn.update(x)


@register_head("gated-xattn", in_all=False)
class GatedXAttnHead(Head):
    """Text tokens with Flamingo gated cross-attention to the image tokens, then MLP."""

    config_class = TokenFusionConfig
    needs_tokens = True

    def __init__(self, cfg: TokenFusionConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        if "text" not in self.fields or len(self.fields) < 2:
            raise ConfigError("gated-xattn needs a 'text' field and at least one other field")
        self.media = [f for f in self.fields if f != "text"]
        d = cfg.d_model
        self.tokens = FieldTokens(token_dims or input_dims, d)
        self.gated = nn.ModuleList(GatedCrossAttention(d, cfg.heads, cfg.ffn_mult, cfg.dropout)
                                   for _ in range(cfg.layers))
        self.self_attn = nn.ModuleList(nn.ModuleList([
            Attention(d, cfg.heads, cfg.dropout), FeedForward(d, cfg.ffn_mult, cfg.dropout)])
            for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(d)
        self.classifier = mlp(d, cfg.hidden, 1, cfg.dropout)

    def encode_text(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, d) text states after every layer, and the text mask."""
        text, mask = self.tokens(batch, ["text"])
        media, media_mask = self.tokens(batch, self.media)
        for gated, (attn, ffn) in zip(self.gated, self.self_attn, strict=True):
            text = ffn(attn(gated(text, media, media_mask), None, mask))
        return self.norm(text), mask

    def forward(self, batch: Batch) -> torch.Tensor:
        text, mask = self.encode_text(batch)
        return self.classifier(masked_mean(text, mask)).squeeze(-1)
