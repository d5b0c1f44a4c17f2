"""``create_encoder(name)``: ``family`` or ``family:arg[:arg]``, like timm's ``create_model``."""

from __future__ import annotations

from collections.abc import Callable

from memetrm.encoders.base import Encoder
from memetrm.errors import ConfigError

_ENCODERS: dict[str, Callable[..., Encoder]] = {}
DEFAULT_ENCODER = "minilm-effnet"


def register_encoder(family: str) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    def deco(fn: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _ENCODERS[family] = fn
        return fn

    return deco


def list_encoders() -> list[str]:
    return sorted(_ENCODERS)


def create_encoder(name: str = DEFAULT_ENCODER, device: str = "cpu") -> Encoder:
    """``hf-clip:openai/clip-vit-base-patch32`` -> family ``hf-clip`` with arg ``openai/...``.

    Only the first colon splits family from arguments for hf-clip (hub ids and paths may not
    contain colons on most systems); open-clip takes ``arch:pretrained``.
    """
    family, _, rest = name.partition(":")
    if family not in _ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; known families: {list_encoders()}")
    enc = _ENCODERS[family](rest) if rest else _ENCODERS[family]()
    enc.name = name
    return enc.to(device)
