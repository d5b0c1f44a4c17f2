"""The frozen-encoder contract: pooled embeddings always, token features on request."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image


@dataclass
class EncoderOutput:
    """``pooled`` is (B, D). ``tokens`` is (B, L, D_tok) with ``mask`` (B, L), True = real token."""

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None


class Encoder(ABC):
    """A frozen image tower and text tower.

    ``image_transform`` runs in DataLoader workers (PIL -> tensor), so decoding overlaps the
    forward pass; ``encode_images`` takes the already-batched tensor.
    """

    #: registry name, e.g. ``minilm-effnet`` or ``hf-clip:openai/clip-vit-base-patch32``
    name: str = ""
    image_dim: int
    text_dim: int
    image_token_dim: int
    text_token_dim: int
    #: maximum text tokens kept when token features are requested
    max_text_tokens: int = 32
    device: torch.device = torch.device("cpu")

    #: identifies the weights; part of every feature-cache key (set by each encoder)
    version: str = ""

    @abstractmethod
    def modules(self) -> list[torch.nn.Module]:
        """The torch modules owned, so ``to`` reaches them all."""

    @abstractmethod
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]: ...

    def image_side(self) -> int | None:
        """The side ``image_transform`` first resizes a picture's shorter side to: a JPEG may be
        decoded at a reduced scale down to it. None: the transform wants the full decode."""
        return None

    @abstractmethod
    def encode_images(self, pixels: torch.Tensor, tokens: bool = False) -> EncoderOutput: ...

    @abstractmethod
    def encode_texts(self, texts: list[str], tokens: bool = False) -> EncoderOutput: ...

    def to(self, device: str | torch.device) -> Encoder:
        self.device = torch.device(device)
        for m in self.modules():
            m.to(self.device).eval().requires_grad_(False)
        return self

    def dims(self, field: str, tokens: bool = False) -> int:
        """Embedding width of a field: ``image`` uses the image tower, every text field the text one."""
        if field == "image":
            return self.image_token_dim if tokens else self.image_dim
        return self.text_token_dim if tokens else self.text_dim
