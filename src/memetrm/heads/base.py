"""The head contract every classifier on top of frozen features follows.

A batch is a flat dict of tensors: ``batch[field]`` is the pooled (B, D) embedding of a field
(``image``, ``text``, ``caption``, ...), ``batch[f"{field}.tokens"]`` (B, L, D) and
``batch[f"{field}.mask"]`` (B, L) its token features when the head ``needs_tokens``, and
``batch["label"]`` (B,) float labels during training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

Batch = dict[str, torch.Tensor]
#: Given a loss, the engine zeroes grads, backpropagates, clips, steps the optimizer and
#: scheduler and updates the EMA. A head calls it once per optimizer step it wants.
StepFn = Callable[[torch.Tensor], None]


@dataclass
class HeadConfig:
    """Shared knobs; each head subclasses this with its own fields."""

    dropout: float = 0.1


class Head(nn.Module):
    name: ClassVar[str] = ""
    config_class: ClassVar[type[HeadConfig]] = HeadConfig
    #: whether the head reads ``<field>.tokens`` (extraction then stores token features)
    needs_tokens: ClassVar[bool] = False

    def __init__(self, cfg: HeadConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__()
        self.cfg = cfg
        self.input_dims = dict(input_dims)
        self.token_dims = dict(token_dims or {})
        self.fields = list(self.input_dims)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits, shape (B,)."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, labels.float())

    @property
    def optimizer_steps_per_batch(self) -> int:
        """How many times ``training_step`` calls ``step``; the LR schedule counts on it."""
        return 1

    def training_step(self, batch: Batch, step: StepFn) -> float:
        """One batch of training. Heads with deep supervision override this hook."""
        loss = self.loss(self(batch), batch["label"])
        step(loss)
        return loss.item()

    @torch.no_grad()
    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"prob": (B,)}``; heads may add ``trace`` (B, S) and ``steps`` (B,)."""
        return {"prob": torch.sigmoid(self(batch))}

    def calibrate(self, dev_batch: Batch) -> dict[str, Any]:
        """Post-training choices made on the dev split only (e.g. a halting threshold)."""
        return {}


def concat_fields(batch: Batch, fields: list[str]) -> torch.Tensor:
    return torch.cat([batch[f] for f in fields], dim=-1)


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
        return torch.cat([self.norms[f](batch[f]) for f in self.fields], dim=-1)


def mlp(in_dim: int, hidden: int, layers: int, dropout: float, out_dim: int = 1,
        norm: bool = True) -> nn.Sequential:
    """(LayerNorm'd) MLP to ``out_dim``; shared by every head that ends in a classifier."""
    mods: list[nn.Module] = [nn.LayerNorm(in_dim)] if norm else []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout)]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)
