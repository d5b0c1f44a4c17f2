"""Encoder names in a saved model's config: written so that scoring finds the same weights from
any directory, and resolved (and checked) when the model is loaded.

Names that carry a local path are the concern: ``tuned:PATH`` is recorded with its weights
digest and found beside the model folder (``memetrm.encoders.tuned``); an ``open-clip`` weights
file is saved by its absolute path, and a relative one in a config is refused. A field that
names its own encoder (``text@tuned:PATH``) keeps its name, which is also the head's input
name; its encoder is resolved the same way."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memetrm.encoders.open_clip_encoder import check_saved_spec, saved_spec
from memetrm.encoders.registry import DEFAULT_ENCODER
from memetrm.encoders.runtimes import split_runtime, with_runtime
from memetrm.encoders.tuned import locate_towers, towers_meta, with_towers
from memetrm.utils import split_field

OPEN_CLIP = "open-clip:"


def saved_encoder_meta(encoder: str | None, fields: Sequence[str], model_dir: str | Path
                       ) -> dict[str, Any]:
    """The ``encoder`` key of a model's config and the record of its tuned towers."""
    encoder = encoder or DEFAULT_ENCODER
    runtime, base = split_runtime(encoder)
    if base.startswith(OPEN_CLIP):
        encoder = with_runtime(OPEN_CLIP + saved_spec(base.removeprefix(OPEN_CLIP)), runtime)
    return {"encoder": encoder, **towers_meta(encoder, fields, model_dir)}


def resolve_encoders(config: dict[str, Any], model_dir: str | Path) -> dict[str, str]:
    """Every encoder name a saved model reads (its ``encoder``, and those its fields name) ->
    the name to build: tuned towers at the folder that holds the weights the model was trained
    on. A tower that changed, or a weights path relative to the current directory, is a
    ``ConfigError``."""
    model_dir = Path(model_dir)
    encoder = str(config.get("encoder") or DEFAULT_ENCODER)
    names = [encoder, *(split_field(f, encoder)[1] for f in config.get("fields") or [])]
    for name in names:
        base = split_runtime(name)[1]
        if base.startswith(OPEN_CLIP):
            check_saved_spec(base.removeprefix(OPEN_CLIP), model_dir / "config.json")
    towers = locate_towers({**config, "encoder": encoder}, model_dir)
    return {name: with_towers(name, towers) for name in names}
