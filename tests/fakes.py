"""Test doubles: a tiny deterministic encoder (registered as ``test-fake``: no weights, counts
forward passes) and a traced head (registered per test by the ``trace_head`` fixture)."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image

from memetrm.encoders import Encoder, EncoderOutput, register_encoder
from memetrm.heads import Head, HeadConfig
from memetrm.layers import Batch, concat_fields


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
        crash_marker = os.environ.get("MEMETRM_TEST_CRASH_MARKER")
        if crash_marker and any("CRASH" in t for t in texts) and not Path(crash_marker).exists():
            Path(crash_marker).touch()  # the worker dies once, as a preempted node would
            os._exit(1)
        vecs = torch.tensor([[len(t), t.count("bad"), t.count("a"), zlib.crc32(t.encode()) % 7, 1.0]
                             for t in texts])
        toks = vecs.unsqueeze(1).repeat(1, 3, 1)
        return EncoderOutput(vecs, toks, torch.ones(toks.shape[:2], dtype=torch.bool))


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return TF.to_tensor(img.resize((8, 8)))


@register_encoder("test-fake", version=lambda _arg: "fake-1")
def _create() -> Encoder:
    return FakeEncoder()


@dataclass
class TraceConfig(HeadConfig):
    steps: int = 3


class TraceHead(Head):
    """A stand-in reasoning head: a linear score refined over ``steps``, each step traced.

    Registered only inside tests that ask for the ``trace_head`` fixture, so it never leaks
    into ``list_heads()``.
    """

    config_class = TraceConfig

    def __init__(self, cfg: TraceConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__(cfg, input_dims, token_dims)
        self.lin = torch.nn.Linear(sum(input_dims.values()), 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.lin(concat_fields(batch, self.fields)).squeeze(-1)

    @torch.no_grad()
    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        logit = self(batch)
        trace = torch.stack([torch.sigmoid(logit * (s + 1) / self.cfg.steps)
                             for s in range(self.cfg.steps)], dim=1)
        return {"prob": trace[:, -1], "trace": trace}
