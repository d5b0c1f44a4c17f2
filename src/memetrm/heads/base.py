"""The head contract every classifier on top of frozen features follows.

A batch is a flat dict of tensors (``memetrm.layers.Batch``): ``batch[field]`` is the pooled
(B, D) embedding of a field (``image``, ``text``, ``caption``, ...), ``batch[f"{field}.tokens"]``
(B, L, D) and ``batch[f"{field}.mask"]`` (B, L) its token features when the head
``needs_tokens``, and ``batch["label"]`` (B,) float labels during training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from memetrm.layers import Batch, StepFn, Trainable


@dataclass
class HeadConfig:
    """Base of every head's options; a head without options uses it as is."""


@dataclass
class TokenFusionConfig(HeadConfig):
    """Width and depth of the attention stacks of the token-level fusion heads."""

    d_model: int = 128
    heads: int = 4
    layers: int = 2
    ffn_mult: int = 2
    hidden: int = 256
    dropout: float = 0.1


class Head(Trainable):
    """A binary classifier over a batch of frozen features; ``forward`` returns logits (B,)."""

    config_class: ClassVar[type[HeadConfig]] = HeadConfig
    #: whether the head reads ``<field>.tokens`` (extraction then stores token features)
    needs_tokens: ClassVar[bool] = False
    #: False for heads fitted exactly (a convex probe): seeds would repeat one fit, so a run
    #: selected on dev fits once (cross-validation still varies its folds by seed)
    seeded: ClassVar[bool] = True
    #: one line for ``memetrm list``; the class docstring's first line by default
    description: ClassVar[str] = ""
    #: the registered name it was created under (set by ``create_head``)
    name: str = ""

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

    def training_step(self, batch: Batch, step: StepFn) -> float:
        """One batch of training. Heads with deep supervision override this hook."""
        loss = self.loss(self(batch), batch["label"])
        step(loss)
        return loss.item()

    @torch.no_grad()
    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"prob": (B,)}``; heads may add ``trace`` (B, S) and ``steps`` (B,)."""
        return {"prob": torch.sigmoid(self(batch))}
