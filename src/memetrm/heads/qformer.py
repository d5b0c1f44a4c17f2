"""Q-Former head (BLIP-2): learned queries that read frozen image features, with the text.

Each layer lets the queries and the text tokens attend to one another (a shared
self-attention, as in the Q-Former's text-conditioned query path), then the queries alone
cross-attend to the image tokens. A classifier reads the mean of the queries. Without an
``image`` field (Hateful Memes here), the last field (the caption) plays the image's part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from memetrm.errors import ConfigError
from memetrm.heads.base import Head, TokenFusionConfig
from memetrm.heads.registry import register_head
from memetrm.layers import Batch, FieldTokens, attention_stack, mlp


@dataclass
class QFormerConfig(TokenFusionConfig):
    queries: int = 8


@register_head("qformer", in_all=False)
class QFormerHead(Head):
    """Q-Former: queries + text self-attention, queries cross-attend to image tokens; MLP."""

    config_class = QFormerConfig
    needs_tokens = True

    def __init__(self, cfg: QFormerConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        if len(self.fields) < 2:
            raise ConfigError("qformer needs an image side and a text side (two fields or more)")
        self.visual = "image" if "image" in self.fields else self.fields[-1]
        self.text = [f for f in self.fields if f != self.visual]
        d = cfg.d_model
        self.tokens = FieldTokens(token_dims or input_dims, d)
        self.queries = nn.Parameter(0.02 * torch.randn(cfg.queries, d))
        self.blocks = attention_stack(d, cfg.heads, cfg.ffn_mult, cfg.dropout, cfg.layers)
        self.norm = nn.LayerNorm(d)
        self.classifier = mlp(d, cfg.hidden, 1, cfg.dropout)

    def no_weight_decay(self) -> set[str]:
        return {"queries"}

    def forward(self, batch: Batch) -> torch.Tensor:
        image, image_mask = self.tokens(batch, [self.visual])
        text, text_mask = self.tokens(batch, self.text)
        m = self.queries.shape[0]
        q = self.queries.expand(text.shape[0], -1, -1)
        joint_mask = torch.cat([torch.ones_like(text_mask[:, :1]).expand(-1, m), text_mask], 1)
        for joint, cross, ffn in self.blocks:
            h = joint(torch.cat([q, text], 1), None, joint_mask)
            q, text = h[:, :m], h[:, m:]
            q = ffn(cross(q, image, image_mask))
        return self.classifier(self.norm(q).mean(1)).squeeze(-1)
