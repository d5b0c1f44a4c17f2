"""Frozen encoders chosen by name: ``create_encoder("minilm-effnet")``, ``"hf-clip:<id>"``, ..."""

from memetrm.encoders import hf_clip as _hf_clip  # noqa: F401  (registers)
from memetrm.encoders import open_clip_encoder as _open_clip_encoder  # noqa: F401  (registers)
from memetrm.encoders import runtimes as _runtimes  # noqa: F401  (registers)
from memetrm.encoders import towers as _towers  # noqa: F401  (registers)
from memetrm.encoders import tuned as _tuned  # noqa: F401  (registers)
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


def _load_plugins() -> None:
    """Modules named in ``MEMETRM_PLUGINS`` (comma-separated) are imported, so the encoders and
    heads they register exist in every process, Ray and torchrun workers included."""
    import importlib
    import os

    for name in filter(None, (m.strip() for m in os.environ.get("MEMETRM_PLUGINS", "").split(","))):
        importlib.import_module(name)


_load_plugins()
