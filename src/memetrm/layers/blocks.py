"""Building blocks shared by heads and alignment objectives: field norms, MLPs, pooling, MERU lift.

Tensors in, tensors out; nothing here knows about datasets, encoders or training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from memetrm.layers import lorentz as L

#: ``batch[field]`` pooled (B, D), ``batch[f"{field}.tokens"]`` (B, L, D), ``batch[f"{field}.mask"]``
#: (B, L) and ``batch["label"]`` (B,) float labels during training.
Batch = dict[str, torch.Tensor]
#: Given a loss, the engine zeroes grads, backpropagates, clips, steps the optimizer and
#: scheduler and updates the EMA. A model calls it once per optimizer step it wants.
StepFn = Callable[[torch.Tensor], None]
#: ``metric(labels, scores) -> float`` on CPU tensors; handed in so models need no metrics code.
MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


class Trainable(nn.Module):
    """What the training engine needs of any model it trains (heads and alignment objectives)."""

    #: how many times ``training_step`` calls ``step``; the LR schedule counts on it
    optimizer_steps_per_batch: int = 1

    def training_step(self, batch: Batch, step: StepFn) -> float:
        """One batch of training: compute the loss(es) and call ``step`` on each."""
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay beyond the default (every tensor with < 2 dims).

        Named here: 2-D parameters that are positions or scales rather than weights
        (prototypes, for instance); decaying them pulls the model toward a degenerate point.
        """
        return set()

    def solve(self, train: Batch, dev: Batch | None, metric: MetricFn) -> dict[str, Any] | None:
        """Fit in closed form instead of by gradient steps (a convex probe), choosing any
        hyperparameter on ``dev``; returns what was chosen, or None to train with SGD."""
        return None

    def begin_epoch(self, train: Batch) -> None:
        """Called before every training epoch with the whole training set (rows in the order of
        ``batch["row"]``): a model that retrieves among the training examples indexes them here."""

    def calibrate(self, dev_batch: Batch, metric: MetricFn) -> dict[str, Any]:
        """Post-training choices made on the dev split only (e.g. a halting threshold)."""
        return {}


def concat_fields(batch: Batch, fields: list[str]) -> torch.Tensor:
    return torch.cat([batch[f] for f in fields], dim=-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens of (B, L, D) ``x``; an all-padding row gives zeros, not NaN."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class FieldNorm(nn.Module):
    """LayerNorm each field before concatenating.

    Frozen towers differ in scale and width (1280-d CNN activations vs 384-d unit-norm text);
    one LayerNorm over the concat lets the larger tower drown the other.
    """

    def __init__(self, input_dims: dict[str, int]):
        super().__init__()
        self.fields = list(input_dims)
        self.norms = nn.ModuleDict({f: nn.LayerNorm(d) for f, d in input_dims.items()})
        self.out_dim = sum(input_dims.values())

    def forward(self, batch: Batch) -> torch.Tensor:
        return torch.cat([self.norms[f](batch[f].float()) for f in self.fields], dim=-1)


def mlp(in_dim: int, hidden: int, layers: int, dropout: float, out_dim: int = 1,
        norm: bool = True) -> nn.Sequential:
    """(LayerNorm'd) MLP to ``out_dim``; ``layers=0`` is a single linear map."""
    mods: list[nn.Module] = [nn.LayerNorm(in_dim)] if norm else []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout)]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


@torch.no_grad()
def clamp_(param: torch.Tensor, lo: float | None = None, hi: float | None = None) -> torch.Tensor:
    """Project a log-space parameter back into range in place, as MERU does, and return it.

    Called in ``forward`` so every trainer respects the bounds; unlike a differentiable clamp,
    a parameter that overshoots gets its gradient back on the next step.
    """
    return param.clamp_(lo, hi)


class Curvature(nn.Module):
    """Hyperboloid curvature ``c``, learned in log space within [c0 / 10, 10 c0] (MERU)."""

    def __init__(self, curv_init: float = 1.0, learn: bool = True):
        super().__init__()
        self.log_curv = nn.Parameter(torch.tensor(float(curv_init)).log(), requires_grad=learn)
        self.bounds = (math.log(curv_init / 10), math.log(curv_init * 10))

    def forward(self) -> torch.Tensor:
        return clamp_(self.log_curv, *self.bounds).exp()


