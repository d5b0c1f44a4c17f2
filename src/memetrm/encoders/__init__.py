"""Frozen encoders chosen by name: ``create_encoder("minilm-effnet")``, ``"hf-clip:<id>"``, ..."""

from memetrm.encoders import hf_clip as _hf_clip  # noqa: F401  (registers)
from memetrm.encoders import minilm_effnet as _minilm_effnet  # noqa: F401  (registers)
from memetrm.encoders import open_clip_encoder as _open_clip_encoder  # noqa: F401  (registers)
from memetrm.encoders.base import Encoder, EncoderOutput
from memetrm.encoders.registry import (
    DEFAULT_ENCODER,
    create_encoder,
    encoder_version,
    list_encoders,
    register_encoder,
)

__all__ = [
    "DEFAULT_ENCODER",
    "Encoder",
    "EncoderOutput",
    "create_encoder",
    "encoder_version",
    "list_encoders",
    "register_encoder",
]
