"""A tiny deterministic encoder registered for tests: no weights, counts forward passes."""

from __future__ import annotations

import torch
import torchvision.transforms.functional as TF
from PIL import Image

from memetrm.encoders import Encoder, EncoderOutput, register_encoder


class FakeEncoder(Encoder):
    image_dim = image_token_dim = 6
    text_dim = text_token_dim = 5
    calls = {"image": 0, "text": 0}
    fail_after: int | None = None  # raise after this many image batches (interruption test)

    version = "fake-1"

    def modules(self) -> list[torch.nn.Module]:
        return []

    def image_transform(self):
        return _to_tensor

    def encode_images(self, pixels: torch.Tensor, tokens: bool = False) -> EncoderOutput:
        FakeEncoder.calls["image"] += 1
        if self.fail_after is not None and FakeEncoder.calls["image"] > self.fail_after:
            raise KeyboardInterrupt
        cells = pixels.flatten(2).transpose(1, 2)[:, :4, :3].repeat(1, 1, 2)  # (B, 4, 6)
        return EncoderOutput(cells.mean(1), cells, torch.ones(cells.shape[:2], dtype=torch.bool))

    def encode_texts(self, texts: list[str], tokens: bool = False) -> EncoderOutput:
        FakeEncoder.calls["text"] += 1
        vecs = torch.tensor([[len(t), t.count("bad"), t.count("a"), hash(t) % 7, 1.0] for t in texts])
        toks = vecs.unsqueeze(1).repeat(1, 3, 1)
        return EncoderOutput(vecs, toks, torch.ones(toks.shape[:2], dtype=torch.bool))


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return TF.to_tensor(img.resize((8, 8)))


@register_encoder("test-fake", version=lambda _arg: "fake-1")
def _create() -> Encoder:
    return FakeEncoder()