class LorentzLift(nn.Module):
    """MERU's lift of a Euclidean vector onto the hyperboloid: scale by a learned alpha <= 1, then
    the exponential map at the origin. ``alpha = 1/sqrt(d)`` at init keeps the map's input norm
    near 1 instead of ``sqrt(d)``.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(dim**-0.5).log())

    def forward(self, z: torch.Tensor, curv: torch.Tensor) -> torch.Tensor:
        return L.exp_map0(z.float() * clamp_(self.log_alpha, hi=0.0).exp(), curv)


class FieldTokens(nn.Module):
    """Each field's token features projected to one width, plus a learned modality embedding,
    so a shared attention stack can tell image patches from text or caption tokens."""

    def __init__(self, token_dims: dict[str, int], d: int, norm: bool = True):
        super().__init__()
        self.fields = list(token_dims)
        self.proj = nn.ModuleDict({f: nn.Sequential(nn.LayerNorm(k), nn.Linear(k, d)) if norm
                                   else nn.Linear(k, d) for f, k in token_dims.items()})
        self.type_emb = nn.ParameterDict({f: nn.Parameter(torch.zeros(d)) for f in self.fields})

    def forward(self, batch: Batch, fields: list[str] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, d) tokens of ``fields`` (all by default), concatenated, and their (B, L) mask."""
        fields = fields or self.fields
        x = torch.cat([self.proj[f](batch[f"{f}.tokens"].float()) + self.type_emb[f]
                       for f in fields], 1)
        return x, torch.cat([batch[f"{f}.mask"].bool() for f in fields], 1)


def attend(attn: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor,
           kv_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``attn(q, kv, kv)`` ignoring keys whose mask is False.

    A query row with no valid key at all gets a zero update: PyTorch would return NaN for it
    (a softmax over nothing), and one such row would poison the loss of the whole batch.
    """
    if kv_mask is None:
        return attn(q, kv, kv, need_weights=False)[0]
    empty = ~kv_mask.any(-1)  # rows with no valid key: attend to all, then drop the update
    out = attn(q, kv, kv, key_padding_mask=~kv_mask & ~empty[:, None], need_weights=False)[0]
    return out.masked_fill(empty[:, None, None], 0.0)


class Attention(nn.Module):
    """Pre-norm multi-head attention with a residual: ``x + attn(norm(x), kv)``.

    ``kv=None`` is self-attention. Keys whose mask is False are ignored; a query row with no
    valid key at all gets a zero update instead of NaN.
    """

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)

    def update(self, x: torch.Tensor, kv: torch.Tensor | None = None,
               kv_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.norm(x)
        return attend(self.attn, q, q if kv is None else kv, kv_mask)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None,
                kv_mask: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.update(x, kv, kv_mask)


class FeedForward(nn.Module):
    """Pre-norm GELU MLP block with a residual."""

    def __init__(self, d: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, mult * d), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(mult * d, d))

    def update(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class CrossBlock(nn.Module):
    """Post-norm cross-attention + FFN, the transformer-decoder half without self-attention."""

    def __init__(self, d: int, heads: int, dropout: float, ffn_mult: int = 2):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ffn_mult * d, d))
        self.norm2 = nn.LayerNorm(d)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor) -> torch.Tensor:
        q = self.norm1(q + attend(self.attn, q, kv, kv_mask))
        return self.norm2(q + self.ff(q))


def attention_stack(d: int, heads: int, ffn_mult: int, dropout: float,
                    layers: int) -> nn.ModuleList:
    """``layers`` x [attention, attention, feed-forward]: the reader of the Perceiver
    Resampler (cross, then self) and of the Q-Former (joint self, then cross)."""
    return nn.ModuleList(nn.ModuleList([
        Attention(d, heads, dropout), Attention(d, heads, dropout),
        FeedForward(d, ffn_mult, dropout)]) for _ in range(layers))


class Resampler(nn.Module):
    """Perceiver Resampler (Flamingo): ``latents`` learned queries, refined by cross-attention
    to every field's tokens and self-attention; cost grows with latents x tokens."""

    def __init__(self, token_dims: dict[str, int], d: int, heads: int, layers: int,
                 latents: int, dropout: float, ffn_mult: int = 2):
        super().__init__()
        self.tokens = FieldTokens(token_dims, d)
        self.latents = nn.Parameter(0.02 * torch.randn(latents, d))
        self.blocks = attention_stack(d, heads, ffn_mult, dropout, layers)
        self.norm = nn.LayerNorm(d)

    def forward(self, batch: Batch) -> torch.Tensor:
        """(B, M, d) latents summarising the meme."""
        x, mask = self.tokens(batch)
        z = self.latents.expand(x.shape[0], -1, -1)
        for cross, self_attn, ffn in self.blocks:
            z = ffn(self_attn(cross(z, x, mask)))
        return self.norm(z)
