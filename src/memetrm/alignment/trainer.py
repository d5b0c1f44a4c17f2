"""Train alignment projections on cached pooled features; save/load as safetensors + JSON."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from memetrm.alignment.metrics import retrieval_metrics
from memetrm.alignment.objectives import AlignConfig, AlignModel
from memetrm.errors import ConfigError
from memetrm.features import FeatureSet
from memetrm.utils import atomic_write_dir, seed_everything

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "projections.safetensors"


def pair_tensors(fs: FeatureSet, cfg: AlignConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The (image, text) pooled features of a split, as fp32."""
    for f in (cfg.image_field, cfg.text_field):
        if f not in fs.tensors:
            raise ConfigError(f"features have no field {f!r} (have {fs.fields})")
    return fs.tensors[cfg.image_field].float(), fs.tensors[cfg.text_field].float()


@torch.no_grad()
def dev_score(model: AlignModel, img: torch.Tensor, txt: torch.Tensor) -> float:
    """Mean of image->text and text->image R@1/5/10: the model-selection criterion."""
    model.eval()
    m = retrieval_metrics(*model.retrieval_scores(model.encode_image(img), model.encode_text(txt)))
    return sum(v for k, v in m.items() if k.endswith(("@1", "@5", "@10"))) / 6


def train_alignment(train: FeatureSet, dev: FeatureSet | None, cfg: AlignConfig,
                    log: Any = None) -> tuple[AlignModel, list[dict[str, float]]]:
    """AdamW + cosine schedule over shuffled pair batches; keeps the epoch best on dev retrieval.

    Weight decay applies to projection matrices only: decaying the log-temperature, log-curvature
    or log-scales would pull them toward 1 for no reason.
    """
    seed_everything(cfg.seed)
    img, txt = pair_tensors(train, cfg)
    model = AlignModel(cfg, img.shape[1], txt.shape[1])
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2 and p.requires_grad]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    n = len(img)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = n // bs  # drop the ragged tail: a 1-pair batch has no negatives
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.epochs * steps_per_epoch))
    gen = torch.Generator().manual_seed(cfg.seed)
    dev_pairs = pair_tensors(dev, cfg) if dev is not None else None
    history: list[dict[str, float]] = []
    best, best_state = float("-inf"), None
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen)
        totals: dict[str, float] = {}
        for s in range(steps_per_epoch):
            idx = order[s * bs:(s + 1) * bs]
            loss, parts = model.loss(model.encode_image(img[idx]), model.encode_text(txt[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            model.clamp_()
            for k, v in {"loss": loss.item(), **parts}.items():
                totals[k] = totals.get(k, 0.0) + v / steps_per_epoch
        row = {"epoch": epoch, **totals, "logit_scale": model.log_logit_scale.exp().item()}
        if model.hyperbolic:
            row["curv"] = model.curv.item()
        if dev_pairs is not None:
            row["dev_mean_recall"] = dev_score(model, *dev_pairs)
            if row["dev_mean_recall"] > best:
                best, best_state = row["dev_mean_recall"], copy.deepcopy(model.state_dict())
        history.append(row)
        if log:
            log(row)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history


def alignment_config(model: AlignModel, **meta: Any) -> dict[str, Any]:
    """Everything ``load_alignment`` needs to rebuild ``model``, plus run metadata."""
    return {"align": dataclasses.asdict(model.cfg), "image_dim": model.image_dim,
            "text_dim": model.text_dim, **meta}


def write_alignment_dir(model: AlignModel, path: Path, config: dict[str, Any],
                        extra_files: dict[str, bytes] | None = None) -> Path:
    """Projections + config (+ metrics, plots) in one atomic write: a crash leaves no half-run."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_write_dir(Path(path)) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
    return Path(path)


def load_alignment(path: str | Path) -> tuple[AlignModel, dict[str, Any]]:
    """Rebuild projections from JSON config + safetensors (no pickle)."""
    cfg_path = Path(path) / CONFIG_NAME
    if not cfg_path.is_file() or not (Path(path) / WEIGHTS_NAME).is_file():
        raise ConfigError(f"{path} is not an alignment run (no {CONFIG_NAME} + {WEIGHTS_NAME})")
    config = json.loads(cfg_path.read_text())
    model = AlignModel(AlignConfig(**config["align"]), config["image_dim"], config["text_dim"])
    model.load_state_dict(load_file(str(Path(path) / WEIGHTS_NAME)))
    return model.eval(), config
