"""``hf-clip:<hub id or local dir>``: transformers ``CLIPModel``, tokenizer and image processor."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import SafetensorError

from memetrm.encoders.base import Encoder, EncoderOutput
from memetrm.encoders.registry import register_encoder
from memetrm.errors import ConfigError

DEFAULT_HF_CLIP = "openai/clip-vit-large-patch14-336"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
#: what missing, corrupt or mismatched checkpoints raise (turned into a ConfigError); ``KeyError``
#: and ``EOFError`` come from torch's weights-only unpickler on bytes that are not a pickle
LOAD_ERRORS = (OSError, ValueError, RuntimeError, SafetensorError, pickle.UnpicklingError,
               KeyError, EOFError)


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def json_hash(obj: Any) -> str:
    """Short hash of a config; key order and non-JSON values (paths, tuples) don't matter."""
    return short_hash(json.dumps(obj, sort_keys=True, default=str))


def files_fingerprint(files: list[Path]) -> str:
    """Name, size and mtime of each weights file, so replacing the weights changes the cache key.

    Symlinks are resolved first: in the hub cache they point at blobs named by content hash.
    Stat instead of hashing the content keeps start-up fast for multi-GB checkpoints.
    """
    parts = []
    for f in sorted(files):
        real = f.resolve()
        st = real.stat()
        parts.append(f"{f.name}:{real.name}:{st.st_size}:{st.st_mtime_ns}")
    return short_hash("|".join(parts))


class HFImageTransform:
    """PIL -> (3, H, W) through the model's own image processor; a plain class so it pickles
    into DataLoader workers."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def hf_clip_version(source: str) -> str:
    """Id/path + config + weights-file identity, read without loading the weights so a warm
    feature cache is found cheaply; the encoder reports the same string."""
    from transformers import CLIPConfig
    from transformers.utils import cached_file

    source = source or DEFAULT_HF_CLIP
    try:
        config = CLIPConfig.from_pretrained(source)
        # a hub id resolves to its snapshot folder in the local hub cache
        local = Path(source)
        model_dir = local if local.is_dir() else Path(cached_file(source, "config.json")).parent
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load CLIP model {source!r}: {e}") from e
    weights = [p for p in model_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES]
    if not weights:
        raise ConfigError(f"no weights file found for CLIP model {source!r} in {model_dir}")
    return f"{source}+cfg{json_hash(config.to_dict())}+w{files_fingerprint(weights)}"


class HFCLIP(Encoder):
    """Pooled features are the projected CLS / EOS states (as ``get_*_features``); token features
    are every patch / text state pushed through the same projection, so both live in one space."""

    def __init__(self, source: str = DEFAULT_HF_CLIP) -> None:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        self.version = hf_clip_version(source)
        try:
            self.model = CLIPModel.from_pretrained(source).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.processor = CLIPImageProcessor.from_pretrained(source)
        except LOAD_ERRORS as e:
            raise ConfigError(f"cannot load CLIP model {source!r}: {e}") from e
        config = self.model.config
        self.max_positions = config.text_config.max_position_embeddings
        self.image_dim = self.text_dim = config.projection_dim
        self.image_token_dim = self.text_token_dim = config.projection_dim

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return HFImageTransform(self.processor)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor, tokens: bool = False) -> EncoderOutput:
        # vision_model directly (not get_image_features) returns the patch states as well and has
        # the same return type in transformers 4 and 5.
        vision = self.model.vision_model
        out = vision(pixel_values=pixels.to(self.device))
        pooled = self.model.visual_projection(out.pooler_output)
        if not tokens:
            return EncoderOutput(pooled)
        patches = self.model.visual_projection(vision.post_layernorm(out.last_hidden_state[:, 1:]))
        mask = torch.ones(patches.shape[:2], dtype=torch.bool, device=patches.device)
        return EncoderOutput(pooled, patches, mask)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], tokens: bool = False) -> EncoderOutput:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_positions, return_tensors="pt"
        ).to(self.device)
        out = self.model.text_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        )
        pooled = self.model.text_projection(out.pooler_output)
        if not tokens:
            return EncoderOutput(pooled)
        n = self.max_text_tokens
        states = self.model.text_projection(out.last_hidden_state[:, :n])
        return EncoderOutput(pooled, states, batch["attention_mask"][:, :n].bool())


@register_encoder("hf-clip", version=hf_clip_version)
def _create(source: str = DEFAULT_HF_CLIP) -> Encoder:
    return HFCLIP(source)
