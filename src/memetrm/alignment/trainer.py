"""Alignment projections trained through the one engine (``training.fit``), saved as a model
directory (safetensors + JSON)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from memetrm.alignment.metrics import RECALL_KS, retrieval_metrics
from memetrm.alignment.objectives import ALIGN_TRAIN, AlignConfig, AlignModel
from memetrm.checkpoint import load_config, load_weights, save_checkpoint
from memetrm.errors import ConfigError
from memetrm.features import FeatureSet
from memetrm.training.engine import TrainConfig, fit, resolve_train_config


def align_train_config(**overrides: Any) -> TrainConfig:
    """``TrainConfig`` defaults < alignment's (``ALIGN_TRAIN``) < ``overrides``."""
    return resolve_train_config(ALIGN_TRAIN, overrides)


def pair_tensors(fs: FeatureSet, cfg: AlignConfig,
                 device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (image, text) pooled features of a split, as fp32 on ``device``."""
    for f in (cfg.image_field, cfg.text_field):
        if f not in fs.tensors:
            raise ConfigError(f"features have no field {f!r} (have {fs.fields})")
    return (fs.tensors[cfg.image_field].float().to(device),
            fs.tensors[cfg.text_field].float().to(device))


@torch.no_grad()
def dev_score(model: AlignModel, dev: FeatureSet, device: torch.device | None = None) -> float:
    """Mean of image->text and text->image R@1/5/10: the model-selection criterion."""
    img, txt = pair_tensors(dev, model.cfg, device)
    m = retrieval_metrics(*model.retrieval_scores(model.encode_image(img), model.encode_text(txt)))
    recalls = [m[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in RECALL_KS]
    return sum(recalls) / len(recalls)


def train_alignment(train: FeatureSet, dev: FeatureSet | None, cfg: AlignConfig,
                    tcfg: TrainConfig | None = None, log: Any = None, device: str = "auto"
                    ) -> tuple[AlignModel, list[dict[str, float]]]:
    """Fit projections on frozen pooled features; keep the epoch best on dev mean recall."""
    tcfg = tcfg or align_train_config()
    pair_tensors(train, cfg)  # names a missing field before any work
    torch.manual_seed(tcfg.seed)
    model = AlignModel(cfg, train.tensors[cfg.image_field].shape[1],
                       train.tensors[cfg.text_field].shape[1])
    result = fit(model, train, dev, tcfg, score=dev_score, on_epoch=log, device=device)
    return result.head.eval().cpu(), result.history  # type: ignore[return-value]


def save_alignment(model: AlignModel, path: str | Path, extra_files: dict[str, bytes] | None = None,
                   **meta: Any) -> Path:
    """Projections + config (+ metrics, plots) in one atomic write."""
    config = {"align": dataclasses.asdict(model.cfg), "image_dim": model.image_dim,
              "text_dim": model.text_dim, **meta}
    return save_checkpoint(path, model, config, extra_files)


def load_alignment(path: str | Path) -> tuple[AlignModel, dict[str, Any]]:
    """Rebuild projections from JSON config + safetensors (no pickle)."""
    config = load_config(path)
    if "align" not in config:
        raise ConfigError(f"{path} is not an alignment run (its config.json has no 'align')")
    model = AlignModel(AlignConfig(**config["align"]), config["image_dim"], config["text_dim"])
    model.load_state_dict(load_weights(path))
    return model.eval(), config
