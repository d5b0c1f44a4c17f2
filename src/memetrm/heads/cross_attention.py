"""Real cross-attention over token sequences: each modality's tokens attend to the others'.

The origin recipe attends over one vector per modality; a softmax over a single key is 1, so that is an
MLP in disguise. Here queries are a field's tokens and keys/values the other fields' tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from memetrm.errors import ConfigError
from memetrm.heads.base import Head, TokenFusionConfig
from memetrm.heads.registry import register_head
from memetrm.layers import Batch, CrossBlock, FieldTokens, masked_mean, mlp


@dataclass
class CrossAttentionConfig(TokenFusionConfig):
    layers: int = 1


@register_head("cross-attention")
class CrossAttentionHead(Head):
    """Each field's tokens cross-attend to the other fields' tokens; pooled, then an MLP."""

    config_class = CrossAttentionConfig
    needs_tokens = True

    def __init__(self, cfg: CrossAttentionConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        if len(self.fields) < 2:
            raise ConfigError("cross-attention needs at least two fields")
        tdims = token_dims or input_dims
        d = cfg.d_model
        self.tokens = FieldTokens({f: tdims[f] for f in self.fields}, d, norm=False)
        self.blocks = nn.ModuleDict({
            f: nn.ModuleList(CrossBlock(d, cfg.heads, cfg.dropout, cfg.ffn_mult) for _ in range(cfg.layers))
            for f in self.fields
        })
        self.classifier = mlp(2 * d * len(self.fields), cfg.hidden, 1, cfg.dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        toks, masks = {}, {}
        for f in self.fields:
            toks[f], masks[f] = self.tokens(batch, [f])
        pooled = []
        for f in self.fields:
            others = [g for g in self.fields if g != f]
            kv = torch.cat([toks[g] for g in others], 1)
            kv_mask = torch.cat([masks[g] for g in others], 1)
            q = toks[f]
            for blk in self.blocks[f]:
                q = blk(q, kv, kv_mask)
            pooled += [masked_mean(q, masks[f]), masked_mean(toks[f], masks[f])]
        return self.classifier(torch.cat(pooled, -1)).squeeze(-1)
