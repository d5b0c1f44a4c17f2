"""Blocks of the Tiny Recursive Model's one shared network (post-norm, weight-free RMSNorm).

Post-norm keeps the recursed states at unit scale however many times the network is applied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from memetrm.layers.blocks import Batch, attend


def rms_norm(d: int) -> nn.RMSNorm:
    """Weight-free RMSNorm as in the paper."""
    return nn.RMSNorm(d, eps=1e-5, elementwise_affine=False)


class SwiGLU(nn.Module):
    """Gated MLP; the 2/3 factor keeps its parameter count equal to a plain ``expansion`` MLP."""

    def __init__(self, d: int, expansion: float, dropout: float):
        super().__init__()
        inner = max(1, round(expansion * d * 2 / 3))
        self.gate_up = nn.Linear(d, 2 * inner, bias=False)
        self.down = nn.Linear(inner, d, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(h).chunk(2, dim=-1)
        return self.down(self.drop(F.silu(gate) * up))


class MLPBlock(nn.Module):
    """``h = RMSNorm(h + SwiGLU(h))``; pooled states have no sequence to mix, so no mask."""

    def __init__(self, d: int, expansion: float, dropout: float):
        super().__init__()
        self.ffn = SwiGLU(d, expansion, dropout)
        self.norm = rms_norm(d)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(h + self.ffn(h))


class AttentionBlock(nn.Module):
    """TRM-Att block: post-norm self-attention over the valid tokens, then SwiGLU."""

    def __init__(self, d: int, heads: int, expansion: float, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, bias=False, batch_first=True)
        self.norm1 = rms_norm(d)
        self.ffn = SwiGLU(d, expansion, dropout)
        self.norm2 = rms_norm(d)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(h + attend(self.attn, h, h, mask))
        return self.norm2(h + self.ffn(h))


def select_rows(batch: Batch, rows: torch.Tensor) -> Batch:
    """The batch restricted to ``rows`` (a boolean mask or indices); every tensor is per-row."""
    return {k: v[rows] for k, v in batch.items()}
