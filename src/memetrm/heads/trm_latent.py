"""TRM over resampled latents: each recursion step attends over a meme's parts at the cost of M
latents instead of every token.

A Perceiver-style reader (``layers.Resampler``) turns the image and text tokens into
M latents; they are TRM's x, and y and z are M-long sequences refined by the same post-norm
attention blocks as ``trm-att``. The reader re-reads the tokens at every supervision step (its
weights change between optimizer steps), once per step, not once per recursion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from memetrm.heads.registry import register_head
from memetrm.heads.trm import ORIGIN_TRAIN, TRMAttConfig, TRMAttHead
from memetrm.layers import Batch, Resampler


@dataclass
class TRMLatentConfig(TRMAttConfig):
    #: latents the reader resamples the tokens into (TRM's sequence length)
    latents: int = 8
    #: cross-attention + self-attention layers of the reader
    reader_layers: int = 1


@register_head("trm-latent", train=ORIGIN_TRAIN, in_all=False)
class TRMLatentHead(TRMAttHead):
    """TRM-Att over M Perceiver-resampled latents of all fields' tokens."""

    config_class = TRMLatentConfig

    def _build_input(self) -> None:
        cfg = self.cfg
        self.reader = Resampler(self.token_dims or self.input_dims, cfg.hidden, cfg.heads,
                                cfg.reader_layers, cfg.latents, cfg.dropout)

    def no_weight_decay(self) -> set[str]:
        return {"reader.latents"}

    def embed(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.reader(batch), None

    def _pool(self, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return y.mean(1)
