"""``open-clip:<arch>:<pretrained tag or weights file>``, e.g. ``open-clip:ViT-B-32:openai``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from memetrm.encoders.base import Encoder, EncoderOutput
from memetrm.encoders.hf_clip import LOAD_ERRORS, files_fingerprint, json_hash
from memetrm.encoders.registry import register_encoder
from memetrm.errors import ConfigError


def _project(x: torch.Tensor, proj: torch.nn.Module | torch.Tensor) -> torch.Tensor:
    """open_clip keeps projections either as a bare matrix or as an ``nn.Linear``."""
    return proj(x) if isinstance(proj, torch.nn.Module) else x @ proj


def parse_spec(spec: str) -> tuple[str, str]:
    """``arch:pretrained`` -> (arch, pretrained); both are required, since random weights would
    give meaningless (yet cached) features."""
    arch, _, pretrained = spec.partition(":")
    if not arch or not pretrained:
        raise ConfigError(
            "open-clip needs 'open-clip:<arch>:<pretrained tag or weights file>', "
            f"e.g. 'open-clip:ViT-B-32:laion2b_s34b_b79k' (got {spec!r})"
        )
    return arch, pretrained


def weights_file(pretrained: str) -> Path | None:
    """The local weights file ``pretrained`` names; None for a tag or where no file is."""
    path = Path(pretrained).expanduser()
    try:
        return path if path.is_file() else None
    except (OSError, ValueError):  # a name no file can have (too long, a NUL byte)
        return None


def saved_spec(spec: str) -> str:
    """``spec`` as a model records it: a weights file by its absolute path, so scoring finds
    the same file from any directory."""
    arch, pretrained = parse_spec(spec)
    path = weights_file(pretrained)
    return f"{arch}:{path.resolve()}" if path is not None else spec


def check_saved_spec(spec: str, where: Path) -> None:
    """Refuse a spec read from a model's config whose weights file is named by a relative path:
    it would be looked up from the current directory, not where the model was trained."""
    import open_clip

    arch, pretrained = parse_spec(spec)
    if not open_clip.get_pretrained_cfg(arch, pretrained) and \
            not Path(pretrained).expanduser().is_absolute():
        raise ConfigError(f"{where}: encoder 'open-clip:{spec}' names its weights by a relative "
                          "path, which would be looked up from the current directory; write "
                          "the file's absolute path there (or retrain with --encoder "
                          f"open-clip:{arch}:/absolute/path)")


def open_clip_version(spec: str) -> str:
    """Arch + its config + weights identity (file stat, or the release record of a tag, which
    also carries the preprocessing), without building the model."""
    import open_clip

    arch, pretrained = parse_spec(spec)
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise ConfigError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    path = weights_file(pretrained)
    if path is not None:
        weights = f"w{files_fingerprint([path])}"
    else:
        tag = open_clip.get_pretrained_cfg(arch, pretrained)
        if not tag:
            raise ConfigError(
                f"{pretrained!r} is neither a weights file nor a tag of {arch}; tags: "
                f"{open_clip.list_pretrained_tags_by_model(arch)}"
            )
        weights = f"tag{json_hash(tag)}"
    return f"{arch}:{pretrained}+cfg{json_hash(model_cfg)}+{weights}"


class OpenCLIP(Encoder):
    """Pooled features come from ``encode_image`` / ``encode_text``. Token features come from
    ``forward_intermediates`` (last block, final norm applied) through the tower's projection,
    which open_clip only exposes uniformly for its own ViT and text transformer; other towers
    (timm, Hugging Face text models, attention pooling) are pooled-only."""

    def __init__(self, spec: str) -> None:
        import open_clip

        self.version = open_clip_version(spec)
        self.arch, pretrained = parse_spec(spec)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.arch, pretrained=str(weights_file(pretrained) or pretrained),
                require_pretrained=True
            )
            self.tokenizer = open_clip.get_tokenizer(self.arch)
        except LOAD_ERRORS as e:
            raise ConfigError(f"cannot load open_clip {spec!r}: {e}") from e
        self.model = model.eval()
        self.preprocess = preprocess
        dim = int(open_clip.get_model_config(self.arch)["embed_dim"])
        self.image_dim = self.text_dim = self.image_token_dim = self.text_token_dim = dim

    def _unsupported(self, why: str) -> ConfigError:
        return ConfigError(f"open-clip:{self.arch} does not support token features: {why}")

    def _image_token_proj(self) -> torch.Tensor:
        """The ViT's output projection, looked up per call so it follows ``to(device)``."""
        from open_clip.transformer import VisionTransformer

        visual = self.model.visual
        if not isinstance(visual, VisionTransformer):
            raise self._unsupported(f"its image tower is a {type(visual).__name__}, not a ViT")
        if visual.attn_pool is not None or visual.pool_type not in ("tok", "avg"):
            raise self._unsupported("its ViT pools with attention or not at all")
        if visual.proj is None:
            raise self._unsupported("its ViT has no output projection")
        return visual.proj

    def _text_token_proj(self) -> torch.nn.Module | torch.Tensor:
        from open_clip.transformer import TextTransformer

        # CLIP copies the text transformer's parts onto itself; CustomTextCLIP keeps ``.text``
        text = getattr(self.model, "text", None)
        if isinstance(text, TextTransformer) and text.cls_emb is None:
            pool, proj = text.pool_type, text.text_projection
        elif text is None:
            pool, proj = self.model.text_pool_type, self.model.text_projection
        else:
            raise self._unsupported(f"its text tower is a {type(text).__name__} or has a CLS token")
        if pool != "argmax":
            # argmax pooling means the end token has the largest id, which is what marks the mask
            raise self._unsupported(f"its text tower pools with {pool!r}, not 'argmax'")
        if proj is None:
            raise self._unsupported("its text tower has no output projection")
        return proj

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self.preprocess

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor, tokens: bool = False) -> EncoderOutput:
        pixels = pixels.to(self.device)
        if not tokens:
            return EncoderOutput(self.model.encode_image(pixels))
        proj = self._image_token_proj()
        out = self.model.forward_intermediates(
            image=pixels, image_indices=1, normalize=False, normalize_intermediates=True,
            image_output_fmt="NLC",
        )
        patches = _project(out["image_intermediates"][-1], proj)
        mask = torch.ones(patches.shape[:2], dtype=torch.bool, device=patches.device)
        return EncoderOutput(out["image_features"], patches, mask)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], tokens: bool = False) -> EncoderOutput:
        ids = self.tokenizer(texts).to(self.device)  # truncates to the context length itself
        if not tokens:
            return EncoderOutput(self.model.encode_text(ids))
        proj = self._text_token_proj()
        out = self.model.forward_intermediates(
            text=ids, text_indices=1, normalize=False, normalize_intermediates=True
        )
        n = self.max_text_tokens
        states = _project(out["text_intermediates"][-1][:, :n], proj)
        # real tokens run up to and including the end token, the largest id in each row
        positions = torch.arange(ids.shape[1], device=ids.device)
        mask = positions[None, :] <= ids.argmax(-1, keepdim=True)
        return EncoderOutput(out["text_features"], states, mask[:, :n])


@register_encoder("open-clip", version=open_clip_version)
def _create(spec: str = "") -> Encoder:
    return OpenCLIP(spec)
